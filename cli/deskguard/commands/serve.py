"""`deskguard serve`: the server laptops' agents fetch orders from and post acknowledgements and check-ins to."""

from __future__ import annotations

from pathlib import Path

import click

from .common import site_option


@click.command()
@site_option
@click.option("--bind", default="127.0.0.1:8443", show_default=True, help="ADDRESS:PORT to listen on.")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PEM certificate (chain) for HTTPS.")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PEM private key of --tls-cert.")
@click.option("--allow-http", is_flag=True,
              help="LAB ONLY, or behind a TLS-terminating proxy: plain HTTP on a non-loopback address.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Server processes (one per CPU core for many laptops).")
@click.option("--access-log", is_flag=True, help="Log every request (off: refusals are logged anyway).")
def serve(site, bind, tls_cert, tls_key, allow_http, workers, access_log):
    """Serve POST /orders/{device_uuid} (signed fetches), POST /v1/ack, POST /v1/checkin, POST /v1/enrol and
    GET /healthz (docs/wipe.md, docs/enrolment.md)."""
    from ..orders import serving
    from ..site import site_dir

    serving.run(site_dir(site), bind, certfile=tls_cert, keyfile=tls_key, allow_http=allow_http, workers=workers,
                access_log=access_log)
