"""Remote wipe and lock on the lab laptop whose root is on LUKS2 (real dm-crypt, unlocked at boot by the
initramfs key file): the agent installed by onboarding, a signed order, the agent's signed acknowledgement
recorded before it acts, and the proof on the disk itself.

Each scenario destroys its laptop, so each starts from the booted snapshot and onboards the minimal role set
(disk encryption with escrow + the agent; the other controls off) - few module calls under TCG. The wiped disk
is checked by reading its LUKS header from the host; the locked one also by cold-booting it (the initramfs can
no longer unlock root). An acknowledged wipe is settled `done` with a short `orders settle --grace`.

The wipe delivered at once to a reachable laptop, and the cold boot of the wiped disk, are proven on the TPM
laptop (test_tpm_vm.py's last test: the recovery key that opened it is refused at the prompt after the wipe):
one onboarding fewer here (~176 s of the VM tier), the same proof on the stricter laptop.

The check-in proof of issue 9 (the real agent reporting through `deskguard serve`, the shut laptop judged from
it) shares the offline-wipe laptop: a laptop that can be wiped offline must first have been onboarded and
have checked in, so one boot and one onboarding serve both. Phase times are printed (`-s` to see them).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deskguard.lab import vm
from deskguard.lab.state import LabState, is_alive
from sitetools import comply_json, onboard_lab

pytestmark = pytest.mark.vm

HOST = "lap-vm1"
NAME = "lab-vm1"
SERVE_PORT = vm.port_base() + 90  # in the lab's own block of ports (2310 in the default lab)
# What the initramfs prints when the key file opens no keyslot any more (wiped or locked disk).
UNLOCK_FAILED = ("No usable keyslot", "No key available", "cryptsetup failed", "Dropping to a shell",
                 "not a valid LUKS device", "cryptsetup: ERROR")
PHASES: list[tuple[str, float]] = []


def phase(name, t0):
    took = time.monotonic() - t0
    PHASES.append((name, took))
    print(f"[wipe-vm] {name}: {took:.1f} s", file=sys.stderr)
    return time.monotonic()


def deskguard(site, *args, timeout=1800):
    from sitetools import run_deskguard

    return run_deskguard(site, *args, timeout=timeout)


def agent_site(make_site):
    site = make_site(management="10.0.2.0/24")
    policy = site / "inventory" / "group_vars" / "all" / "policy.yml"
    text = policy.read_text()
    for name in ("screen_lock", "firewall", "auto_update", "usb_control"):
        text = text.replace(f"{name}_enabled: true", f"{name}_enabled: false")
    text = text.replace("endpoint_agent_enabled: false", "endpoint_agent_enabled: true")
    text = text.replace('endpoint_agent_orders_url: ""', f'endpoint_agent_orders_url: "http://10.0.2.2:{SERVE_PORT}/orders"')
    text = text.replace('endpoint_agent_server_url: ""', f'endpoint_agent_server_url: "http://10.0.2.2:{SERVE_PORT}"'
                        '\nendpoint_agent_allow_http: true')
    # The first check-in soon after boot (the offline scenario boots the laptop and waits for it).
    text += "endpoint_agent_boot_delay_seconds: 20\nendpoint_agent_jitter_seconds: 5\n"
    policy.write_text(text)
    return site


def fresh_laptop(lab_session, lab_inventory_dir):
    """A laptop exactly as installed: any earlier (wiped) one is stopped and a new one starts from the snapshot."""
    lab_session.down(lab_inventory_dir, log=lambda m: None)
    lab_session.up(laptops=1, inventory_dir=lab_inventory_dir, log=lambda m: None)
    return LabState.load().hosts[NAME]


def onboard(site, laptop):
    proc, out = onboard_lab(site, HOST, laptop, "--yes")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    states = {c["control"]: c["state"] for c in out["controls"]}
    assert states.get("AGT-001") == "applied" and states.get("ENC-002") == "applied", out
    return out


def escrowed(site):
    proc = deskguard(site, "keys", "show", HOST, "--escrow-key", str(site / ".deskguard" / "escrow-officer.key.pem"),
                     "--passphrase-file", str(site.parent / f"{site.name}.pass"), "--reason", "vm test", "--json")
    assert proc.returncode == 0, proc.stderr
    (key,) = json.loads(proc.stdout)
    _, luks_uuid, slot = key["key_id"].split(":")
    return key["key"], luks_uuid, int(slot)


def wait_powered_off(laptop, timeout=300):
    deadline = time.monotonic() + timeout
    while is_alive(laptop):
        assert time.monotonic() < deadline, f"{NAME} did not power off within {timeout} s"
        time.sleep(1)


def console_until(host, needles, timeout=900):
    """Wait for one of `needles` on the serial console; returns the console text."""
    log = Path(host.extra["serial_log"])
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if any(n in text for n in needles):
            if "Kernel panic - not syncing" in text:   # panic=5 rebooted it (lab/vm.py): say so, it is not ours
                print(f"[wipe-vm] {NAME}'s console shows a kernel panic and a reboot before this", file=sys.stderr)
            return text
        time.sleep(2)
    pytest.fail(f"none of {needles} on {NAME}'s console within {timeout} s; its tail:\n{text[-3000:]}")


def stop(host):
    """Quit qemu through QMP (its disk caches are written out: with cache=unsafe a SIGKILL could lose the
    guest's last writes), keeping the overlay for the header check; SIGKILL only if that fails."""
    from deskguard.errors import LabError
    from deskguard.lab.qmp import monitor

    if not is_alive(host):
        return
    try:
        with monitor(Path(host.extra["qmp"]), NAME, timeout=10) as mon:
            mon.quit()
        wait_powered_off(host, 60)
    except (LabError, AssertionError):
        os.kill(host.pid, signal.SIGKILL)
        wait_powered_off(host, 30)


def header(host, tmp_path) -> Path:
    """The first 16 MiB of the laptop's disk as the guest sees it (its overlay over the snapshot and base)."""
    out = tmp_path / f"header-{time.monotonic_ns()}.img"
    subprocess.run(["qemu-img", "dd", "-f", "qcow2", "-O", "raw", "bs=1M", "count=16",
                    f"if={host.extra['overlay']}", f"of={out}"], check=True, capture_output=True)
    return out


def keyslots(image: Path):
    """Keyslot numbers in a LUKS2 header image, or None when no LUKS header is left at all."""
    proc = subprocess.run(["cryptsetup", "luksDump", "--dump-json-metadata", str(image)], capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    return sorted(int(s) for s in json.loads(proc.stdout)["keyslots"])


def opens(image: Path, key: bytes) -> bool:
    return subprocess.run(["cryptsetup", "open", "--test-passphrase", "--disable-external-tokens", "--key-file", "-",
                           "--keyfile-size", str(len(key)), str(image)], input=key, capture_output=True).returncode == 0


def store_view(site):
    from deskguard.store import Store

    with Store.open(site) as store:
        device = store.require_device(HOST)
        orders = store.list_orders(device_uuid=device.uuid)
        return device, orders, store.live_secrets(device.uuid)


# ------------------------------------------------------------- check-ins while the laptop is off (issue 9)

def agent_checks_in(laptop, times=1):
    """Run the agent's service now instead of waiting for its timer. A run already under way (the boot timer)
    is waited for first: `systemctl start` would join it, and it may have collected the posture too early."""
    start = "; ".join(["sudo -n systemctl start deskguard-agent.service"] * times)
    r = vm.ssh(laptop, "while [ \"$(systemctl show -p ActiveState --value deskguard-agent.service)\" = activating ]; "
                       f"do sleep 1; done; {start}; echo rc=$?; "
                       "sudo -n journalctl -u deskguard-agent.service -n 12 --no-pager -o cat", timeout=600)
    assert "rc=0" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
    return r.stdout


def latest_checkin(site):
    from deskguard.store import Store

    with Store.open(site) as store:
        uuid = store.require_device(HOST).uuid
        return store.latest_checkins([uuid]).get(uuid)


def shut_down(laptop):
    vm.ssh(laptop, "sync; sudo -n systemctl poweroff", timeout=60)
    wait_powered_off(laptop)


def comply_from_checkin(site, *extra_args):
    rc, report = comply_json(site, "--limit", HOST, *extra_args)
    return rc, report["hosts"][HOST]


def failing(report):
    return {cid for cid, r in report["results"].items() if r["status"] in ("fail", "error")}


# A keyslot nobody escrowed, added by hand (ENC-003): a real change to the disk, cheap with the light PBKDF.
ROGUE_KEYSLOT = ("printf 'a key nobody escrowed' > /tmp/rogue; sudo -n cryptsetup luksAddKey -q --pbkdf pbkdf2 "
                 "--pbkdf-force-iterations 1000 --key-file /etc/keys/root.key "
                 "$(sudo -n blkid -t TYPE=crypto_LUKS -o device | head -n1) /tmp/rogue; echo rc=$?")


def agent_installed(site, laptop, luks_uuid):
    """The agent onboarding installed: its config names this device and the escrowed keyslot, its key and
    config are root's alone, its timer runs, and the store holds its public key."""
    device, _, _ = store_view(site)
    r = vm.ssh(laptop, "sudo -n cat /etc/deskguard-agent/agent.json; sudo -n stat -c '%a %U' "
                       "/etc/deskguard-agent/device.key /etc/deskguard-agent/agent.json; "
                       "systemctl is-enabled deskguard-agent.timer; systemctl is-active deskguard-agent.timer")
    cfg = json.loads(r.stdout[: r.stdout.rindex("}") + 1])
    assert cfg["device_uuid"] == device.uuid and list(cfg["escrowed_keyslots"]) == [luks_uuid], cfg
    assert "600 root\n600 root\nenabled\nactive" in r.stdout, r.stdout
    assert device.agent_public_key and "BEGIN PUBLIC KEY" in device.agent_public_key


def settles_done(site, order):
    """`orders settle`: not done under the policy's 72 h grace, done with a short --grace once the laptop has
    been silent since its acknowledgement (issue 8: "done" = acknowledged, then silent)."""
    proc = deskguard(site, "orders", "settle")
    assert proc.returncode == 0 and proc.stdout.strip() == "orders: nothing to settle", proc.stdout + proc.stderr
    proc = deskguard(site, "orders", "settle", "--grace", "5s")
    assert proc.returncode == 0, proc.stderr
    assert f"order {order.id} done: no check-in for 5 seconds after the acknowledged wipe" in proc.stdout, proc.stdout
    device, orders, _ = store_view(site)
    (settled,) = [o for o in orders if o.id == order.id]
    assert settled.state == "done" and device.state == "wiped", (settled.state, device.state)


def test_off_at_night_judged_from_its_check_ins_then_wiped_at_the_first_check_in(lab_session, lab_inventory_dir,
                                                                                 make_site, tmp_path):
    """One laptop for issue 9's proof and the offline wipe (a boot and an onboarding saved): the real agent
    checks in through `deskguard serve`; with the laptop shut down, `comply` judges that check-in (source,
    age; stale past the policy's maximum age); a keyslot added by hand, a check-in, shut down: the run shows
    that failure from the check-in. Then the offline wipe: order published while it is off, acknowledged and
    carried out at its first check-in after boot, and settled `done` after the silence that follows."""
    from sitetools import serving

    from deskguard.site import inventory

    t = time.monotonic()
    laptop = fresh_laptop(lab_session, lab_inventory_dir)
    site = agent_site(make_site)
    onboard(site, laptop)
    t = phase("offline: laptop onboarded", t)
    key, luks_uuid, _ = escrowed(site)
    agent_installed(site, laptop, luks_uuid)
    with serving(site, port=SERVE_PORT):
        # Two runs: the second check-in carries the first one's success (AGT-001 wants a successful check-in).
        ran = agent_checks_in(laptop, times=2)
        checked_in = time.monotonic()
        first = latest_checkin(site)
        assert first is not None and first.payload_obj["posture"]["posture"], ran[-3000:]
        t = phase("check-in: two agent runs through deskguard serve", t)
        shut_down(laptop)
        t = phase("check-in: laptop shut down", t)

        rc, away = comply_from_checkin(site)
        assert rc == 0 and away["state"] == "ok" and away["source"] == "checkin", away
        assert away["compliant"] and failing(away) == set(), away
        assert away["evidence_at"].startswith(first.sent_at.strftime("%Y-%m-%dT%H:%M")), (away, first.sent_at)
        assert "h ago" in away["message"] and away["results"]["AGT-001"]["status"] == "pass", away
        assert away["results"]["ENC-002"]["status"] == "pass", away["results"]["ENC-002"]
        t = phase("check-in: comply judges the shut laptop from its check-in", t)

        # Stale: a real age (the check-in is older than 3.6 s by now) past a policy maximum lowered to 3.6 s.
        assert time.monotonic() - checked_in > 3.6
        inventory.add_host(site, HOST, {"deskguard_checkin_max_age_hours": 0.001})
        rc, away = comply_from_checkin(site)
        inventory.add_host(site, HOST, {"deskguard_checkin_max_age_hours": 24})
        assert rc == 3 and away["state"] == "stale" and not away["compliant"], away
        assert "older than the policy's 0.001 h" in away["message"], away
        t = phase("check-in: stale past the policy's maximum age", t)

        again = vm.boot_again(NAME, log=lambda m: None)
        t = phase("check-in: cold boot to ssh", t)
        r = vm.ssh(again, ROGUE_KEYSLOT, timeout=300)
        assert r.stdout.strip().endswith("rc=0"), r.stdout + r.stderr
        ran = agent_checks_in(again)
        broken = latest_checkin(site)
        assert broken.sent_at > first.sent_at, (broken.sent_at, first.sent_at, ran[-3000:])
        shut_down(again)
        t = phase("check-in: keyslot added by hand, check-in, shut down", t)
        rc, away = comply_from_checkin(site)
        assert rc == 1 and away["source"] == "checkin" and not away["compliant"], away
        assert failing(away) == {"ENC-003"}, {c: away["results"][c] for c in failing(away)}
        assert any("neither escrowed nor in the enrolment baseline" in e
                   for e in away["results"]["ENC-003"]["evidence"]), away["results"]["ENC-003"]
        t = phase("check-in: comply shows the failure from the check-in", t)

        # The offline wipe: the order is published while the laptop is off; `serve` is still up.
        proc = deskguard(site, "wipe", HOST, "--reason", "not returned (vm test)", "--yes", "--confirm", HOST)
        assert proc.returncode == 0 and "next check-in" in proc.stdout, proc.stdout + proc.stderr
        again = vm.boot_again(NAME, wait_ssh=False, log=lambda m: None)
        t = phase("offline: order published, laptop started", t)
        wait_powered_off(again, timeout=900)
        t = phase("offline: first check-in acknowledged, wiped, powered off", t)
    device, orders, live = store_view(site)
    (order,) = orders
    assert order.state == "acknowledged" and device.state == "wiping" and live == [], (order.state, device.state)
    raw = header(again, tmp_path)
    assert keyslots(raw) in (None, []) and not opens(raw, key.encode())
    time.sleep(max(0.0, 5.5 - (dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
                                - order.acknowledged_at).total_seconds()))
    settles_done(site, order)


def test_lock_the_laptop_does_not_boot_unattended_and_the_escrowed_key_still_opens_it(
        lab_session, lab_inventory_dir, make_site, tmp_path):
    from deskguard.lab.image import LaptopImage

    t = time.monotonic()
    laptop = fresh_laptop(lab_session, lab_inventory_dir)
    site = agent_site(make_site)
    onboard(site, laptop)
    t = phase("lock: laptop onboarded", t)
    key, luks_uuid, slot = escrowed(site)
    installer = LaptopImage(Path(laptop.extra["image"])).passphrase_file.read_bytes()

    proc = deskguard(site, "wipe", HOST, "--mode", "lock", "--reason", "operator left (vm test)", "--yes",
                     "--confirm", HOST)
    assert proc.returncode == 0 and "order and carried it out now" in proc.stdout, proc.stdout[-3000:] + proc.stderr
    t = phase("lock: deskguard wipe --mode lock", t)
    # The agent reboots the laptop; the initramfs key file opens nothing any more: it stops at the unlock.
    try:
        console_until(laptop, UNLOCK_FAILED)
        t = phase("lock: reboot stops at the disk unlock", t)
    finally:
        stop(laptop)
    raw = header(laptop, tmp_path)
    assert keyslots(raw) == [slot], keyslots(raw)
    assert opens(raw, key.encode()), "the escrowed recovery key no longer opens the locked disk"
    assert not opens(raw, installer), "the installer passphrase still opens the locked disk"
    device, orders, live = store_view(site)
    assert orders[0].state == "acknowledged" and device.state == "locked" and len(live) == 1
    print("[wipe-vm] phases: " + ", ".join(f"{n} {s:.0f}s" for n, s in PHASES), file=sys.stderr)
