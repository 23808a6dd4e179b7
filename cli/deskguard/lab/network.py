"""The lab's isolated bridge. (To be implemented.)"""

from __future__ import annotations


def ensure_bridge(state):
    raise NotImplementedError


def remove_bridge(state):
    raise NotImplementedError
