"""`deskguard onboard --os windows` end to end against the loopback responder: the CLI as an admin runs it,
the one-round-trip preflight, the device in the store and the inventory, and playbooks/onboard.yml through
Ansible's winrm connection. The responder speaks Basic over HTTP only, hence --insecure-lab-winrm here; the
secure settings are checked in test_connection_settings.py and test_preflight_winrm.py."""

from __future__ import annotations

import json

import pytest
from deskguard.windows import vault
from deskguard.windows.preflight import LAB_WARNING, script_to_send
from deskguard.store import Store
from preflight_fixtures import HOME, PRO, host
from responder import Responder
from sitetools import run_deskguard

pytestmark = pytest.mark.windows
PASSWORD = "loopback-only"  # the responder's Basic password
HOST = "win-0042"

# Answers of the kit's own modules (their documented return values, docs/windows.md), not of Windows.
FACTS = {"changed": False, "ansible_facts": {"os_family": "Windows", "system": "Win32NT"}}
DECRYPTED = {"changed": False, "edition": {"name": "Professional", "edition_id": "Professional", "build": "22631",
                                           "bitlocker_capable": True},
             "tpm": {"present": True, "ready": True}, "findings": [],
             "volumes": [{"mount_point": "C:", "volume_type": "OperatingSystem", "protection_status": "Off",
                          "volume_status": "FullyDecrypted", "protectors": []}]}
PROTECTOR = "{6A1B2C3D-0000-4000-8000-00000000F00D}"


def onboard(site, r, tmp_path, *extra):
    secret = tmp_path / "winrm.pass"
    secret.write_text(PASSWORD + "\n")
    return run_deskguard(site, "onboard", HOST, "--os", "windows", "--address", "127.0.0.1", "--port", str(r.port),
                         "--user", "tanaka", "--winrm-user", "deskguard-test", "--winrm-password-file", str(secret),
                         "--insecure-lab-winrm", "--yes", *extra, timeout=600)


def site_bytes(site) -> dict:
    files = [p for p in (site / "inventory").rglob("*") if p.is_file() and p.name != ".lock"]
    files += [p for p in (site / ".deskguard").rglob("*") if p.is_file()]
    return {p: p.read_bytes() for p in files}


def test_onboard_walks_preflight_store_inventory_and_the_playbook(make_site, tmp_path):
    site = make_site()
    with Responder(script_handler=host(PRO)) as r:
        r.answers.update({"setup": FACTS, ("deskguard_bitlocker", "inventory"): DECRYPTED,
                          ("deskguard_bitlocker", "add_recovery"): {"changed": True, "protector_id": PROTECTOR,
                                                                    "verified": True, "mount_point": "C:"},
                          ("deskguard_bitlocker", "enable"): {"changed": True,
                                                              "volume_status": "EncryptionInProgress"},
                          # win_reg_stat of a key that is not there yet (ansible.windows docs: exists: false).
                          "win_reg_stat": {"changed": False, "exists": False},
                          # A change makes the play prove a new management connection (the lockout guard).
                          "win_regedit": lambda call: {"changed": call.args.get("name") == "InactivityTimeoutSecs"}})
        proc = onboard(site, r, tmp_path, "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert LAB_WARNING in " ".join(proc.stderr.split())

    # The preflight was one round trip with the shipped script, before any module ran.
    assert r.scripts[0] == script_to_send()
    assert r.actions[:5] == ["Create", "Command", "Receive", "Signal", "Delete"]
    modules = [(c.short, c.args.get("state")) for c in r.calls]
    assert modules[0] == ("setup", None)
    assert [m for m in modules if m[0] == "deskguard_bitlocker"] == [
        ("deskguard_bitlocker", "inventory"), ("deskguard_bitlocker", "add_recovery"), ("deskguard_bitlocker", "enable")]
    assert ("win_ping", None) in modules  # the guard after LCK-001 changed something, over WinRM

    out = json.loads(proc.stdout)
    assert out["device"]["os"] == "windows" and out["device"]["edition"] == "Professional"
    assert {row["control"] for row in out["controls"]} >= {"ENC-001", "LCK-001"}

    with Store.open(site) as store:
        device = store.get_device(HOST)
        audit = store.list_audit(target=HOST)
    assert (device.os, device.port, device.ssh_user, device.os_version, device.state) == (
        "windows", r.port, "deskguard-test", "22631 (23H2)", "onboarded")
    assert any(a.action == "device.onboard" and json.loads(a.detail or "{}").get("winrm") == "insecure-lab"
               for a in audit)

    from ruamel.yaml import YAML

    hv = YAML(typ="rt").load((site / "inventory" / "host_vars" / f"{HOST}.yml").read_text())
    assert hv["ansible_connection"] == "winrm" and hv["ansible_winrm_scheme"] == "http"  # the lab flag, recorded
    assert vault.decrypt(site, hv["ansible_password"]) == PASSWORD
    # The password: ciphertext in host_vars, nowhere else the kit writes, and not in its output.
    for path, data in site_bytes(site).items():
        assert PASSWORD.encode() not in data, path
    assert PASSWORD not in proc.stdout and PASSWORD not in proc.stderr


def test_a_home_edition_is_refused_in_one_line_and_nothing_is_written(make_site, tmp_path):
    site = make_site()
    before = site_bytes(site)
    with Responder(script_handler=host(HOME)) as r:
        proc = onboard(site, r, tmp_path)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]  # the lab warning comes first, then the one-line error
    assert last.startswith("deskguard: ") and "Windows Home" in last and "Pro, Enterprise or Education" in last
    assert "Traceback" not in proc.stderr and r.calls == []
    assert site_bytes(site) == before


def test_wrong_credentials_are_refused_in_one_line_and_nothing_is_written(make_site, tmp_path):
    site = make_site()
    before = site_bytes(site)
    with Responder(script_handler=host(PRO), password="another-password") as r:
        proc = onboard(site, r, tmp_path)
    assert proc.returncode == 4, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "rejected the credentials of deskguard-test (HTTP 401)" in last and "Traceback" not in proc.stderr
    assert site_bytes(site) == before


def test_check_mode_runs_the_play_and_records_nothing(make_site, tmp_path):
    site = make_site()
    inventory_before = {p: b for p, b in site_bytes(site).items() if "inventory" in p.parts}
    with Responder(script_handler=host(PRO)) as r:
        r.answers.update({"setup": FACTS, ("deskguard_bitlocker", "inventory"): DECRYPTED,
                          "win_reg_stat": {"changed": False, "exists": False}})
        proc = onboard(site, r, tmp_path, "--check", "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    # Only read-only probes run for real in check mode (`check_mode: false` by design, DESIGN rule 8).
    real = sorted({(c.short, c.args.get("state")) for c in r.calls if not c.check_mode})
    assert r.calls and real == [("deskguard_bitlocker", "inventory")], real
    with Store.open(site) as store:
        assert store.get_device(HOST) is None
    assert {p: b for p, b in site_bytes(site).items() if "inventory" in p.parts} == inventory_before
