"""`deskguard onboard` refusals that need no laptop: every one is one line, a documented exit code, and leaves
the store and the inventory exactly as they were (property-based over the arguments)."""

from __future__ import annotations

import re
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.unit

def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deskguard(site, *args):
    from sitetools import run_deskguard

    return run_deskguard(site, *args, timeout=120)


@pytest.fixture(scope="module")
def site(make_site):
    return make_site()


def state(site) -> tuple:
    """The inventory's bytes and every device the store holds (removed ones too). The store is read in-process:
    a `devices list` subprocess before and after each of the fuzz test's examples was most of its 150 s."""
    from deskguard.store import Store

    inv = site / "inventory"
    files = sorted(p for p in inv.rglob("*") if p.is_file() and p.name != ".lock")
    with Store.open(site) as store:
        devices = tuple(repr(d) for d in store.list_devices(include_removed=True))
    return tuple(p.read_bytes() for p in files) + devices


def assert_refused(proc, codes):
    assert proc.returncode in codes, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("deskguard: ") and proc.stderr.count("\n") == 1, proc.stderr


def test_unreachable_laptop_writes_nothing(site):
    before = state(site)
    proc = deskguard(site, "onboard", "lap-01", "--os", "debian", "--address", "127.0.0.1",
                     "--port", str(closed_port()), "--user", "tanaka", "--yes")
    assert_refused(proc, {3})
    assert "not reachable" in proc.stderr
    assert state(site) == before


def test_hand_broken_inventory_is_named_and_kept(site):
    hosts = site / "inventory" / "hosts.yml"
    good = hosts.read_bytes()
    try:
        hosts.write_text("all:\n  children:\n    laptops: [unclosed\n")
        broken = hosts.read_bytes()
        proc = deskguard(site, "onboard", "lap-01", "--os", "debian", "--address", "127.0.0.1",
                         "--port", str(closed_port()), "--user", "tanaka", "--yes")
        assert_refused(proc, {2, 4})
        assert re.search(r"inventory/hosts\.yml:\d+: ", proc.stderr), proc.stderr  # file:line
        assert hosts.read_bytes() == broken
    finally:
        hosts.write_bytes(good)


def test_windows_without_its_account_or_ca_bundle_is_a_usage_error(site, tmp_path):
    before = state(site)
    proc = deskguard(site, "onboard", "win-01", "--os", "windows", "--address", "127.0.0.1", "--user", "tanaka")
    assert_refused(proc, {2})
    assert "--winrm-user is required" in proc.stderr
    secret = tmp_path / "pw"
    secret.write_text("s3cret-Passw0rd\n")
    proc = deskguard(site, "onboard", "win-01", "--os", "windows", "--address", "127.0.0.1", "--user", "tanaka",
                     "--winrm-user", "dgadmin", "--winrm-password-file", str(secret), "--yes")
    assert_refused(proc, {2})
    assert "--winrm-ca-bundle FILE is required" in proc.stderr and "s3cret" not in proc.stderr
    assert state(site) == before


def test_winrm_options_on_linux_are_refused(site):
    proc = deskguard(site, "onboard", "lap-01", "--os", "debian", "--address", "127.0.0.1", "--user", "tanaka",
                     "--insecure-lab-winrm", "--yes")
    assert_refused(proc, {2})
    assert "for --os windows only" in proc.stderr


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(host=st.one_of(text, st.sampled_from(["lap-01", "a b", "x;id", "-rf", "LAP_01", "é"])),
       os_name=st.one_of(st.sampled_from(["debian", "ubuntu", "windows", "DEBIAN", "arch", ""]), text),
       user=st.one_of(st.sampled_from(["tanaka", "", "Tan aka", "root;id"]), text),
       port=st.one_of(st.integers(-5, 70000).map(str), text),
       address=st.sampled_from(["127.0.0.1", "", "bad addr", "1.2.3.4;id", "$(id)"]))
def test_no_argument_gives_a_traceback_or_changes_anything(site, host, os_name, user, port, address):
    # isdecimal, not isdigit: "¹" is a digit that int() refuses (hypothesis found it).
    if address == "127.0.0.1" and port.isdecimal() and 1 <= int(port) <= 65535:
        port = str(closed_port())  # the only address that can pass validation never answers
    before = state(site)
    proc = deskguard(site, "onboard", host, "--os", os_name, "--address", address, "--user", user,
                     "--port", port, "--yes")
    assert_refused(proc, {2, 3, 4})
    assert state(site) == before
