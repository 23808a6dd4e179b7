"""module_utils/deskguard_usb_apply: the all-or-nothing transaction, against fake usbguard/systemctl tools
(the real daemon is exercised in tests/vm/test_usb_vm.py)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "module_utils"))
import deskguard_usb_apply as ua  # noqa: E402

pytestmark = pytest.mark.unit
FAKES = Path(__file__).resolve().parent / "usb_fakes"
GENERATED = (
    'allow id 1d6b:0002 serial "0000:00:04.0" name "xHCI Host Controller" with-interface 09:00:00\n'
    'allow id 046d:0825 serial "A1" name "Webcam" with-interface { 0e:01:00 0e:02:00 01:01:00 }\n'
    'allow id 46f4:0001 serial "LEFTIN" name "QEMU USB HARDDRIVE" with-interface 08:06:50\n'
)


def _tool(tmp_path, name, script):
    path = tmp_path / "bin" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"#!{sys.executable}\nimport runpy\nrunpy.run_path({str(FAKES / script)!r}, run_name='__main__')\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def laptop(tmp_path, monkeypatch):
    """A fake laptop: /etc/usbguard as Debian ships it (plugdev ACL, empty rules), the daemon masked."""
    etc = tmp_path / "etc"
    (etc / "rules.d").mkdir(parents=True)
    (etc / "IPCAccessControl.d").mkdir()
    (etc / "IPCAccessControl.d" / ":plugdev").write_text("Devices=list,modify,listen\n")
    (etc / "rules.conf").write_text("")
    (etc / "usbguard-daemon.conf").write_text("IPCAllowedGroups=root plugdev\n")
    state = tmp_path / "state"
    state.mkdir()
    (state / "enabled").write_text("masked")
    (state / "active").write_text("inactive")
    (state / "generated").write_text(GENERATED)
    controllers = tmp_path / "sys"
    controllers.mkdir()
    (controllers / "usb1-authorized_default").write_text("0")
    paths = {"daemon_conf": str(etc / "usbguard-daemon.conf"), "rules": str(etc / "rules.conf"),
             "rules_dir": str(etc / "rules.d"), "ipc_dir": str(etc / "IPCAccessControl.d"),
             "enrolment": str(tmp_path / "var" / "enrolment.rules"), "udev": str(tmp_path / "udev" / "99.rules"),
             "controllers": str(controllers / "usb*-authorized_default"), "usb_bus": str(controllers)}
    tools = {"usbguard": _tool(tmp_path, "usbguard", "fake_usbguard.py"),
             "parser": _tool(tmp_path, "usbguard-rule-parser", "fake_parser.py"),
             "systemctl": _tool(tmp_path, "systemctl", "fake_systemctl.py"),
             "udevadm": "true", "blockdev": "/sbin/blockdev", "detect_virt": "false"}
    monkeypatch.setenv("FAKE_USB_STATE", str(state))
    monkeypatch.setenv("FAKE_USB_RULES", paths["rules"])
    monkeypatch.setattr(ua, "VERIFY_SECONDS", 2)
    return paths, tools, state


def params(mode="block", approved=(), **extra):
    return {"mode": mode, "approved_devices": list(approved), "allowed_classes": ["01", "0e"], **extra}


def test_first_run_puts_the_policy_in_force_then_converges(laptop):
    paths, tools, state = laptop
    first = ua.apply(params(), paths=paths, tools=tools)
    assert first["changed"] and first["restarted"] and first["enrolment_recorded"]
    rules = Path(paths["rules"]).read_text()
    assert 'allow with-interface match-all { 03:*:* 09:*:* 01:*:* 0e:*:* }' in rules
    assert '"Webcam"' in rules and "LEFTIN" not in rules, "the stick plugged in at enrolment was approved"
    assert not os.listdir(paths["ipc_dir"]), "the plugdev IPC file survived"
    assert stat.S_IMODE(os.stat(paths["rules"]).st_mode) == 0o600
    assert "IPCAllowedGroups=\n" in Path(paths["daemon_conf"]).read_text()
    assert (state / "enabled").read_text() == "enabled" and (state / "active").read_text() == "active"

    (state / "calls").write_text("")
    second = ua.apply(params(), paths=paths, tools=tools)
    assert not second["changed"] and second["files"] == [] and not second["restarted"]
    assert "restart" not in (state / "calls").read_text()


def test_check_mode_reports_and_changes_nothing(laptop):
    paths, tools, state = laptop
    before = {p: Path(p).read_bytes() for p in (paths["rules"], paths["daemon_conf"])}
    result = ua.apply(params("allow_listed", [{"id": "0951:1666", "serial": "S1"}]), check_mode=True,
                      paths=paths, tools=tools)
    assert result["changed"] and result["would_restart"] and not result["restarted"]
    assert {p: Path(p).read_bytes() for p in before} == before
    assert os.listdir(paths["ipc_dir"]) == [":plugdev"] and not Path(paths["enrolment"]).exists()
    assert (state / "active").read_text() == "inactive"


def test_hand_edited_rules_are_drift_and_are_repaired(laptop):
    paths, tools, state = laptop
    ua.apply(params(), paths=paths, tools=tools)
    with open(paths["rules"], "a") as fh:
        fh.write("allow\n")  # an operator with root "fixing" their stick
    (state / "running").write_text(Path(paths["rules"]).read_text())  # and the daemon restarted on it
    fixed = ua.apply(params(), paths=paths, tools=tools)
    assert fixed["changed"] and fixed["restarted"]
    assert {"path": paths["rules"], "reason": "content"} in fixed["files"]
    assert "\nallow\n" not in Path(paths["rules"]).read_text()


def test_rules_that_do_not_validate_change_nothing(laptop):
    paths, tools, _state = laptop
    before = Path(paths["rules"]).read_bytes()
    with pytest.raises(ua.UsbError, match="do not validate.*nothing was changed"):
        # A generated line the parser refuses stands in for any rendering bug.
        Path(paths["enrolment"]).parent.mkdir(parents=True)
        Path(paths["enrolment"]).write_text('allow id 1234:5678 name "unbalanced\n')
        ua.apply(params(), paths=paths, tools=tools)
    assert Path(paths["rules"]).read_bytes() == before
    assert os.listdir(paths["ipc_dir"]) == [":plugdev"]


def test_a_failed_restart_restores_the_old_policy_and_its_daemon(laptop):
    paths, tools, state = laptop
    ua.apply(params(), paths=paths, tools=tools)
    good = Path(paths["rules"]).read_bytes()
    (state / "fail-restart").write_text("")
    with pytest.raises(ua.UsbError, match="previous files were restored, but usbguard did not restart"):
        ua.apply(params("read_only"), paths=paths, tools=tools)
    assert Path(paths["rules"]).read_bytes() == good
    assert not Path(paths["udev"]).exists(), "the read-only udev rule stayed after the rollback"


def test_a_daemon_that_was_off_is_stopped_again_and_new_devices_authorised(laptop):
    paths, tools, state = laptop
    (state / "fail-restart").write_text("")
    with pytest.raises(ua.UsbError, match="stopped again"):
        ua.apply(params(), paths=paths, tools=tools)
    assert (state / "enabled").read_text() == "disabled"
    assert Path(paths["controllers"].replace("*", "1")).read_text() == "1"
    assert os.listdir(paths["ipc_dir"]) == [":plugdev"], "the original files were not restored"


def test_running_rules_that_differ_from_the_files_force_a_restart(laptop):
    paths, tools, state = laptop
    ua.apply(params(), paths=paths, tools=tools)
    (state / "running").write_text("allow\n")  # e.g. `usbguard append-rule` at runtime
    result = ua.apply(params(), paths=paths, tools=tools)
    assert result["changed"] and result["restarted"] and not result["files"]


def test_missing_usbguard_is_a_clear_error(laptop):
    paths, tools, _state = laptop
    tools = dict(tools, usbguard="/nonexistent/usbguard")
    with pytest.raises(ua.UsbError, match="usbguard is not installed.*nothing was changed"):
        ua.apply(params(), paths=paths, tools=tools)


def test_bad_policy_entry_is_refused_before_any_change(laptop):
    paths, tools, _state = laptop
    before = Path(paths["rules"]).read_bytes()
    with pytest.raises(ua.PolicyError, match=r"approved_devices\[1\]"):
        ua.apply(params("allow_listed", [{"id": "0951:1666"}, {"id": "951:1666"}]), paths=paths, tools=tools)
    assert Path(paths["rules"]).read_bytes() == before


def test_read_only_mode_writes_the_udev_rule_and_other_modes_remove_it(laptop):
    paths, tools, _state = laptop
    ua.apply(params("read_only"), paths=paths, tools=tools)
    assert "--setro" in Path(paths["udev"]).read_text()
    ua.apply(params("block"), paths=paths, tools=tools)
    assert not Path(paths["udev"]).exists()


def test_enrolment_is_recorded_once_unless_rebaselined(laptop):
    paths, tools, state = laptop
    ua.apply(params(), paths=paths, tools=tools)
    (state / "generated").write_text(GENERATED + 'allow id 1111:2222 serial "DOCK" with-interface 02:06:00\n')
    assert "DOCK" not in Path(paths["rules"]).read_text()
    assert not ua.apply(params(), paths=paths, tools=tools)["changed"]
    again = ua.apply(params(rebaseline=True), paths=paths, tools=tools)
    assert again["enrolment_recorded"] and "DOCK" in Path(paths["rules"]).read_text()


def test_a_host_without_usb_is_left_alone_with_a_finding(laptop):
    paths, tools, state = laptop
    for why, changes in ((dict(paths, usb_bus="/nonexistent"), {}), (paths, {"detect_virt": "true"})):
        result = ua.apply(params(), paths=why, tools=dict(tools, **changes))
        assert not result["changed"] and result["not_applicable"], result
        assert result["finding"].startswith("USB control not applicable: ")
    assert os.listdir(paths["ipc_dir"]) == [":plugdev"] and not (state / "calls").exists()
