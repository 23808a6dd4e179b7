"""Tests that leave their laptops changed beyond what the other tests expect run last in the container tier:
the desktop controls (lab-ct2 onboarded with its own policy, browsers and PAM tools installed), then enrolment
(a "home router" firewall, the enrolment package, a tunnel into its own pool); only the demo test follows, and
that one starts the lab from nothing (as a new user's first `deskguard demo` does), bringing down the lab the
other container tests share; the lab-down test comes last of all. (Session 8's CI: with the desktop file in
alphabetical order the onboarding file after it found lab-ct2 already configured, and the enrolment test, moved
behind the lab-down test, found no lab bridge.)"""

from __future__ import annotations

import pytest
from labsuite import lab_suite

# tests/fleet/test_lab_down.py (also in the container tier) takes the shared lab down: it stays the very last.
LAST = ("test_desktop_controls.py", "test_enrolment_container.py", "test_demo.py", "test_lab_down.py")


def pytest_collection_modifyitems(config, items):
    tail = [item for name in LAST for item in items if item.path.name == name]
    if tail:
        items[:] = [item for item in items if item.path.name not in LAST] + tail


@pytest.fixture(scope="module")
def fresh_containers(lab_session, lab_inventory_dir, lab_container):
    """The two laptop containers started anew from the lab's rootfs (their overlays removed): for the files that
    need laptops nobody configured before them (the desktop controls and enrolment run after tests that leave
    lab-ct1 with a VPN and a kill switch and lab-ct2 onboarded with the example policy by test_onboard.py; the
    USB test gives lab-ct2's usbguard and apt sources back since session 9, it once left them gone/misplaced).
    Returns the lab's new state."""
    names = ["lab-ct1", "lab-ct2"]
    lab_session.down(lab_inventory_dir, names=names, log=lambda m: None)
    return lab_session.up(containers=2, inventory_dir=lab_inventory_dir, log=lambda m: None,
                          suite=lab_suite())
