"""The lab laptop's TPM 2.0 (swtpm) and its root bound to it by the disk_encryption role (issue 21, ENC-004).

One laptop for the whole file, four cold boots after the restore (docs/lab-vm.md "TPM"; phase times printed):
  1. restored from the booted snapshot: the TPM is there (/dev/tpmrm0) and SeaBIOS measured the boot;
     `deskguard onboard` with `disk_encryption_linux_unlock: tpm2` and the check-in agent (the other roles off)
     escrows the recovery key, then binds the root to the TPM (clevis TPM2 pin, PCRs 0, 2, 7), removes the
     initramfs key file and rebuilds the initramfs;
  2. a lock order (`deskguard wipe --mode lock`, carried out by the agent) removes the binding's keyslot and
     token; the agent's reboot ends the VM (qemu's reboot action set to shut down) and the cold boot that
     follows, from the laptop's own initrd, stops at the passphrase prompt; only the escrowed recovery key
     (`keys show`) is left on the disk and opens it; re-onboarding with the officer's key binds it again;
  3. cold boot: unattended through the TPM (no key file anywhere); the nightly run passes ENC-004;
  4. cold boot with a changed option ROM (a tampered boot: SeaBIOS measures it into PCR 2): the boot stops
     at the passphrase prompt on the serial console; the escrowed recovery key read with `keys show` unlocks
     it; PCR 2 differs; the nightly run fails ENC-004 (the TPM no longer releases the key) and `comply --fix`
     with the officer's key re-binds it;
  5. cold boot of the same disk with another TPM (the disk moved into another machine): the prompt again;
     the recovery key opens it, and a wipe order, delivered at once and acknowledged, erases every keyslot and
     token (the binding's included), read back from the disk's header on the host; a last cold boot never
     unlocks root (no LUKS device left to find, or the recovery key refused at the prompt); `orders settle
     --grace` closes the order.
The lock and wipe helpers are test_wipe_vm.py's (that file proves the same orders on a key-file laptop).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from deskguard.errors import LabError
from deskguard.lab import tpm, vm
from deskguard.lab.state import LabState, is_alive
from keyvalues import key_values
from sitetools import comply_json, onboard_lab, run_deskguard
from test_wipe_vm import (  # the lock/wipe helpers of the key-file laptop's order tests
    UNLOCK_FAILED,
    agent_site,
    console_until,
    escrowed,
    header,
    keyslots,
    opens,
    settles_done,
    stop,
    store_view,
    wait_powered_off,
)

pytestmark = pytest.mark.vm

NAME, HOST = "lab-vm1", "lap-vm1"
PCRS = "0,2,7"  # the lab policy's PCRs (docs/disk-encryption.md: what SeaBIOS measures where)
PROMPT = "Please unlock disk root"
UNLOCKED = "cryptsetup: root: set up successfully"
# A tampered boot: the NIC's option ROM changed (iPXE's legacy PXE image instead of qemu's default one).
TAMPER = ("-global", "virtio-net-pci.romfile=pxe-virtio.rom")
# A boot the TPM must not unlock: once the prompt is up, the initramfs's clevis script (local-top/clevis)
# tries the clevis token, and after a failed try sleeps 5 s and tries again. Instead of watching the prompt for
# a minute the test reads the TPM's own answers (swtpm logging this boot's commands): it waits until the TPM
# has refused REFUSALS tries, then GRACE seconds more, and no Unseal may have succeeded nor root unlocked.
REFUSALS = 2  # the first try and the loop's retry: the refusal is the TPM's answer every time, not a fluke
REFUSAL_TIMEOUT = 240.0  # seconds from the prompt (each try takes seconds under TCG; generous for a busy host)
GRACE = 5.0
# After a lock the disk has no token left (read back below), so nothing can answer the prompt: a shorter look.
LOCKED_WAIT = 20.0
PHASES: list[tuple[str, float]] = []


def phase(name: str, t0: float) -> float:
    took = time.monotonic() - t0
    PHASES.append((name, took))
    print(f"[tpm-vm] {name}: {took:.1f} s", file=sys.stderr)
    return time.monotonic()


def _run(host, script: str, timeout: float = 600, stdin: str | None = None) -> dict[str, str]:
    res = vm.ssh(host, script, timeout=timeout, stdin=stdin)
    assert res.returncode == 0, f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    return key_values(res.stdout)


def _console(host) -> str:
    path = Path(host.extra["serial_log"])
    return path.read_text(errors="replace") if path.exists() else ""


def _wait_console(host, needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = _console(host)
        if needle in text:
            return text
        if not is_alive(host):
            break
        time.sleep(1)
    raise AssertionError(f"{needle!r} not on {host.name}'s serial console within {timeout:.0f} s; "
                         f"last lines:\n" + "\n".join(_console(host).splitlines()[-15:]))


def _tpm_commands(host) -> list[tuple[int, int]]:
    return tpm.commands(tpm.log_path(Path(host.extra["dir"])))


def _wait_refused_then_no_unlock(host, what: str) -> None:
    """After the prompt: the TPM refuses clevis's tries, and GRACE seconds later root is still locked."""
    t0 = time.monotonic()
    while len(tpm.refusals(pairs := _tpm_commands(host))) < REFUSALS:
        assert UNLOCKED not in _console(host), f"{what} unlocked by itself"
        assert time.monotonic() - t0 < REFUSAL_TIMEOUT and is_alive(host), (
            f"not {REFUSALS} TPM refusals of clevis's Load/Unseal within {time.monotonic() - t0:.0f} s of the prompt; "
            f"TPM commands: {[(hex(c), hex(r)) for c, r in pairs]}")
        time.sleep(1)
    print(f"[tpm-vm] {what}: the TPM refused {[(hex(c), hex(r)) for c, r in tpm.refusals(pairs)]} "
          f"{time.monotonic() - t0:.1f} s after the prompt ({len(pairs)} commands so far)", file=sys.stderr)
    time.sleep(GRACE)
    assert (tpm.CC_UNSEAL, 0) not in _tpm_commands(host), f"{what}: the TPM unsealed a key"
    assert UNLOCKED not in _console(host), f"{what} unlocked by itself"


def _power_off(host) -> None:
    try:
        vm.ssh(host, "sudo -n systemctl poweroff", timeout=30)
    except LabError:
        pass  # the connection may hang up as the laptop goes down: whether it went is checked below
    deadline = time.monotonic() + 120
    while is_alive(LabState.load().hosts[NAME]) and time.monotonic() < deadline:
        time.sleep(1)
    assert not is_alive(LabState.load().hosts[NAME]), "the laptop did not power off"


PCR_SCRIPT = r"""
sudo -n tpm2_pcrread sha256:0,1,2,3,4,5,6,7 | sed -n 's/^ *\([0-7]\) *: *0x\([0-9A-F]*\)$/PCR\1=\2/p'
"""


@pytest.fixture(scope="module")
def laptop(lab_session, lab_inventory_dir):
    """A fresh laptop from the booted snapshot (the tests here change its disk), taken down afterwards."""
    lab_session.down(lab_inventory_dir, names=[NAME], log=lambda m: None)
    lab_session.up(laptops=1, inventory_dir=lab_inventory_dir, log=lambda m: None)
    yield LabState.load().hosts[NAME]
    lab_session.down(lab_inventory_dir, names=[NAME], log=lambda m: None)
    for name, took in PHASES:
        print(f"[tpm-vm] {name}: {took:.1f} s", file=sys.stderr)


def test_the_laptop_has_a_tpm_2_0_that_measured_its_boot(laptop):
    r = _run(laptop, r"""
. /etc/os-release; echo "CODENAME=$VERSION_CODENAME"
echo "TPMRM=$(test -c /dev/tpmrm0 && echo yes || echo no)"
echo "VERSION=$(cat /sys/class/tpm/tpm0/tpm_version_major)"
sudo -n tpm2_eventlog /sys/kernel/security/tpm0/binary_bios_measurements 2>/dev/null \
  | sed -n 's/^ *PCRIndex: *\([0-9]*\)$/\1/p' | sort -n | uniq -c | awk '{printf "EVENTS%s=%s\n", $2, $1}'
""" + PCR_SCRIPT)
    print(f"[tpm-vm] measured: {r}", file=sys.stderr)
    assert r["TPMRM"] == "yes" and r["VERSION"] == "2"
    for pcr in range(8):
        assert r[f"PCR{pcr}"] != "0" * 64, f"PCR {pcr} was never extended"
    # SeaBIOS (qemu -kernel boot): SMBIOS into PCR 1, option ROMs (linuxboot, the NIC's iPXE) into PCR 2.
    assert int(r.get("EVENTS2", "0")) >= 2, r


@pytest.fixture(scope="module")
def site(make_site):
    """A site whose policy binds the root to the TPM, with the check-in agent (lock and wipe orders are carried
    out by it: test_wipe_vm.py's agent site); the roles this file is not about are off (few module calls under
    TCG). No `deskguard serve` runs here, so the agent never checks in: AGT-001 is waived, or `comply --fix`
    would re-run the agent role for it."""
    site = agent_site(make_site)
    policy = site / "inventory" / "group_vars" / "all" / "policy.yml"
    text = policy.read_text()
    for name in ("accounts", "software_policy", "network_posture"):
        text = text.replace(f"{name}_enabled: true", f"{name}_enabled: false")
    policy.write_text(text + "disk_encryption_linux_unlock: tpm2\ndisk_encryption_tpm2_pcr_ids: [0, 2, 7]\n"
                      "deskguard_waivers:\n  - control: AGT-001\n    reason: \"lab TPM test: no check-in server\"\n"
                      "    expires: 2099-12-31\n")
    return site


def officer_env(site) -> dict:
    return {"DESKGUARD_OFFICER_KEY_FILE": str(site / ".deskguard" / "escrow-officer.key.pem"),
            "DESKGUARD_OFFICER_PASSPHRASE_FILE": str(site.parent / f"{site.name}.pass")}


def recovery_key(site) -> str:
    """The escrowed recovery key, read as IT would read it (audited)."""
    env = officer_env(site)
    proc = run_deskguard(site, "keys", "show", HOST, "--escrow-key", env["DESKGUARD_OFFICER_KEY_FILE"],
                         "--passphrase-file", env["DESKGUARD_OFFICER_PASSPHRASE_FILE"], "--reason", "vm test",
                         "--json")
    assert proc.returncode == 0, proc.stderr
    (key,) = json.loads(proc.stdout)
    return key["key"]


def enc004(site, *extra, env=None) -> tuple[int, dict]:
    if env:
        proc = subprocess.run([sys.executable, "-m", "deskguard", "comply", "--format", "json", "--limit", HOST,
                               *extra, "--site", str(site)], check=False, capture_output=True, text=True, timeout=1800,
                              env={**os.environ, **env})
        assert proc.stdout.strip().startswith("{"), proc.stdout[-2000:] + proc.stderr[-2000:]
        rc, report = proc.returncode, json.loads(proc.stdout)
    else:
        rc, report = comply_json(site, "--limit", HOST, *extra)
    return rc, report["hosts"][HOST]["results"]["ENC-004"]


BINDING_SCRIPT = r"""
dev=$(sudo -n cryptsetup status root | awk '$1 == "device:" {print $2}')
sudo -n cryptsetup luksDump --dump-json-metadata "$dev" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print("SLOTS=" + ",".join(sorted(d["keyslots"], key=int)))
print("TOKENS=%d" % len(d["tokens"]))
print("CLEVIS=%d" % sum(t.get("type") == "clevis" for t in d["tokens"].values()))'
echo "CRYPTTAB_KEY=$(awk '$1 == "root" {print $3}' /etc/crypttab)"
test -e /etc/keys/root.key; echo "KEYFILE=$?"
"""


def onboard_with_officer_key(site, laptop):
    """`deskguard onboard` again, with the officer's key in the environment: the way back from a lock
    (docs/agent.md: the lock left no key file and no binding, so the binding is made with the escrowed key)."""
    def run(site, *args):
        return subprocess.run([sys.executable, "-m", "deskguard", *args, "--site", str(site)], check=False,
                              capture_output=True, text=True, timeout=1800, env={**os.environ, **officer_env(site)})
    return onboard_lab(site, HOST, laptop, "--yes", run=run)


def ends_at_its_reboot(host) -> None:
    """A laptop reboot ends its qemu instead (QMP set-action reboot=shutdown), so that the boot after it is a
    boot_again from the laptop's own initrd (a restored VM still runs the image's), with the console's input
    on: the lab's bootloader."""
    from deskguard.lab.qmp import monitor

    with monitor(Path(host.extra["qmp"]), NAME, timeout=10) as mon:
        mon.cmd("set-action", reboot="shutdown")


def test_onboarding_binds_the_root_to_the_tpm(laptop, site):
    t0 = time.monotonic()
    proc, out = onboard_lab(site, HOST, laptop, "--yes")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    states = {c["control"]: c["state"] for c in out["controls"]}
    assert states.get("ENC-002") == "applied" and states.get("ENC-004") == "applied", out["controls"]
    assert states.get("AGT-001") == "applied", out["controls"]
    t0 = phase("onboarding: escrow, TPM binding, initramfs rebuilt in the guest, agent", t0)
    r = _run(laptop, r"""
listing=$(sudo -n lsinitramfs /boot/initrd.img-$(uname -r))
echo "KEYFILES_IN_INITRD=$(printf '%s\n' "$listing" | grep -c 'cryptroot/keyfiles/' || true)"
echo "CLEVIS_IN_INITRD=$(printf '%s\n' "$listing" | grep -c 'bin/clevis-decrypt-tpm2$' || true)"
""" + BINDING_SCRIPT, timeout=300)
    assert r["KEYFILES_IN_INITRD"] == "0", "the initramfs still carries a key file"
    assert int(r["CLEVIS_IN_INITRD"]) >= 1, "the initramfs has no clevis TPM2 pin"
    assert r["CLEVIS"] == "1" and r["CRYPTTAB_KEY"] == "none" and r["KEYFILE"] != "0", r
    # qemu boots the kernel and initrd on its command line: from now on, the laptop's own rebuilt initrd.
    vm.take_guest_initrd(laptop)


def test_a_lock_removes_the_binding_only_the_recovery_key_opens_it_and_onboarding_binds_again(laptop, site):
    """Issue 21 item 5: BitLocker-like lock. The TPM still holds the same measurements, so the prompt that
    stays is the lock's doing, not a changed boot."""
    from deskguard.lab.access import wait_for_ssh
    from deskguard.lab.image import LaptopImage

    t0 = time.monotonic()
    key, _, slot = escrowed(site)
    installer = LaptopImage(Path(laptop.extra["image"])).passphrase_file.read_bytes()
    ends_at_its_reboot(laptop)
    proc = run_deskguard(site, "wipe", HOST, "--mode", "lock", "--reason", "left in a taxi (vm test)", "--yes",
                         "--confirm", HOST)
    assert proc.returncode == 0 and "order and carried it out now" in proc.stdout, proc.stdout[-3000:] + proc.stderr
    wait_powered_off(laptop)
    device, orders, live = store_view(site)
    assert orders[0].state == "acknowledged" and device.state == "locked" and len(live) == 1, (orders, device.state)
    t0 = phase("lock: order acknowledged and carried out, the agent's reboot", t0)

    host = vm.boot_again(NAME, wait_ssh=False, console_input=True, log=lambda m: None)
    _wait_console(host, PROMPT, 480)
    t0 = phase("lock: cold boot to the prompt", t0)
    time.sleep(LOCKED_WAIT)
    assert UNLOCKED not in _console(host), "a locked laptop unlocked by itself"
    vm.console_type(host, key + "\r")       # the escrowed recovery key, as IT reads it out to the operator
    _wait_console(host, UNLOCKED, 120)
    wait_for_ssh(host, vm.COLD_BOOT_TIMEOUT)
    t0 = phase("lock: recovery key typed to SSH", t0)
    r = _run(host, BINDING_SCRIPT + r"""
sudo -n cryptsetup open --test-passphrase --disable-external-tokens --key-file - "$dev"; echo "INSTALLER=$?"
""", stdin=installer.decode())
    # Only the escrowed slot is left: the binding's slot, its token and the installer's slot are gone.
    assert r["SLOTS"] == str(slot) and r["TOKENS"] == "0", r
    assert r["INSTALLER"] != "0", "the installer passphrase still opens the locked disk"
    assert r["CRYPTTAB_KEY"] == "none" and r["KEYFILE"] != "0", r

    proc, out = onboard_with_officer_key(site, host)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    states = {c["control"]: c["state"] for c in out["controls"]}
    assert states.get("ENC-004") == "applied", out["controls"]
    r = _run(host, BINDING_SCRIPT)
    assert r["CLEVIS"] == "1" and len(r["SLOTS"].split(",")) == 2 and str(slot) in r["SLOTS"].split(","), r
    device, orders, _ = store_view(site)
    # The lock is over once the laptop is onboarded again: left open it refused the later wipe (found here).
    assert device.state == "onboarded" and orders[0].state == "done", (device.state, orders[0].state)
    phase("lock: re-onboarding binds the TPM again", t0)


def test_it_boots_unattended_through_the_tpm(laptop, site):
    """After the first binding, and since the lock, after the binding re-made by re-onboarding."""
    host = LabState.load().hosts[NAME]
    _power_off(host)
    t0 = time.monotonic()
    host = vm.boot_again(NAME, log=lambda m: None, tpm_log=True)
    t0 = phase("cold boot, unattended TPM unlock, to SSH", t0)
    assert UNLOCKED in _console(host)
    # The refusal the next two boots wait for is specific: this boot's Unseal succeeded and nothing was refused
    # (a Load answered TPM_RC_RETRY, then 0, is a warning: tpm.is_error).
    pairs = _tpm_commands(host)
    print(f"[tpm-vm] bound boot: {len(pairs)} TPM commands, Unseal answers "
          f"{[hex(r) for c, r in pairs if c == tpm.CC_UNSEAL]}", file=sys.stderr)
    assert (tpm.CC_UNSEAL, 0) in pairs and not tpm.refusals(pairs), [(hex(c), hex(r)) for c, r in pairs]
    r = _run(host, "echo SOURCE=$(findmnt -no SOURCE /)")
    assert r["SOURCE"] == "/dev/mapper/root"
    _rc, result = enc004(site)
    assert result["status"] == "pass", result
    phase("nightly run: ENC-004 passes", t0)


def test_a_tampered_boot_stops_at_the_prompt_the_recovery_key_opens_it_and_fix_rebinds(laptop, site):
    host = LabState.load().hosts[NAME]
    before = _run(host, PCR_SCRIPT)
    key = recovery_key(site)
    _power_off(host)
    t0 = time.monotonic()
    host = vm.boot_again(NAME, wait_ssh=False, extra_args=TAMPER, console_input=True, log=lambda m: None,
                         tpm_log=True)
    _wait_console(host, PROMPT, 480)
    t0 = phase("tampered cold boot to the prompt", t0)
    _wait_refused_then_no_unlock(host, "a tampered boot")
    # Refused at the Unseal: the PCR policy fails (0x99D in the lab), since PCR 2 differs.
    assert any(cc == tpm.CC_UNSEAL for cc, _ in tpm.refusals(_tpm_commands(host))), "not refused by the PCR policy"
    vm.console_type(host, key + "\r")       # the escrowed recovery key, as IT reads it out to the operator
    _wait_console(host, UNLOCKED, 120)
    from deskguard.lab.access import wait_for_ssh

    wait_for_ssh(host, vm.COLD_BOOT_TIMEOUT)
    t0 = phase("recovery key typed to SSH", t0)
    after = _run(host, PCR_SCRIPT)
    assert after["PCR2"] != before["PCR2"], "the changed option ROM was not measured into PCR 2"
    assert after["PCR0"] == before["PCR0"] and after["PCR7"] == before["PCR7"]
    # The nightly run sees it: the TPM no longer releases the key on this boot's measurements.
    rc, result = enc004(site)
    assert rc == 1 and result["status"] == "fail", result
    assert any("no longer releases" in e for e in result["evidence"]), result
    # --fix re-binds on today's PCRs, unlocking with the escrowed recovery key (the officer's key opens it).
    rc, result = enc004(site, "--fix", env=officer_env(site))
    assert result["status"] == "pass", result
    r = _run(host, r"""
dev=$(sudo -n cryptsetup status root | awk '$1 == "device:" {print $2}')
echo "TOKENS=$(sudo -n cryptsetup luksDump "$dev" | grep -c ': clevis$' || true)"
""")
    assert r["TOKENS"] == "1", r
    phase("ENC-004 fails, --fix re-binds", t0)


def test_the_disk_in_another_machine_does_not_unlock_and_a_wipe_destroys_every_keyslot_and_token(
        laptop, site, tmp_path):
    from deskguard.lab.access import wait_for_ssh

    host = LabState.load().hosts[NAME]
    key = recovery_key(site)
    _power_off(host)
    t0 = time.monotonic()
    host = vm.boot_again(NAME, wait_ssh=False, fresh_tpm=True, console_input=True, log=lambda m: None,
                         tpm_log=True)
    _wait_console(host, PROMPT, 480)
    _wait_refused_then_no_unlock(host, "the disk with another machine's TPM")
    # Refused at the Load: the sealed object was made by another TPM (TPM_RC_INTEGRITY, 0x1DF, in the lab).
    assert any(cc == tpm.CC_LOAD for cc, _ in tpm.refusals(_tpm_commands(host))), "not refused at the Load"
    t0 = phase("another TPM: prompt, no unlock", t0)

    # Issue 21 item 5: the wipe. The disk still carries its binding (to the first TPM): the wipe must take it.
    vm.console_type(host, key + "\r")
    _wait_console(host, UNLOCKED, 120)
    wait_for_ssh(host, vm.COLD_BOOT_TIMEOUT)
    r = _run(host, BINDING_SCRIPT)
    assert r["CLEVIS"] == "1", r
    t0 = phase("wipe: recovery key typed to SSH", t0)
    proc = run_deskguard(site, "wipe", HOST, "--reason", "stolen (vm test)", "--yes", "--confirm", HOST)
    assert proc.returncode == 0 and "order and carried it out now" in proc.stdout, proc.stdout[-3000:] + proc.stderr
    wait_powered_off(host)
    t0 = phase("wipe: order acknowledged and carried out, powered off", t0)
    device, orders, live = store_view(site)
    assert orders[-1].state == "acknowledged" and device.state == "wiping" and live == [], (orders, device.state)
    raw = header(host, tmp_path)
    assert keyslots(raw) in (None, []), keyslots(raw)
    assert tokens(raw) in (None, []), tokens(raw)
    assert not opens(raw, key.encode()), "the escrowed recovery key still opens the wiped disk"
    t0 = phase("wipe: header read on the host", t0)

    # The wiped disk no longer boots. With its header gone (the erase's discard zeroes it on the overlay) the
    # initramfs never finds the LUKS device and gives up on root; with a header but no keyslot it prompts,
    # and the recovery key that opened it minutes ago is refused.
    host = vm.boot_again(NAME, wait_ssh=False, console_input=True, log=lambda m: None)
    try:
        text = console_until(host, (PROMPT, *UNLOCK_FAILED), 480)
        if not any(n in text for n in UNLOCK_FAILED):
            vm.console_type(host, key + "\r")
            text = console_until(host, UNLOCK_FAILED, 180)
    finally:
        stop(host)
    assert UNLOCKED not in text, "the wiped disk unlocked"
    t0 = phase("wipe: cold boot, root never unlocked", t0)
    settles_done(site, orders[-1])
    phase("wipe: orders settle --grace: done", t0)


def tokens(image: Path):
    """Token types in a LUKS2 header image, or None when no LUKS header is left at all."""
    proc = subprocess.run(["cryptsetup", "luksDump", "--dump-json-metadata", str(image)], check=False,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    return sorted(t.get("type", "?") for t in json.loads(proc.stdout)["tokens"].values())
