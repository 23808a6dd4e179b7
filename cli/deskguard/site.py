"""Where a deskguard site lives: the checkout itself by default, or DESKGUARD_SITE / --site."""

from __future__ import annotations

import importlib.util
import os
import sys
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


def module_utils(name: str):
    """A kit module_utils file (plugins/module_utils/NAME.py) imported on the controller: the laptop side and the
    controller share one definition (a device id, an order's signature) instead of two copies."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, KIT_ROOT / "plugins" / "module_utils" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
