"""`deskguard init`: the site's state directory, store, keys and an example policy (idempotent)."""

from __future__ import annotations

import json
import sys

import click


def _read_passphrase_file(path: str) -> bytes:
    from ..errors import UsageError

    try:
        raw = open(path, "rb").read()
    except OSError as exc:
        raise UsageError(f"cannot read the passphrase file {path}: {exc.strerror}") from None
    if raw.endswith(b"\r\n"):
        raw = raw[:-2]
    elif raw.endswith(b"\n"):
        raw = raw[:-1]
    return raw


def _ask_passphrase() -> bytes:
    from ..errors import UsageError

    if not sys.stdin.isatty():
        raise UsageError("the escrow key needs an officer passphrase: give --officer-passphrase-file FILE "
                         "(there is no terminal to ask on)")
    click.echo("The escrow private key is encrypted with a passphrase the security officer keeps.", err=True)
    return click.prompt("Officer key passphrase", hide_input=True, confirmation_prompt=True,
                        err=True).encode("utf-8")


@click.command()
@click.option("--site", type=click.Path(file_okay=False), default=None,
              help="Site directory (default: $DESKGUARD_SITE, else the kit checkout).")
@click.option("--officer-passphrase-file", type=click.Path(dir_okay=False), default=None,
              help="File holding the escrow officer key passphrase (else asked twice, hidden).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (the officer-key notice stays on stderr).")
def init(site, officer_passphrase_file, as_json):
    """Create the site's store, keys and example policy; keep whatever already exists."""
    from ..recovery import keys
    from ..site.init import init_site, needs_passphrase
    from ..site import site_dir
    from ..term import color

    root = site_dir(site)
    # Ask for (and check) the passphrase before creating anything, and only if the escrow key is new.
    passphrase = None
    if needs_passphrase(root):
        raw = _read_passphrase_file(officer_passphrase_file) if officer_passphrase_file else _ask_passphrase()
        passphrase = keys.check_passphrase(raw)
    result = init_site(root, passphrase)
    done, created = result.done, result.created

    if as_json:
        click.echo(json.dumps({"site": str(root), "items": [{"status": s, "path": p, "note": n} for s, p, n in done]},
                              indent=2))
    else:
        for status, path, note in done:
            click.echo(f"{status:8} {path} ({note})")
    if result.officer_key is not None:
        click.secho(keys.OFFICER_KEY_NOTICE.format(path=result.officer_key, pub=result.escrow_public),
                    err=True, fg="red", bold=True, color=color())
    if not as_json:
        click.echo(f"init: site {root} ready ({len(created)} created, {len(done) - len(created)} kept)")
