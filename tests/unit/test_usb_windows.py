"""module_utils/deskguard_usb_windows: golden registry values per mode (not verified on real Windows), and
the shape every value must have for win_regedit."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "module_utils"))
import deskguard_usb_windows as uw  # noqa: E402

pytestmark = pytest.mark.unit
RS = "HKLM:\\SOFTWARE\\Policies\\Microsoft\\Windows\\RemovableStorageDevices"
DI = "HKLM:\\SOFTWARE\\Policies\\Microsoft\\Windows\\DeviceInstall\\Restrictions"


def _present(values):
    return {(v["path"], v["name"]): v["data"] for v in values["present"]}


def test_block_denies_all_removable_storage():
    values = uw.windows_usb_values("block", [])
    assert _present(values) == {(RS, "Deny_All"): 1}
    assert all(not items for items in values["lists"].values())


def test_read_only_denies_write_to_removable_disks_and_portable_devices():
    assert _present(uw.windows_usb_values("read_only", [])) == {
        (RS + "\\{53f5630d-b6bf-11d0-94f2-00a0c91efb8b}", "Deny_Write"): 1,
        (RS + "\\{6AC27878-A6FA-4155-BA85-F98F491D4F33}", "Deny_Write"): 1,
        (RS + "\\{F33FDC04-D1AC-4E8E-9A30-19BBD4B108AE}", "Deny_Write"): 1,
    }


def test_allow_listed_denies_disk_and_portable_classes_and_allows_approved_ids():
    values = uw.windows_usb_values("allow_listed", [{"id": "0951:1666", "serial": "E0D5"}, {"id": "090c:1000"}],
                                   ["USBSTOR\\DiskKingston_DataTraveler_3.0PMAP"])
    assert _present(values) == {(DI, "AllowDenyLayered"): 1, (DI, "DenyDeviceClasses"): 1,
                                (DI, "DenyDeviceClassesRetroactive"): 0, (DI, "AllowDeviceIDs"): 1,
                                (DI, "AllowInstanceIDs"): 1}
    assert values["lists"] == {
        DI + "\\DenyDeviceClasses": {"1": "{4d36e967-e325-11ce-bfc1-08002be10318}",
                                     "2": "{eec5ad98-8080-425f-922a-dabf3de3f69a}"},
        # sorted, so the numbering is stable from run to run ("S" sorts before "\\")
        DI + "\\AllowDeviceIDs": {"1": "USBSTOR\\DiskKingston_DataTraveler_3.0PMAP", "2": "USB\\VID_090C&PID_1000"},
        DI + "\\AllowInstanceIDs": {"1": "USB\\VID_0951&PID_1666\\E0D5"},
    }


def test_keyboards_are_never_denied_by_class():
    values = uw.windows_usb_values("allow_listed", [])
    denied = set(values["lists"][DI + "\\DenyDeviceClasses"].values())
    # Keyboard, Mouse, HIDClass, USB (hubs, composite parents): installing any of these must stay possible.
    for never in ("{4d36e96b-e325-11ce-bfc1-08002be10318}", "{4d36e96f-e325-11ce-bfc1-08002be10318}",
                  "{745a17a0-74d3-11d0-b6fe-00a0c91efb8b}", "{36fc9e60-c465-11cf-8056-444553540000}"):
        assert never not in denied
    names = {v["name"] for v in values["present"]}
    assert "DenyRemovableDevices" not in names and "DenyUnspecified" not in names


@pytest.mark.parametrize("mode", ["block", "read_only", "allow_listed"])
def test_a_mode_removes_every_value_the_other_modes_set(mode):
    values = uw.windows_usb_values(mode, [{"id": "0951:1666"}])
    mine = {(v["path"], v["name"]) for v in values["present"]}
    gone = {(v["path"], v["name"]) for v in values["absent"]}
    assert not mine & gone
    others = set()
    for other in {"block", "read_only", "allow_listed"} - {mode}:
        others |= {(v["path"], v["name"]) for v in uw.windows_usb_values(other, [{"id": "0951:1666"}])["present"]}
    assert others - mine <= gone


@pytest.mark.parametrize("mode", ["block", "read_only", "allow_listed"])
def test_every_value_is_well_formed_for_win_regedit(mode):
    values = uw.windows_usb_values(mode, [{"id": "0951:1666", "serial": "E0D5"}])
    for v in values["present"] + values["absent"] + values["list_values"]:
        assert re.fullmatch(r"HKLM:\\SOFTWARE\\Policies\\Microsoft\\Windows\\[A-Za-z\\{}0-9-]+", v["path"]), v
        assert "/" not in v["path"] and v["name"] and v["type"] in ("dword", "string")
        assert isinstance(v["data"], int if v["type"] == "dword" else str)
    for v in values["list_values"]:
        assert v["data"] == values["lists"][v["path"]][v["name"]]


def test_a_malformed_id_is_refused():
    with pytest.raises(uw.PolicyError, match="4 hex digits"):
        uw.windows_usb_values("allow_listed", [{"id": "USB\\VID_0951"}])


def test_the_roles_stale_list_check_removes_only_lists_that_differ(tmp_path):
    """The `when:` of Windows.yml's list clean-up, evaluated by real Ansible against win_reg_stat-shaped
    results: a list as rendered stays, a stale one goes, a missing one is not "removed"."""
    import json
    import os
    import subprocess

    import yaml

    repo = Path(__file__).resolve().parents[2]
    tasks = yaml.safe_load((repo / "roles" / "usb_control" / "tasks" / "Windows.yml").read_text())
    when = next(t["when"] for t in tasks if t["name"] == "USB-002 | PATCH | Stale device-installation lists removed")
    approved = [{"id": "0951:1666", "serial": "E0D5"}]
    keys = sorted(uw.windows_usb_values("allow_listed", approved)["lists"])
    results = [
        {"item": DI + "\\AllowInstanceIDs", "exists": True,
         "properties": {"1": {"raw_value": "x", "type": "REG_SZ", "value": "USB\\VID_0951&PID_1666\\E0D5"}}},
        {"item": DI + "\\DenyDeviceClasses", "exists": True,
         "properties": {"1": {"raw_value": "x", "type": "REG_SZ", "value": "{stale}"}}},
        {"item": DI + "\\AllowDeviceIDs", "exists": False},
    ]
    assert sorted(r["item"] for r in results) == keys
    play = [{"hosts": "localhost", "gather_facts": False,
             "vars": {"__usb_control_windows": "{{ 'allow_listed' | deskguard_usb_windows_values(%s, []) }}"
                      % json.dumps(approved).replace('"', "'"), "results": results},
             "tasks": [{"ansible.builtin.debug": {"msg": "STALE {{ item.item }} {{ %s }}" % " ".join(when.split())},
                        "loop": "{{ results }}"}]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    env = dict(os.environ, ANSIBLE_CONFIG=str(repo / "ansible.cfg"))
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
                           str(tmp_path / "play.yml")], capture_output=True, text=True, env=env, cwd=repo, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    verdicts = dict(re.findall(r'"msg": "STALE (\S+) (True|False)"', proc.stdout.replace("\\\\", "\\")))
    assert verdicts == {DI + "\\AllowInstanceIDs": "False", DI + "\\DenyDeviceClasses": "True",
                        DI + "\\AllowDeviceIDs": "False"}, proc.stdout[-2000:]
