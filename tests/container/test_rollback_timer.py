"""The shared rollback timer (plugins/module_utils/deskguard_rollback.py) on a laptop container's real systemd:
armed and left alone, it fires and the restore script puts the saved file back and removes the new one; armed
and then stopped the way playbooks/tasks/management_guard.yml stops it, it never fires. (The firewall, VPN and
accounts scenarios exercise the disarm path; this is the fire path, which they leave to unit tests.)"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from deskguard.lab.access import run_ssh as ssh

pytestmark = pytest.mark.container
UTILS = Path(__file__).resolve().parents[2] / "plugins" / "module_utils"
DIR = "/var/tmp/dg-rollback-test"

ARM = """
import subprocess, sys
sys.path.insert(0, "{dir}")
import deskguard_rollback as rb

def run(argv):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

paths = ["{dir}/kept.conf", "{dir}/new.conf"]
saved = rb.save_aside("{dir}/aside-{unit}", paths)
script = rb.write_script("{dir}/restore-{unit}.sh", "test", rb.restore_commands(saved, paths))
rb.arm("{unit}", {seconds}, "test", ["/bin/sh", script], run)
"""


@pytest.fixture(scope="module")
def laptop(lab_container):
    host = lab_container.hosts["lab-ct1"]
    code = {name: (UTILS / f"{name}.py").read_text() for name in ("deskguard_rollback", "deskguard_files")}
    for name, text in code.items():
        r = ssh(host, f"sudo mkdir -p {DIR} && sudo tee {DIR}/{name}.py >/dev/null && echo ok", stdin=text)
        assert r.stdout.strip() == "ok", r.stderr
    yield host
    ssh(host, f"sudo rm -rf {DIR}")


def arm(laptop, unit: str, seconds: int):
    """The file as it was, the timer armed, then the change the timer must undo."""
    r = ssh(laptop, f"echo old | sudo tee {DIR}/kept.conf >/dev/null && sudo rm -f {DIR}/new.conf && "
                    f"sudo python3 - && echo changed | sudo tee {DIR}/kept.conf {DIR}/new.conf >/dev/null && "
                    f"systemctl is-active {unit}.timer",
            stdin=ARM.format(dir=DIR, unit=unit, seconds=seconds))
    assert r.returncode == 0 and r.stdout.strip() == "active", r.stdout + r.stderr


def files(laptop) -> str:
    return ssh(laptop, f"cat {DIR}/kept.conf; test -e {DIR}/new.conf && echo new-present || echo new-absent").stdout


def test_an_armed_timer_fires_and_restores(laptop):
    arm(laptop, "deskguard-test-rollback", 3)
    assert files(laptop) == "changed\nnew-present\n"
    deadline = time.monotonic() + 60
    while files(laptop) != "old\nnew-absent\n":
        assert time.monotonic() < deadline, files(laptop)
        time.sleep(1)


def test_a_timer_stopped_like_the_guard_stops_it_never_fires(laptop):
    arm(laptop, "deskguard-test-disarmed", 5)
    r = ssh(laptop, "sudo systemctl stop deskguard-test-disarmed.timer; "
                    "systemctl is-active deskguard-test-disarmed.timer; true")
    assert r.stdout.strip() == "inactive", r.stdout
    time.sleep(10)
    assert files(laptop) == "changed\nnew-present\n"


def test_arming_again_replaces_a_timer_left_from_an_earlier_run(laptop):
    """A second arm with the same unit (a re-run before the first fired) must not fail on the unit name."""
    arm(laptop, "deskguard-test-rearmed", 600)
    arm(laptop, "deskguard-test-rearmed", 600)
    ssh(laptop, "sudo systemctl stop deskguard-test-rearmed.timer")
