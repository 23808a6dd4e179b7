"""Run the orders server: check the bind address and TLS files, listen, hand the socket to uvicorn.

The socket is bound here, before uvicorn starts, so a busy port or a bad address is one clear line (uvicorn
would log it and exit 1). Plain HTTP is refused on anything but loopback unless the admin says a TLS proxy is in
front (--allow-http): the messages are signed, but check-ins carry the laptop's posture.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from pathlib import Path

from ..errors import DeskguardError, UsageError
from ..store import Store
from . import settings
from .httpproto import protocol_class
from .server import ServeConfig

DEFAULT_BIND = "127.0.0.1:8443"
# Connections beyond this get 503 from uvicorn at once instead of queueing (a flood of slow clients).
LIMIT_CONCURRENCY = 2000


def parse_bind(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        port_i = int(port)
    except ValueError:
        raise UsageError(f"--bind {text!r}: give ADDRESS:PORT, e.g. 127.0.0.1:8443 or [::]:8443") from None
    if not sep or not 0 < port_i < 65536:
        raise UsageError(f"--bind {text!r}: the port must be 1..65535")
    return host, port_i


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise DeskguardError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def log_config() -> dict:
    """uvicorn's logging, plus the deskguard.serve logger on the same handler (without it, its lines went
    nowhere: Python's last-resort handler shows WARNING and above only), and uvicorn's own unlimited line for
    an unparsable request dropped (the refusal log says it, rate-limited)."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    conf = copy.deepcopy(LOGGING_CONFIG)
    conf["filters"] = {"refusals": {"()": "deskguard.orders.refusals.DropUvicornRefusals"}}
    conf["loggers"]["uvicorn.error"]["filters"] = ["refusals"]
    conf["loggers"]["deskguard"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return conf


def check_tls_pair(certfile: Path, keyfile: Path) -> None:
    """Load the pair as uvicorn will, here, so a file that is no PEM certificate or key (or a key of another
    certificate) is one line instead of an ssl.SSLError traceback from the server's start."""
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(certfile), str(keyfile))
    except ssl.SSLError as exc:
        raise UsageError(f"--tls-cert {certfile} / --tls-key {keyfile}: not a PEM certificate and its private "
                         f"key (OpenSSL: {exc.reason or 'cannot load them'})") from None
    except OSError as exc:
        raise UsageError(f"--tls-cert {certfile} / --tls-key {keyfile}: {exc.strerror or exc}") from None


def run(site: Path, bind: str = DEFAULT_BIND, *, certfile: Path | None = None, keyfile: Path | None = None,
        allow_http: bool = False, workers: int = 1, access_log: bool = False, on_ready=None) -> None:
    import uvicorn

    host, port = parse_bind(bind)
    if bool(certfile) != bool(keyfile):
        raise UsageError("TLS needs both --tls-cert and --tls-key")
    for f in (certfile, keyfile):
        if f and not Path(f).is_file():
            raise UsageError(f"TLS file {f} does not exist")
    if certfile:
        check_tls_pair(certfile, keyfile)
    if not certfile and not allow_http and not ipaddress.ip_address(host).is_loopback:
        raise UsageError(f"plain HTTP on {host} would carry laptop posture in clear text: give --tls-cert and "
                         "--tls-key, or --allow-http when a TLS proxy is in front")
    conf = settings.load(site)
    Store.open(site).close()  # a missing or broken store fails here, once, not in every worker
    serve_conf = ServeConfig(Path(site), conf.orders_dir, conf.done_grace.total_seconds() / 3600)
    common = dict(http=protocol_class(), lifespan="on", access_log=access_log, log_level="info",
                  log_config=log_config(),
                  limit_concurrency=LIMIT_CONCURRENCY, ssl_certfile=str(certfile) if certfile else None,
                  ssl_keyfile=str(keyfile) if keyfile else None, server_header=False, proxy_headers=False)
    sock = listen(host, port)
    if workers > 1:
        from uvicorn.supervisors import Multiprocess

        os.environ["DESKGUARD_SERVE_CONFIG"] = json.dumps(
            {"site": str(site), "orders_dir": str(conf.orders_dir), "done_grace_hours": serve_conf.done_grace_hours})
        config = uvicorn.Config("deskguard.orders.server:app_from_env", factory=True, workers=workers, **common)
        Multiprocess(config, sockets=[sock]).run()
        return
    from .server import create_app

    config = uvicorn.Config(create_app(serve_conf), **common)
    server = uvicorn.Server(config)
    if on_ready:
        on_ready(server)
    server.run(sockets=[sock])
