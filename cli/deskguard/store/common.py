"""What every part of the store shares (core.py and its mixins): its errors, who is acting, and the check of a
free-text field. Its own module so that the mixins do not import core.py, which is built from them."""

from __future__ import annotations

import getpass
import os

from ..errors import DeskguardError, UsageError


class StoreError(DeskguardError):
    """The store cannot do it (missing, locked, broken): exit 4."""


class DeviceExists(UsageError):
    """A live device already has this hostname: exit 2."""


class DeviceNotFound(UsageError):
    """No live device has this hostname: exit 2."""


def default_actor() -> str:
    """The OS user running deskguard; under sudo, the user who ran sudo is named too."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (containers): the uid still says who
        user = f"uid:{os.getuid()}"
    sudo_user = os.environ.get("SUDO_USER")
    if sudo_user and sudo_user != user:
        return f"{sudo_user} (sudo {user})"
    return user


def _clean(value: str | None, what: str, *, required: bool = True, max_len: int = 255) -> str | None:
    if value is None or value == "":
        if required:
            raise UsageError(f"{what} is required")
        return None
    if not isinstance(value, str) or len(value) > max_len or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise UsageError(f"invalid {what} {str(value)[:80]!r}: printable text of at most {max_len} characters")
    return value
