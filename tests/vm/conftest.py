"""The VM tier's shared onboarding: one fresh laptop VM onboarded once with the example policy, used by
test_onboard_vm.py (which proves that onboarding: check mode, apply, converge, comply, recovery keys) and then by
test_usb_vm.py (USB modes on the onboarded laptop), instead of a second cold onboarding of a second fresh VM.

An onboarding costs minutes under TCG (docs/lab-vm.md, "The VM tier's boot plan"); a snapshot restore seconds.
Whichever module runs first onboards; a module run on its own still gets a fresh, onboarded laptop."""

from __future__ import annotations

import pytest

from deskguard.lab.state import LabState

NAME, HOST = "lab-vm1", "lap-vm1"


class SharedOnboarding:
    """A fresh laptop and its site; `apply()` runs `deskguard onboard` the first time only and keeps its output."""

    def __init__(self, site, laptop):
        self.site, self.laptop = site, laptop
        self.applied: tuple | None = None    # (process, JSON summary) of the one real onboarding

    def fresh(self) -> bool:
        return self.applied is None

    def apply(self, *extra):
        from sitetools import onboard_lab

        if self.applied is None:
            self.applied = onboard_lab(self.site, HOST, self.laptop, *extra)
        return self.applied


@pytest.fixture(scope="session")
def shared_onboarding(lab_session, lab_inventory_dir, lab_laptop, make_site):
    """The laptop fresh from the booted snapshot (an earlier module may have changed the session's VM)."""
    lab_session.down(lab_inventory_dir, names=[NAME], log=lambda m: None)
    lab_session.up(laptops=1, inventory_dir=lab_inventory_dir, log=lambda m: None)
    # Under qemu's user networking SSH arrives from 10.0.2.2.
    return SharedOnboarding(make_site(management="10.0.2.0/24"), LabState.load().hosts[NAME])


def pytest_collection_modifyitems(config, items):
    """test_usb_vm.py runs right after test_onboard_vm.py's onboarding test, before that module's comply and
    recovery-key tests: those leave the laptop with a keyslot changed behind the kit's back (ENC-002 would then
    escrow a fresh key, and the USB module's converged onboarding expects 0 changes). Nothing else moves."""
    first = [i for i in items if i.nodeid.endswith("test_onboard_vm.py::test_check_apply_verify_converge")]
    usb = [i for i in items if "test_usb_vm.py::" in i.nodeid]
    if not first or not usb:
        return
    rest = [i for i in items if i not in usb]
    at = rest.index(first[0]) + 1
    items[:] = rest[:at] + usb + rest[at:]
