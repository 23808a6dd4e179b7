"""Where a deskguard site lives: the checkout itself by default, or DESKGUARD_SITE / --site."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

# The kit's own content (playbooks, roles, plugins, ansible.cfg) sits three levels above this file in a
# checkout or an editable install.
KIT_ROOT = Path(__file__).resolve().parents[3]


def site_dir(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit).resolve()
    env = os.environ.get("DESKGUARD_SITE")
    return Path(env).resolve() if env else KIT_ROOT


def ansible_cfg(site: Path) -> Path:
    own = site / "ansible.cfg"
    return own if own.exists() else KIT_ROOT / "ansible.cfg"


def module_utils(name: str):
    """A kit module_utils file (plugins/module_utils/NAME.py) imported on the controller: the laptop side and the
    controller share one definition (a device id, an order's signature) instead of two copies. The directory
    goes on sys.path because those files import each other by their bare names outside Ansible; every name
    there starts with deskguard_, so nothing else is shadowed."""
    path = str(KIT_ROOT / "plugins" / "module_utils")
    if path not in sys.path:
        sys.path.append(path)
    return importlib.import_module(name)
