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
