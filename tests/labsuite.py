"""The Debian release a test session's lab laptops run: DESKGUARD_LAB_SUITE, else the lab's default (CI runs the
container tier once per release: .ci/run, docs/lab-vm.md "What runs on which release")."""

from __future__ import annotations

import os


def lab_suite() -> str:
    from deskguard.lab.image import DEFAULT_SUITE

    return os.environ.get("DESKGUARD_LAB_SUITE") or DEFAULT_SUITE
