"""Onboarding a laptop container end to end: check mode, apply, converge (0 changed), the real state on the
laptop, and refusals that change nothing (issue: onboarding and the baseline controls)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from deskguard.lab import network
from deskguard.lab.access import run_ssh as ssh
from deskguard.lab.image import lab_key
from sitetools import onboard_lab

pytestmark = pytest.mark.container

# The example policy denies nothing, names no approved sources and requires no AV on Linux; no browser in the image.
SW_DEFAULT = {"SW-001": "already compliant", "SW-002": "not applicable", "SW-003": "not applicable",
              "AV-001": "not applicable"}

HOST = "lap-ct2"


def deskguard(site, *args):
    from sitetools import run_deskguard

    return run_deskguard(site, *args, timeout=600)


def onboard(site, laptop, *extra, user="dgadmin"):
    return onboard_lab(site, HOST, laptop, "--ssh-user", user, *extra, timeout=600)


def snapshot(laptop) -> str:
    """Everything the baseline controls touch, as one string (compared before/after a refused run)."""
    r = ssh(laptop, "sudo sh -c 'cat /etc/dconf/db/local.d/00-deskguard-screenlock /etc/default/ufw "
                    "/etc/ufw/user.rules /etc/apt/apt.conf.d/52deskguard-unattended-upgrades 2>&1; "
                    "ufw status; systemctl is-enabled apt-daily-upgrade.timer'")
    return r.stdout


@pytest.fixture(scope="module")
def laptop(lab_container):
    host = lab_container.hosts["lab-ct2"]
    # A clean laptop: earlier container tests may have switched ufw on.
    ssh(host, "sudo ufw --force reset >/dev/null; sudo ufw --force disable >/dev/null")
    return host


@pytest.fixture(scope="module")
def site(make_site):
    return make_site(management=network.lab_network())  # the lab's controller reaches containers from its bridge


def test_check_mode_changes_and_records_nothing(site, laptop):
    before = snapshot(laptop)
    proc, out = onboard(site, laptop, "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    states = {c["control"]: c["state"] for c in out["controls"]}
    # USB is VM-only: in a container USB-001 is not applicable (left alone, with a finding saying why); no block
    # device: ENC not applicable.
    assert states == {"FW-001": "would change", "LCK-001": "would change", "UPD-001": "would change",
                      "USB-001": "not applicable", "ENC-001": "not applicable",
                      "ENC-002": "not applicable", "ENC-003": "not applicable", "ENC-004": "not applicable",
                      "ACC-001": "already compliant", "ACC-002": "would change", "ACC-003": "would change",
                      "ACC-004": "already compliant", "ACC-005": "would change",  # tanaka is no admin here
                      "NET-003": "not applicable", "AGT-001": "disabled", **SW_DEFAULT}, out
    assert snapshot(laptop) == before
    assert HOST not in (site / "inventory" / "hosts.yml").read_text()
    assert json.loads(deskguard(site, "devices", "list", "--json").stdout) == []
    # Nothing changed, so no lockout guard logs in again, and the packages are in the image, so the package
    # manager is not called: 9 round trips (14 with both; the real run below makes 15).
    assert out["module_calls"] == 9, out["module_calls"]


def test_onboard_applies_every_control(site, laptop):
    proc, out = onboard(site, laptop)
    assert proc.returncode == 0, (proc.stderr, out)
    assert {c["control"]: c["state"] for c in out["controls"]} == {
        "FW-001": "applied", "LCK-001": "applied", "UPD-001": "applied", "USB-001": "not applicable",
        "ENC-001": "not applicable", "ENC-002": "not applicable", "ENC-003": "not applicable",  # root on no disk
        "ENC-004": "not applicable",
        "ACC-001": "already compliant", "ACC-002": "applied", "ACC-003": "applied",
        "ACC-004": "already compliant", "ACC-005": "applied",  # no display manager in the lab: ACC-004 has nothing to do
        "NET-003": "not applicable",  # no call system in the policy: nothing to deploy (as the nightly run says)
        "AGT-001": "disabled",           # the example policy leaves the agent off
        **SW_DEFAULT}
    device = json.loads(deskguard(site, "devices", "show", HOST, "--json").stdout)
    assert device["state"] == "onboarded" and device["uuid"] == out["device"]["uuid"]
    assert out["module_calls"] == 15, out["module_calls"]   # with a lockout guard's login after each changed control
    # The interpreter found by preflight is recorded: later runs skip Ansible's discovery round trip.
    import yaml

    from deskguard.site.inventory import host_vars_file
    assert yaml.safe_load(host_vars_file(site, HOST).read_text())["ansible_python_interpreter"] == "/usr/bin/python3"


def test_the_laptop_really_is_configured(site, laptop):
    r = ssh(laptop, "dconf read /org/gnome/desktop/session/idle-delay; "
                    "dconf read /org/gnome/desktop/screensaver/lock-enabled; "
                    "sudo ufw status verbose; apt-config dump; "
                    "systemctl is-enabled apt-daily.timer apt-daily-upgrade.timer; "
                    "systemctl is-active deskguard-firewall-rollback.timer; true")
    out = r.stdout
    assert "uint32 300" in out and "\ntrue\n" in out
    assert "Status: active" in out and "Default: deny (incoming), allow (outgoing)" in out
    assert "22/tcp" in out and network.lab_network() in out
    origins = [l for l in out.splitlines() if l.startswith("Unattended-Upgrade::Origins-Pattern:: ")]
    # Only our security origins: the distro's own list was cleared, not merged.
    assert origins and all("Debian-Security" in l for l in origins), origins
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in out
    assert out.count("enabled") >= 2
    # The lockout guard confirmed the management channel, so the firewall's rollback timer was stopped.
    assert out.rstrip().endswith("inactive")
    locks = ssh(laptop, "cat /etc/dconf/db/local.d/locks/00-deskguard-screenlock; test -s /etc/dconf/db/local && echo compiled")
    assert "/org/gnome/desktop/session/idle-delay" in locks.stdout and "compiled" in locks.stdout


def test_second_onboard_converges_with_nothing_changed(site, laptop):
    proc, out = onboard(site, laptop)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out["changed_tasks"] == 0, out
    assert {c["state"] for c in out["controls"]} == {"already compliant", "not applicable", "disabled"}
    assert out["module_calls"] <= 20, out["module_calls"]


def test_bad_policy_value_is_refused_before_any_change(site, laptop):
    policy = site / "inventory" / "group_vars" / "all" / "policy.yml"
    good = policy.read_text()
    before = snapshot(laptop)
    try:
        policy.write_text(good.replace("screen_lock_idle_minutes: 5", 'screen_lock_idle_minutes: "five"')
                          .replace("firewall_rollback_seconds: 300", "firewall_rollback_seconds: 120"))
        proc, out = onboard(site, laptop)
    finally:
        policy.write_text(good)
    # Refused on the controller before the laptop is contacted (deskguard.site.policyfile.check): one line naming the
    # file, line and key, exit 2, no play.
    assert proc.returncode == 2 and out is None, proc.stdout + proc.stderr
    assert f"{policy}:" in proc.stderr and "screen_lock_idle_minutes" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert snapshot(laptop) == before


def test_no_sudo_is_refused_and_nothing_is_written(site, laptop):
    key = lab_key().with_suffix(".pub").read_text()
    ssh(laptop, f"sudo install -d -o tanaka -m 0700 /home/tanaka/.ssh && echo '{key.strip()}' | "
                "sudo tee /home/tanaka/.ssh/authorized_keys >/dev/null && sudo chown tanaka /home/tanaka/.ssh/authorized_keys")
    hosts_before = (site / "inventory" / "hosts.yml").read_bytes()
    proc = deskguard(site, "onboard", "other-laptop", "--os", "debian", "--address", laptop.address,
                     "--user", "tanaka", "--ssh-user", "tanaka", "--ssh-key", str(lab_key()), "--yes")
    assert proc.returncode == 4 and "passwordless sudo" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1
    assert (site / "inventory" / "hosts.yml").read_bytes() == hosts_before


def test_wrong_os_is_refused(site, laptop):
    proc = deskguard(site, "onboard", "other-laptop", "--os", "ubuntu", "--address", laptop.address,
                     "--user", "tanaka", "--ssh-key", str(lab_key()), "--yes")
    assert proc.returncode == 2 and "not ubuntu; pass --os debian" in proc.stderr, proc.stderr


def test_wrong_ssh_key_is_refused(site, laptop, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    proc = deskguard(site, "onboard", "other-laptop", "--os", "debian", "--address", laptop.address,
                     "--user", "tanaka", "--ssh-key", str(other), "--yes")
    assert proc.returncode == 4 and "refused the admin key" in proc.stderr, proc.stderr


def test_same_name_at_another_address_is_refused(site, laptop):
    proc = deskguard(site, "onboard", HOST, "--os", "debian", "--address", network.container_address(1),
                     "--user", "tanaka", "--ssh-key", str(lab_key()), "--yes")
    assert proc.returncode == 2 and "already registered at" in proc.stderr, proc.stderr


def test_ctrl_c_leaves_store_and_inventory_consistent_and_a_rerun_converges(site, lab_container):
    import os
    import signal
    import time

    other = lab_container.hosts["lab-ct1"]
    other_name = "lap-ct1"
    argv = [sys.executable, "-m", "deskguard", "onboard", other_name, "--os", "debian", "--address",
            other.address, "--user", "tanaka", "--ssh-key", str(lab_key()), "--yes", "--site", str(site)]
    # As a terminal does: Ctrl-C goes to the whole foreground process group (ansible-playbook too).
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    hosts = site / "inventory" / "hosts.yml"
    deadline = time.monotonic() + 120
    while other_name not in hosts.read_text() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(2)  # into the play
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = proc.communicate(timeout=180)
    if other_name in hosts.read_text():  # the interrupt landed in the play, as intended
        assert proc.returncode == 130, err
    assert "Traceback" not in err
    listed = other_name in hosts.read_text()
    devices = {d["hostname"]: d for d in json.loads(deskguard(site, "devices", "list", "--json").stdout)}
    assert listed == (other_name in devices), (listed, devices)  # both or neither
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    devices = {d["hostname"]: d for d in json.loads(deskguard(site, "devices", "list", "--json").stdout)}
    assert devices[other_name]["state"] == "onboarded"


def test_pending_reboot_is_reported_not_acted_on(site, laptop):
    ssh(laptop, "echo '*** System restart required ***' | sudo tee /var/run/reboot-required >/dev/null; "
                "echo linux-image-amd64 | sudo tee /var/run/reboot-required.pkgs >/dev/null")
    # A container shares the kernel's boot id: its init's start time shows a reboot instead.
    init_started = ssh(laptop, "cut -d' ' -f22 /proc/1/stat").stdout
    try:
        proc, out = onboard(site, laptop)
    finally:
        ssh(laptop, "sudo rm -f /var/run/reboot-required /var/run/reboot-required.pkgs")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    upd = next(c for c in out["controls"] if c["control"] == "UPD-001")
    # Met (applied, or already met when run after the others), and never a bare "compliant" beside its finding.
    assert upd["state"] in ("applied", "passes with a warning"), upd
    assert "reboot pending after updates (linux-image-amd64)" in upd["next"], upd
    assert ssh(laptop, "cut -d' ' -f22 /proc/1/stat").stdout == init_started != ""
