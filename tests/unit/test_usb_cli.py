"""`deskguard usb approve` through the real entry point, and the role's controller-side refusal of a bad
policy entry (a real ansible-playbook run that never reaches a laptop)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import clirun
import pytest

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
HV = dict(os="debian", address="10.8.0.42", port=22, ssh_user="tanaka", operator=None)


def deskguard(*args, site):
    env = {k: v for k, v in os.environ.items() if k not in ("DESKGUARD_DB_URL", "DESKGUARD_SITE")}
    env["DESKGUARD_SITE"] = str(site)
    return clirun.deskguard(*args, timeout=180, env=env)


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A site with the kit's policy file and one laptop."""
    monkeypatch.delenv("DESKGUARD_DB_URL", raising=False)
    from deskguard.site.inventory import ensure_hosts_file, register_and_add
    from deskguard.store import Store

    policy = tmp_path / "inventory" / "group_vars" / "all" / "policy.yml"
    policy.parent.mkdir(parents=True)
    policy.write_text((REPO / "inventory" / "group_vars" / "all" / "policy.yml").read_text())
    ensure_hosts_file(tmp_path)
    with Store.open(tmp_path, create=True) as store:
        register_and_add(tmp_path, store, "lap-0042", **HV)
    return tmp_path


def _audit(site):
    proc = deskguard("audit", "list", "--json", site=site)
    return [e for e in json.loads(proc.stdout) if e["action"] == "usb.approve"]


def test_approve_for_the_whole_policy_keeps_comments_and_is_audited(site):
    proc = deskguard("usb", "approve", "0951:1666:E0D55EA5", "--group", "all", "--reason", "company stick 17",
                     site=site)
    assert proc.returncode == 0, proc.stderr
    text = (site / "inventory" / "group_vars" / "all" / "policy.yml").read_text()
    assert "# USB-001..003 USB copy restrictions" in text and "# LCK-001 idle screen lock" in text
    import yaml

    entries = yaml.safe_load(text)["usb_control_approved_devices"]
    assert [(e["id"], e["serial"], e["reason"]) for e in entries] == [("0951:1666", "E0D55EA5", "company stick 17")]
    audit = _audit(site)
    assert len(audit) == 1 and audit[0]["target"] == "group:all"
    assert audit[0]["detail"]["device"] == "0951:1666:E0D55EA5" and audit[0]["detail"]["reason"] == "company stick 17"

    again = deskguard("usb", "approve", "0951:1666:E0D55EA5", "--group", "all", "--reason", "again", site=site)
    assert again.returncode == 0 and "already approved" in again.stdout
    assert len(_audit(site)) == 1


def test_approve_for_a_host_and_a_group_uses_their_own_lists(site):
    assert deskguard("usb", "approve", "46f4:0001:DGOK1", "--host", "lap-0042", "--reason", "lab",
                     site=site).returncode == 0
    assert deskguard("usb", "approve", "090C:1000", "--group", "sales", "--reason", "any of the model",
                     site=site).returncode == 0
    import yaml

    host = yaml.safe_load((site / "inventory" / "host_vars" / "lap-0042.yml").read_text())
    assert host["ansible_host"] == "10.8.0.42", "the host's connection variables were lost"
    assert host["usb_control_approved_devices_host"][0]["serial"] == "DGOK1"
    group = yaml.safe_load((site / "inventory" / "group_vars" / "sales" / "usb_control.yml").read_text())
    assert group["usb_control_approved_devices_group"][0] == {
        **group["usb_control_approved_devices_group"][0], "id": "090c:1000"}
    assert "serial" not in group["usb_control_approved_devices_group"][0]


@pytest.mark.parametrize("args, message", [
    (["usb", "approve", "951:1666", "--group", "all", "--reason", "x"], "4 hex digits"),
    (["usb", "approve", "0951:1666", "--group", "all", "--host", "lap-0042", "--reason", "x"], "exactly one of"),
    (["usb", "approve", "0951:1666", "--host", "nobody", "--reason", "x"], "not in the inventory"),
    (["usb", "approve", "0951:1666", "--group", "all", "--reason", "   "], "--reason is required"),
    (["usb", "list", "nobody"], "not in the inventory"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(site, args, message):
    before = (site / "inventory" / "group_vars" / "all" / "policy.yml").read_bytes()
    proc = deskguard(*args, site=site)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert (site / "inventory" / "group_vars" / "all" / "policy.yml").read_bytes() == before
    assert _audit(site) == []


def test_a_hand_broken_list_is_not_overwritten(site):
    policy = site / "inventory" / "group_vars" / "all" / "policy.yml"
    policy.write_text(policy.read_text().replace("usb_control_approved_devices: []",
                                                 'usb_control_approved_devices: [{id: "zz:1"}]'))
    proc = deskguard("usb", "approve", "0951:1666", "--group", "all", "--reason", "x", site=site)
    assert proc.returncode == 4 and "deskguard will not overwrite it" in proc.stderr
    assert '{id: "zz:1"}' in policy.read_text()


PLAY = textwrap.dedent("""\
    - hosts: all
      gather_facts: false
      tasks:
        - name: USB | role
          ansible.builtin.import_role:
            name: usb_control
    """)


def test_the_role_refuses_a_malformed_policy_entry_before_touching_the_laptop(tmp_path):
    """The host is unreachable on purpose: the play must stop on the controller, naming the entry."""
    (tmp_path / "play.yml").write_text(PLAY)
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    lap:\n      ansible_host: 192.0.2.1\n      ansible_connection: ssh\n")
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_ROLES_PATH=str(REPO / "roles"))
    bad = json.dumps({"usb_control_mode": "allow_listed",
                      "usb_control_approved_devices": [{"id": "0951:1666"}],
                      "usb_control_approved_devices_host": [{"id": "0951:1666:junk"}]})
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inv),
                           str(tmp_path / "play.yml"), "-e", bad], capture_output=True, text=True, timeout=300,
                          env=env, cwd=REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "usb_control_approved_devices[1]: id '0951:1666:junk' is not VENDOR:PRODUCT" in out, out[-3000:]
    assert "UNREACHABLE" not in out, "the play went to the laptop before refusing the policy"
