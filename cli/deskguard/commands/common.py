"""What several commands share: the --site option and opening the site's store."""

from __future__ import annotations

import click

site_option = click.option("--site", type=click.Path(file_okay=False), default=None,
                           help="Site directory (default: $DESKGUARD_SITE, else the kit checkout).")


def open_store(site):
    """(site root, its Store) for a --site value."""
    from ..site import site_dir
    from ..store import Store

    root = site_dir(site)
    return root, Store.open(root)
