# -*- coding: utf-8 -*-
"""Is a reboot pending after updates? Read-only; one answer for Debian/Ubuntu and Fedora/RHEL."""

from __future__ import annotations

import os
import subprocess

DEBIAN_FLAG = "/var/run/reboot-required"


def reboot_pending(flag=DEBIAN_FLAG, needs_restarting="needs-restarting"):
    """Returns (pending: bool | None, packages: list[str]); None when this system cannot tell."""
    if os.path.exists(flag):
        try:
            with open(flag + ".pkgs") as fh:
                packages = sorted({line.strip() for line in fh if line.strip()})
        except OSError:
            packages = []
        return True, packages
    if os.path.isdir("/etc/apt"):
        return False, []
    try:
        # dnf-utils: exit 1 means a reboot is needed, 0 means not.
        rc = subprocess.run([needs_restarting, "-r"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    except OSError:
        return None, []
    return (rc == 1), []
