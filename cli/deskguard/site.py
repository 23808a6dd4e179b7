"""Where a deskguard site lives: the checkout itself by default, or DESKGUARD_SITE / --site."""

from __future__ import annotations

import os
from pathlib import Path

# The kit's own content (playbooks, roles, plugins, ansible.cfg) sits two levels above this file in a
# checkout or an editable install.
KIT_ROOT = Path(__file__).resolve().parents[2]


def site_dir(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit).resolve()
    env = os.environ.get("DESKGUARD_SITE")
    return Path(env).resolve() if env else KIT_ROOT


def ansible_cfg(site: Path) -> Path:
    own = site / "ansible.cfg"
    return own if own.exists() else KIT_ROOT / "ansible.cfg"
