"""How much the CLI says and whether in colour: set once by the global -v/-q options, read by the progress
display, the runner and the few coloured warnings. rich honours NO_COLOR by itself; click does not, so its
coloured output asks `color()`."""

from __future__ import annotations

import os

_verbosity = 0  # -1 quiet, 0 normal, 1.. verbose (also Ansible's -v level)


def set_verbosity(verbose: int, quiet: bool) -> None:
    global _verbosity
    _verbosity = -1 if quiet else verbose


def verbosity() -> int:
    return _verbosity


def quiet() -> bool:
    return _verbosity < 0


def color() -> bool | None:
    """click's `color=` argument: never with NO_COLOR (https://no-color.org), else click decides (a terminal)."""
    return False if os.environ.get("NO_COLOR") else None
