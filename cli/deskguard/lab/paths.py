"""Where the lab keeps its cache (images, keys) and its runtime state (PIDs, overlays, sockets)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Built images, keyed by a hash of their recipe; survives `lab down` and re-clones."""
    env = os.environ.get("DESKGUARD_LAB_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("deskguard")) / "lab"


DEFAULT_RUNTIME_DIR = Path("/var/tmp/deskguard-lab")


def runtime_dir() -> Path:
    """The lab's own folder (state, overlays, sockets). Another DESKGUARD_LAB_RUN is another lab, side by side:
    its machine-wide names and addresses follow from this folder (identity.py)."""
    return Path(os.environ.get("DESKGUARD_LAB_RUN") or DEFAULT_RUNTIME_DIR)


def state_file() -> Path:
    return runtime_dir() / "state.json"
