"""module_utils/deskguard_rollback: the one rollback timer of the firewall, the VPN and the accounts changes.
systemd is not here: systemctl/systemd-run are recorded; the restore scripts run for real with a stand-in
systemctl. The unit names are public (docs, the management guard): a timer the guard no longer stops would
undo every change, and a timer it stops under another name would never fire; both are checked here."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "plugins" / "module_utils"))
import deskguard_accounts_apply as accounts  # noqa: E402
import deskguard_rollback as rollback  # noqa: E402
import deskguard_ufw as ufw  # noqa: E402
import deskguard_wireguard as wgu  # noqa: E402
import deskguard_wireguard_apply as wga  # noqa: E402

pytestmark = pytest.mark.unit
CONFIRMED = "unless the management channel was confirmed"


class Recorder:
    def __init__(self, fail=None):
        self.calls, self.fail = [], fail

    def run(self, argv):
        self.calls.append(("run", argv))
        if self.fail:
            raise self.fail
        return ""

    def quiet(self, argv):
        self.calls.append(("quiet", argv))
        return 5   # no such unit: must not matter


def test_arm_clears_a_leftover_timer_then_arms_the_unit():
    rec = Recorder()
    rollback.arm("deskguard-x-rollback", 300, "undo x", ["/bin/sh", "/s.sh"], rec.run, quiet=rec.quiet)
    assert rec.calls == [
        ("quiet", ["systemctl", "stop", "deskguard-x-rollback.timer"]),
        ("quiet", ["systemctl", "reset-failed", "deskguard-x-rollback.service"]),
        ("run", ["systemd-run", "--unit", "deskguard-x-rollback", "--on-active=300s",
                 f"--description=deskguard: undo x {CONFIRMED}", "/bin/sh", "/s.sh"])]


def test_a_timer_that_cannot_be_armed_raises_the_callers_error():
    """The caller's change must not go ahead unguarded: systemd-run's failure reaches it as its own error."""
    rec = Recorder(fail=ufw.UfwError("systemd-run failed"))
    with pytest.raises(ufw.UfwError):
        rollback.arm("deskguard-x-rollback", 60, "undo x", ["true"], rec.run, quiet=rec.quiet)


def test_the_unit_names_are_the_published_ones_and_each_module_uses_its_own():
    assert rollback.UNITS == ("deskguard-firewall-rollback", "deskguard-vpn-rollback", "deskguard-accounts-rollback")
    assert (ufw.ROLLBACK_UNIT, wga.ROLLBACK_UNIT, accounts.ROLLBACK_UNIT) == rollback.UNITS


def test_the_management_guard_stops_exactly_these_timers():
    tasks = yaml.safe_load((ROOT / "playbooks" / "tasks" / "management_guard.yml").read_text())[0]["block"]
    stopped = {t["ansible.builtin.command"].split("#")[0].strip() for t in tasks if "ansible.builtin.command" in t}
    assert stopped == {f"systemctl stop {unit}.timer" for unit in rollback.UNITS}


def test_the_management_guard_deletes_the_old_vpn_key_once_the_channel_is_confirmed():
    """The VPN change kept the old tunnel files, its private key among them, for the rollback; once the
    guard stops the VPN timer nothing needs them."""
    tasks = yaml.safe_load((ROOT / "playbooks" / "tasks" / "management_guard.yml").read_text())[0]["block"]
    names = [t["name"] for t in tasks]
    stop = next(i for i, t in enumerate(tasks) if "deskguard-vpn-rollback" in str(t.get("ansible.builtin.command")))
    delete = next(i for i, t in enumerate(tasks) if t.get("ansible.builtin.file", {}).get("path") ==
                  wgu.Paths("wg0").backup_dir)
    assert delete > stop and tasks[delete]["ansible.builtin.file"]["state"] == "absent", names
    assert tasks[delete]["when"] == tasks[stop]["when"]


def _stand_in_systemctl(tmp_path) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/systemctl.log\n")
    (bin_dir / "systemctl").chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}:/usr/bin:/bin")


def test_saved_files_come_back_new_ones_go_and_odd_names_survive_the_shell(tmp_path):
    kept, new, spaced = tmp_path / "kept.conf", tmp_path / "new.conf", tmp_path / "with space; rm -rf x"
    kept.write_text("old\n")
    spaced.write_text("odd\n")
    kept.chmod(0o640)
    paths = [str(kept), str(new), str(spaced)]
    saved = rollback.save_aside(str(tmp_path / "aside"), paths)
    assert set(saved) == {str(kept), str(spaced)}
    assert stat.S_IMODE((tmp_path / "aside").stat().st_mode) == 0o700
    script = rollback.write_script(str(tmp_path / "state" / "undo.sh"), "test",
                                   rollback.restore_commands(saved, paths) + ["systemctl restart thing"])
    assert stat.S_IMODE(os.stat(script).st_mode) == 0o700
    assert not [p for p in (tmp_path / "state").iterdir() if p.name.startswith(".deskguard-")]   # no temp left

    kept.write_text("changed\n")
    new.write_text("added\n")
    spaced.unlink()
    subprocess.run(["/bin/sh", script], check=True, env=_stand_in_systemctl(tmp_path))
    assert kept.read_text() == "old\n" and stat.S_IMODE(kept.stat().st_mode) == 0o640
    assert not new.exists() and spaced.read_text() == "odd\n"
    assert (tmp_path / "systemctl.log").read_text() == "restart thing\n"


def test_save_aside_forgets_an_earlier_run(tmp_path):
    a = tmp_path / "a"
    a.write_text("1")
    rollback.save_aside(str(tmp_path / "aside"), [str(a)])
    a.unlink()
    assert rollback.save_aside(str(tmp_path / "aside"), [str(a)]) == {}
    assert list((tmp_path / "aside").iterdir()) == []


def test_the_firewall_timer_disables_ufw(monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(ufw, "_run", rec.run)
    monkeypatch.setattr(rollback, "_quiet", rec.quiet)
    ufw.arm_rollback(120)
    assert rec.calls[-1] == ("run", ["systemd-run", "--unit", "deskguard-firewall-rollback", "--on-active=120s",
                                     f"--description=deskguard: disable the firewall {CONFIRMED}",
                                     "/usr/sbin/ufw", "--force", "disable"])
    assert [c[1][1] for c in rec.calls[:2]] == ["stop", "reset-failed"]


def test_the_vpn_timer_runs_its_script(tmp_path):
    rec = Recorder()
    wga.arm_rollback(300, "/var/lib/deskguard/vpn/rollback.sh", run=rec.run, probe=rec.quiet)
    assert rec.calls[-1] == ("run", ["systemd-run", "--unit", "deskguard-vpn-rollback", "--on-active=300s",
                                     f"--description=deskguard: restore the VPN {CONFIRMED}",
                                     "/bin/sh", "/var/lib/deskguard/vpn/rollback.sh"])
    assert [c[0] for c in rec.calls] == ["quiet", "quiet", "run"]
