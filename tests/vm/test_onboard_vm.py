"""Onboarding end to end on the laptop VM (real kernel, real ufw/nftables, systemd timers): check mode,
apply, verify the real state, converge with 0 changed within the round-trip budget. Few round trips: each
module call costs 8-15 s under TCG.

The laptop and its onboarding are the VM tier's shared onboarding (tests/vm/conftest.py): a fresh VM, onboarded
here once, which test_usb_vm.py then uses instead of onboarding a second fresh VM. The USB tests run right after
the first test here (tests/vm/conftest.py orders them), before the comply and recovery-key tests, which leave a
keyslot changed behind the kit's back (a converged onboarding would then escrow a fresh key)."""

from __future__ import annotations

import json
import pytest

from deskguard.lab import vm
from sitetools import comply_json, onboard_lab

pytestmark = pytest.mark.vm

# The example policy denies nothing, names no approved sources and requires no AV on Linux; no browser in the image.
SW_DEFAULT = {"SW-001": "already compliant", "SW-002": "not applicable", "SW-003": "not applicable",
              "AV-001": "not applicable"}

HOST = "lap-vm1"


def deskguard(site, *args):
    from sitetools import run_deskguard

    return run_deskguard(site, *args)


@pytest.fixture(scope="module")
def laptop(shared_onboarding):
    return shared_onboarding.laptop


@pytest.fixture(scope="module")
def site(shared_onboarding):
    return shared_onboarding.site


def onboard(site, laptop, *extra):
    proc, out = onboard_lab(site, HOST, laptop, *extra)
    assert out is not None, proc.stderr
    return proc, out


def test_check_apply_verify_converge(site, laptop, shared_onboarding):
    assert shared_onboarding.fresh(), "check mode needs the laptop as installed: run this module first"
    proc, out = onboard(site, laptop, "--check")
    assert proc.returncode == 0, (proc.stderr, out)
    assert {c["control"]: c["state"] for c in out["controls"]} == {
        "ENC-001": "passes with a warning", "ENC-002": "would change", "ENC-003": "already compliant",
        "ENC-004": "not applicable",    # the example policy unlocks with a passphrase (the lab's key file)
        "FW-001": "would change", "LCK-001": "would change", "UPD-001": "would change", "USB-001": "would change",
        "ACC-001": "already compliant", "ACC-002": "would change", "ACC-003": "would change",
        "ACC-004": "already compliant", "ACC-005": "would change",  # tanaka was never an admin here
        "NET-003": "not applicable",    # no call system in the policy: nothing to deploy, as nightly says
        "AGT-001": "disabled", **SW_DEFAULT}, out   # the example policy leaves the agent off

    proc, out = shared_onboarding.apply()
    assert out is not None, proc.stderr
    assert proc.returncode == 0, (proc.stderr, out)
    states = {c["control"]: c for c in out["controls"]}
    assert {k: v["state"] for k, v in states.items()} == {
        "ENC-001": "passes with a warning", "ENC-002": "applied", "ENC-003": "already compliant",
        "ENC-004": "not applicable",
        "FW-001": "applied", "LCK-001": "applied", "UPD-001": "applied", "USB-001": "applied",
        "ACC-001": "already compliant", "ACC-002": "applied", "ACC-003": "applied",
        "ACC-004": "already compliant", "ACC-005": "applied",
        "NET-003": "not applicable", "AGT-001": "disabled", **SW_DEFAULT}, out
    # The lab's installer slots use a light PBKDF (TCG is slow): reported, not hidden.
    assert any("weak PBKDF" in f for f in states["ENC-001"]["findings"]), states["ENC-001"]
    assert any("recovery key escrowed (keyslot 2" in f for f in states["ENC-002"]["findings"]), states["ENC-002"]

    r = vm.ssh(laptop, "dconf read /org/gnome/desktop/session/idle-delay; sudo ufw status verbose; "
                       "apt-config dump | grep -c Debian-Security; systemctl is-enabled apt-daily-upgrade.timer; "
                       "systemctl is-active deskguard-firewall-rollback.timer; true", timeout=180)
    assert "uint32 300" in r.stdout and "Status: active" in r.stdout and "10.0.2.0/24" in r.stdout, r.stdout
    assert "Default: deny (incoming)" in r.stdout and "\nenabled\n" in r.stdout, r.stdout
    assert r.stdout.rstrip().endswith("inactive"), r.stdout  # the guard disarmed the rollback timer

    proc, out = onboard(site, laptop)
    assert proc.returncode == 0, (proc.stderr, out)
    states = {c["control"]: c["state"] for c in out["controls"]}
    assert out["changed_tasks"] == 0 and {k: v for k, v in states.items() if k in SW_DEFAULT} == SW_DEFAULT, out
    # ENC-001 keeps its weak-PBKDF warning (the lab's installer slots), NET-003 does not apply (no call system).
    assert {v for k, v in states.items() if k not in SW_DEFAULT} == {"already compliant", "passes with a warning",
                                                                    "not applicable", "disabled"}, out
    assert out["module_calls"] <= 20, out


# ------------------------------------------------------------------------ nightly compliance (issue 7)

def comply(site, *extra):
    rc, report = comply_json(site, "--limit", HOST, *extra)
    return rc, report, report["hosts"][HOST]


def failing(host):
    return {cid for cid, r in host["results"].items() if r["status"] in ("fail", "error")}


# What an operator or an intruder would do by hand on the laptop, one change per control.
BREAK = (
    "sudo systemctl stop usbguard; "                                                   # USB-001, USB-003
    "sudo sed -i 's/^idle-delay=.*/idle-delay=uint32 3600/' /etc/dconf/db/local.d/00-deskguard-screenlock && "
    "sudo dconf update; "                                                              # LCK-001
    "sudo ufw disable; "                                                               # FW-001
    "printf 'a key nobody escrowed' > /tmp/rogue; "                                    # ENC-003
    "sudo cryptsetup luksAddKey -q --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file /etc/keys/root.key "
    "$(sudo blkid -t TYPE=crypto_LUKS -o device | head -n1) /tmp/rogue; echo rc=$?"
)


def test_comply_fails_exactly_what_was_broken_and_fix_repairs_it(site, laptop):
    rc, _, host = comply(site)
    assert rc == 0 and host["state"] == "ok" and failing(host) == set(), host

    r = vm.ssh(laptop, BREAK, timeout=300)
    assert r.stdout.strip().endswith("rc=0"), r.stdout + r.stderr
    rc, report, host = comply(site)
    broken = {"USB-001", "USB-003", "LCK-001", "FW-001", "ENC-003"}
    assert rc == 1 and failing(host) == broken, {c: host["results"][c] for c in failing(host)}
    results = host["results"]
    assert "inactive" in str(results["USB-001"]["observed"])
    assert results["LCK-001"]["observed"]["idle_delay"] == 3600
    assert results["FW-001"]["observed"]["active"] is False
    assert any("keyslot 3 is neither escrowed nor in the enrolment baseline" in e
               for e in results["ENC-003"]["evidence"]), results["ENC-003"]
    assert {(d["control"], d["change"]) for d in report["drift"]} == {(c, "new failure") for c in broken}

    rc, report, host = comply(site, "--fix")
    assert rc == 0 and failing(host) == set(), host
    # LCK-001: the dconf files are repaired, but the lab VM has no GNOME settings reader to read what a session
    # gets, so it is not checked rather than fixed (issue 26; docs/compliance.md).
    assert {(d["control"], d["change"]) for d in report["drift"]} == {
        *((c, "fixed") for c in broken - {"LCK-001"}), ("LCK-001", "no longer failing (not checked)")}
    r = vm.ssh(laptop, "systemctl is-active usbguard; sudo ufw status | head -n1; "
                       "sudo cryptsetup luksDump $(sudo blkid -t TYPE=crypto_LUKS -o device | head -n1) "
                       "| grep -c 'luks2$'", timeout=180)
    assert r.stdout.split() == ["active", "Status:", "active", "3"], r.stdout   # rogue slot gone, 3 remain

    rc, report, host = comply(site)
    assert rc == 0 and failing(host) == set() and report["drift"] == [], report["drift"]


# ----------------------------------------------------------------------------- recovery keys (issue 4)

def officer_args(site):
    return ["--escrow-key", str(site / ".deskguard" / "escrow-officer.key.pem"),
            "--passphrase-file", str(site.parent / f"{site.name}.pass")]


def shown_keys(site):
    proc = deskguard(site, "keys", "show", HOST, *officer_args(site), "--reason", "vm test", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def opens(laptop, luks_uuid, key, slot=None):
    """Does KEY open the laptop's LUKS volume (token unlock off, so only the key itself counts)?"""
    slot_arg = f"--key-slot {slot} " if slot is not None else ""
    r = vm.ssh(laptop, "sudo cryptsetup open --test-passphrase --disable-external-tokens --token-type none "
                       f"{slot_arg}--key-file - /dev/disk/by-uuid/{luks_uuid}; echo rc=$?", stdin=key, timeout=180)
    return r.stdout.strip().endswith("rc=0")


def test_escrowed_key_opens_the_disk_rotates_and_verify_catches_tampering(site, laptop):
    outputs = []
    (first,) = shown_keys(site)
    _, luks_uuid, slot = first["key_id"].split(":")
    assert first["state"] == "active" and slot == "2"
    assert opens(laptop, luks_uuid, first["key"], slot)
    assert not opens(laptop, luks_uuid, "000000-000000-000000-000000-000000-000000-000000-000000")

    proc = deskguard(site, "keys", "rotate", HOST, "--json")
    outputs.append(proc.stdout + proc.stderr)
    assert proc.returncode == 0, outputs[-1]
    (second,) = shown_keys(site)
    assert second["key"] != first["key"] and second["key_id"] == f"luks:{luks_uuid}:3"
    assert opens(laptop, luks_uuid, second["key"]) and not opens(laptop, luks_uuid, first["key"])

    proc = deskguard(site, "keys", "verify", "--json")
    outputs.append(proc.stdout + proc.stderr)
    assert proc.returncode == 0 and json.loads(proc.stdout)["hosts"][0]["state"] == "compliant", outputs[-1]

    # Someone re-keys the recovery slot on the laptop behind the kit's back.
    r = vm.ssh(laptop, "printf 'someone-else' > /tmp/other && sudo cryptsetup luksChangeKey -q --pbkdf pbkdf2 "
                       "--pbkdf-force-iterations 1000 --key-slot 3 --key-file - "
                       f"/dev/disk/by-uuid/{luks_uuid} /tmp/other; echo rc=$?", stdin=second["key"], timeout=180)
    assert r.stdout.strip().endswith("rc=0"), r.stdout + r.stderr
    proc = deskguard(site, "keys", "verify", "--json")
    outputs.append(proc.stdout + proc.stderr)
    report = json.loads(proc.stdout)["hosts"][0]
    assert proc.returncode == 1 and report["state"] == "noncompliant", outputs[-1]
    assert any("no longer matches" in f for f in report["findings"]), report

    # No clear key anywhere but `keys show`'s own output: not in the store, the site, the commands' output,
    # or the laptop's logs (module arguments are no_log).
    keys = [first["key"], second["key"]]
    site_bytes = b"".join(p.read_bytes() for p in site.rglob("*") if p.is_file())
    journal = vm.ssh(laptop, "sudo journalctl -o short --no-pager; sudo cat /var/log/*.log 2>/dev/null; true",
                     timeout=180).stdout
    # The grep means something: the module's invocations are in the journal, with the key masked.
    assert "ansible-deskguard_luks" in journal and "new_key=NOT_LOGGING_PARAMETER" in journal
    for key in keys:
        for form in (key, key.replace("-", "")):
            assert form.encode() not in site_bytes
            assert form not in journal and not any(form in o for o in outputs)


def test_onboarding_with_the_installer_passphrase_replaces_it_with_the_escrowed_key(site, laptop):
    """Issue 22 item 5 on the VM's real dm-crypt root: onboarding given the installer passphrase once (as
    `enrolment process --luks-passphrase-file` hands it on) escrows a fresh recovery key (the last test changed
    the escrowed slot behind the kit's back), then removes the passphrase's keyslot: the root still opens with
    the initramfs key file (how this laptop boots) and with the escrowed key, no longer with the passphrase."""
    import time
    from pathlib import Path

    from deskguard.lab.image import LaptopImage

    passphrase_file = LaptopImage(Path(laptop.extra["image"])).passphrase_file
    installer = passphrase_file.read_text()
    luks_uuid = shown_keys(site)[0]["key_id"].split(":")[1]
    assert opens(laptop, luks_uuid, installer, 0)
    started = time.monotonic()
    proc, _ = onboard(site, laptop, "--luks-passphrase-file", str(passphrase_file))
    print(f"onboarding with the installer passphrase (fresh key escrowed, passphrase retired): "
          f"{time.monotonic() - started:.0f} s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (active,) = [k for k in shown_keys(site) if k["state"] == "active"]
    assert not opens(laptop, luks_uuid, installer)
    assert opens(laptop, luks_uuid, active["key"])
    r = vm.ssh(laptop, "sudo cryptsetup open --test-passphrase --disable-external-tokens --token-type none "
                       f"--key-file /etc/keys/root.key /dev/disk/by-uuid/{luks_uuid}; echo rc=$?", timeout=180)
    assert r.stdout.strip().endswith("rc=0"), r.stdout + r.stderr
    site_bytes = b"".join(p.read_bytes() for p in site.rglob("*") if p.is_file())
    assert installer.encode() not in site_bytes
    proc = deskguard(site, "keys", "verify", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["hosts"][0]["state"] == "compliant", proc.stdout
