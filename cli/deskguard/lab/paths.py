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


def runtime_dir() -> Path:
    """One lab per machine: namespaces and bridges are machine-wide, so its state is too."""
    return Path(os.environ.get("DESKGUARD_LAB_RUN", "/var/tmp/deskguard-lab"))


def state_file() -> Path:
    return runtime_dir() / "state.json"
