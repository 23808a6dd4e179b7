"""What several commands share: the --site option and opening the site's store."""

from __future__ import annotations

import datetime as dt
import re

import click

site_option = click.option("--site", type=click.Path(file_okay=False), default=None,
                           help="Site directory (default: $DESKGUARD_SITE, else the kit checkout).")


def open_store(site):
    """(site root, its Store) for a --site value."""
    from ..site import site_dir
    from ..store import Store

    root = site_dir(site)
    return root, Store.open(root)


def confirm_host(hostname: str, yes: bool, confirm: str | None, what: str) -> None:
    """A destructive action names its host twice: typed at the prompt, or `--yes --confirm HOST`.
    ``what`` completes "Type HOST to …" and "nothing …" (e.g. "wipe it" / "wiped")."""
    from ..errors import UsageError

    if yes:
        if confirm != hostname:
            raise UsageError(f"--yes needs --confirm {hostname}; nothing {what[1]}")
        return
    typed = click.prompt(f"Type {hostname} to {what[0]}", err=True, default="", show_default=False)
    if typed.strip().lower() != hostname:
        raise UsageError(f"the name typed does not match {hostname!r}; nothing {what[1]}")


DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> dt.timedelta | None:
    """An age or a period written 30s, 90m, 12h or 7d; None if TEXT is not one (the caller names its option)."""
    m = re.fullmatch(r"(\d{1,6})([smhd])", text.strip())
    return dt.timedelta(**{DURATION_UNITS[m.group(2)]: int(m.group(1))}) if m else None


def _writable_output(_ctx, param, value):
    """--output FILE: refused at once (exit 2) when it cannot be written, before anything runs (a nightly run over
    the fleet must not end in a report that cannot be written). A missing folder is made when writing, and said."""
    if value is None:
        return None
    import os
    import tempfile
    from pathlib import Path

    path = Path(value)
    if path.is_dir():
        raise click.BadParameter(f"{value} is a folder; give a file name", param=param)
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "not a folder")
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".deskguard-output.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise click.BadParameter(f"{value}: cannot write in {existing} ({exc.strerror or exc})", param=param) from None
    return path


def output_option(help_text: str):
    return click.option("--output", type=click.Path(dir_okay=False), default=None, callback=_writable_output,
                        help=help_text)


def write_output(path, text: str, what: str) -> None:
    """Write --output atomically and say where (on stderr: stdout may be a pipe of its own), and that its
    folder was made if it was."""
    stream_output(path, lambda out: out.write(text), what)


def stream_output(path, write, what: str) -> None:
    """`write(file)` puts a report into --output a piece at a time, atomically (the file appears whole or
    not at all), and says where like write_output; with no --output, straight onto stdout."""
    import sys
    from pathlib import Path

    from ..errors import DeskguardError
    from ..fsutil import atomic_text_stream

    if not path:
        write(sys.stdout)
        sys.stdout.flush()
        return
    path = Path(path).resolve()
    made = not path.parent.exists()
    try:
        with atomic_text_stream(path, mode=0o644) as out:
            write(out)
    except OSError as exc:
        raise DeskguardError(f"cannot write {path}: {exc.strerror or exc}; nothing written") from None
    click.echo(f"{what} written to {path}" + (f" (folder {path.parent} created)" if made else ""), err=True)
