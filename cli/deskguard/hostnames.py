"""The one rule for a laptop's host name, shared by the inventory (a file name, an Ansible host pattern) and the
store (a device's name)."""

from __future__ import annotations

import re

from .errors import UsageError

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def validate_hostname(name) -> str:
    """An RFC 1123 host name (labels of letters, digits, hyphens; 1-63 each; 253 in all), lower-cased.

    It becomes a file name and an Ansible host pattern, so nothing else is accepted: UsageError otherwise.
    """
    shown = repr(name if not isinstance(name, str) else name[:80])
    if not isinstance(name, str) or not name:
        raise UsageError(f"invalid hostname {shown}: give a name such as tanaka-laptop")
    lowered = name.lower()
    if len(lowered) > 253 or not lowered.isascii() or not all(_LABEL.fullmatch(x) for x in lowered.split(".")):
        raise UsageError(f"invalid hostname {shown}: use letters, digits and hyphens in dot-separated labels "
                         f"of 1-63 characters, not starting or ending with a hyphen (RFC 1123)")
    return lowered
