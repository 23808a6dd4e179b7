"""VPN end to end on the laptop VM (real kernel WireGuard, wg-quick, nftables kill switch) against the lab
gateway: userspace wireguard-go in the `dgvpn-gw` namespace on the controller, reached through qemu's user
network. The laptop is a drop-shipped one (issue 22's lab proof on a real kernel, a real LUKS root and a real
systemd boot), onboarded once (module scope):

1. A fresh laptop VM from the booted snapshot. The enrolment package (`deskguard enrolment package`: IT's key =
   the lab key, the token's operator, a real `deskguard serve` over HTTPS at 10.0.2.2 with its CA pinned) is
   put on it over the lab's SSH and installed as the Debian installer installs it: with no systemd running
   (`/run/systemd` hidden), so its postinst only enables the first-boot unit. This stands in for the installer
   (`installer preseed`), whose real install this machine's mirror blocks (docs/enrolment.md).
2. The home router: qemu's forward of the controller's port to the laptop's SSH is removed in the running qemu
   (`hostfwd_remove`) and the laptop reboots; the controller's SSH to it is then refused.
3. On that real first boot systemd starts the unit: the laptop enrols (the store has it), and its kernel
   WireGuard tunnel reaches the gateway (a handshake seen on the gateway once it was pushed).
4. The controller routes this lab's pool into the gateway's namespace (a veth; the gateway masquerades into
   the tunnel); `deskguard enrolment process` onboards the laptop over its VPN address, and `deskguard comply`
   passes, both through the tunnel only (the laptop's SSH log names only the gateway's address).
5. The forward is put back for the lab's own checks. Then: the tunnel carries a ping, the gateway lists exactly
   the enrolled peer, a second onboarding (through the tunnel) changes nothing, rotation through the tunnel is
   refused before the laptop is touched (it once cut the laptop off: see the test) and the tunnel keeps working,
   removal stops the handshakes, and the laptop's private key is nowhere but on the laptop."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deskguard.lab import vm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import labgateway  # noqa: E402

pytestmark = pytest.mark.vm
NAME, HOST = "lab-vm1", "lap-vm1"
OPERATOR = "tanaka"
OUTPUTS: list[str] = []
_spec = importlib.util.spec_from_file_location("wincerts", Path(__file__).parents[1] / "windows" / "certs.py")
certs = sys.modules.setdefault("wincerts", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(certs)
POOL, GATEWAY_ADDRESS = labgateway.vm_pool()
LAPTOP_ADDRESS = POOL.replace(".0/24", ".2")


def deskguard(site, *args):
    from sitetools import run_deskguard

    proc = run_deskguard(site, *args)
    OUTPUTS.append(proc.stdout + proc.stderr)
    return proc


@pytest.fixture(scope="module")
def gateway():
    gw = labgateway.start()
    try:
        labgateway.route_pool(gw, POOL, GATEWAY_ADDRESS)
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def laptop(lab_session, lab_inventory_dir, lab_laptop):
    """Fresh from the booted snapshot, as installed: an earlier module may have onboarded the session's VM."""
    lab_session.down(lab_inventory_dir, names=[NAME], log=lambda m: None)
    return lab_session.up(laptops=1, inventory_dir=lab_inventory_dir, log=lambda m: None).hosts[NAME]


@pytest.fixture(scope="module")
def site(make_site, gateway):
    from deskguard.lab.sites import set_policy_lines

    site = labgateway.use_in_site(make_site(management="10.0.2.0/24"), gateway, "10.0.2.0/24")
    # IT's SSH arrives through the tunnel from the gateway's address in the pool (it masquerades): the firewall's
    # management sources name the pool, as a site that manages laptops over its VPN must (docs/enrolment.md).
    set_policy_lines(site, {"vpn_pool": POOL, "firewall_management_sources": ["10.0.2.0/24", POOL]},
                     "enrol through this lab's gateway", appended={"vpn_gateway_address": GATEWAY_ADDRESS},
                     note="issue 22 lab: this lab's pool")
    return site


def ssh_reaches(laptop) -> bool:
    """The controller's SSH to the laptop outside the tunnel (qemu's forwarded port), with the lab key."""
    from deskguard.lab.image import lab_key

    r = subprocess.run(["ssh", "-i", str(lab_key()), "-p", str(laptop.port), "-o", "BatchMode=yes",
                        "-o", "ConnectTimeout=10", "-o", "StrictHostKeyChecking=no", "-o",
                        "UserKnownHostsFile=/dev/null", f"dgadmin@{laptop.address}", "true"],
                       capture_output=True, timeout=60)
    return r.returncode == 0


def on_laptop(laptop, command: str, timeout: float = 120, stdin: str | None = None):
    """A lab check on the laptop over qemu's forward (put back after the onboarding); an SSH that did not get
    in fails here with its own words, never as an empty answer a test could read as "no"."""
    r = vm.ssh(laptop, command, timeout=timeout, stdin=stdin)
    assert r.returncode != 255, f"SSH to the laptop failed: {r.stderr[-2000:]}"
    return r


def enrolment_package(site, server_url: str, ca: Path, out: Path) -> Path:
    from deskguard.lab.image import lab_key
    from deskguard.store import Store

    with Store.open(site) as store:
        _row, token = store.create_enrolment_token(uses=1, operator=OPERATOR)
    proc = deskguard(site, "enrolment", "package", "--token", token, "--ssh-public-key", f"{lab_key()}.pub",
                     "--ca-file", str(ca), "--server-url", server_url, "--hostname", HOST, "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def install_as_the_installer_does(laptop, deb: Path) -> None:
    """dpkg -i with /run/systemd hidden (a private mount namespace): the postinst sees no systemd running, as in
    the installer's target, and only enables the first-boot unit for the next boot."""
    r = vm.ssh(laptop, "base64 -d > /var/tmp/deskguard-enrol.deb && sudo unshare -m sh -c 'mount -t tmpfs none "
                       "/run/systemd && dpkg -i /var/tmp/deskguard-enrol.deb' >/dev/null && sync && "
                       "systemctl is-enabled deskguard-enrol; systemctl is-active deskguard-enrol; "
                       "sudo test -e /etc/wireguard/wg0.key && echo key-made", stdin=base64.b64encode(
                           deb.read_bytes()).decode(), timeout=300)
    # Enabled, not started, and nothing made yet: the first boot does that.
    assert r.stdout.split() == ["enabled", "inactive"], r.stdout + r.stderr


def wait_until(what, seconds: float, step: float = 3.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        got = what()
        if got:
            return got
        time.sleep(step)
    return None


@pytest.fixture(scope="module")
def enrolled(site, laptop, gateway, tmp_path_factory):
    """Steps 1-5 of the module's docstring; returns what `enrolment process` and `comply` said."""
    from deskguard.lab.access import wait_for_ssh
    from deskguard.lab.image import lab_key
    from deskguard.store import Store
    from sitetools import serving

    took: dict[str, float] = {}
    started = time.monotonic()
    pki = tmp_path_factory.mktemp("pki")
    ca, ca_key = certs.make_ca(pki)
    cert = certs.issue(pki, ca, ca_key, addresses=("10.0.2.2",))    # the controller, as the laptop sees it
    served: list[str] = []
    with serving(site, tls=(cert.cert, cert.key), output=served) as port:
        deb = enrolment_package(site, f"https://10.0.2.2:{port}", ca.cert, pki / "enrol.deb")
        install_as_the_installer_does(laptop, deb)
        took["package built and installed"] = time.monotonic() - started
        vm.ssh(laptop, "sudo systemd-run --on-active=2 systemctl reboot", timeout=60)
        vm.set_ssh_forward(laptop, present=False)                      # the home router
        assert not ssh_reaches(laptop), "the controller still reaches the laptop's SSH outside the tunnel"
        mark = time.monotonic()

        def enrolled_device():
            with Store.open(site) as store:
                d = store.get_device(HOST)
            return d if d is not None and d.state == "enrolled" else None

        device = wait_until(enrolled_device, 600)
        took["reboot to enrolled (first boot)"] = time.monotonic() - mark
        assert device is not None, "the laptop did not enrol after its first boot: " + "".join(served)[-2000:]
    assert (device.address, device.ssh_user, device.operator) == (LAPTOP_ADDRESS, "deskguard", OPERATOR)
    mark = time.monotonic()
    # The gateway learns the laptop's key; a handshake shows the laptop's tunnel reached it.
    assert deskguard(site, "vpn", "push-gateway").returncode == 0, OUTPUTS[-1][-3000:]
    with Store.open(site) as store:
        key = store.vpn_peer(device.uuid).public_key
    assert wait_until(lambda: gateway.handshakes().get(key, 0) > 0, 180), gateway.handshakes()
    took["gateway pushed to first handshake"] = time.monotonic() - mark
    mark = time.monotonic()
    proc = deskguard(site, "enrolment", "process", "--ssh-key", str(lab_key()), "--json")
    retried = proc.returncode == 3
    if retried:
        # Unreachable (seen once at host load 26: sudo on the laptop answered after Ansible's 22 s): the laptop
        # stays `enrolled` and the next run takes it, as from the documented timer. Said in the output.
        print("enrolment process: unreachable on the first run, run again:", proc.stdout[-1500:])
        proc = deskguard(site, "enrolment", "process", "--ssh-key", str(lab_key()), "--json")
    took["enrolment process (onboarding through the tunnel)"] = time.monotonic() - mark
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    processed = json.loads(proc.stdout)
    mark = time.monotonic()
    comply = deskguard(site, "comply", "--limit", HOST, "--format", "json")
    took["comply through the tunnel"] = time.monotonic() - mark
    assert comply.stdout.startswith("{"), comply.stderr[-3000:]
    reached_outside = ssh_reaches(laptop)
    vm.set_ssh_forward(laptop, present=True)                          # the lab's own checks from here on
    wait_for_ssh(laptop, 120)
    took["whole enrolment path"] = time.monotonic() - started
    print("\n".join(f"{k}: {v:.0f} s" for k, v in took.items()))
    return {"device": device, "key": key, "process": processed, "comply": (comply.returncode,
            json.loads(comply.stdout)), "reached_outside": reached_outside, "retried": retried}


def test_the_drop_shipped_laptop_enrols_and_is_onboarded_through_its_tunnel(site, laptop, gateway, enrolled):
    from deskguard.store import Store

    [row] = enrolled["process"]["laptops"]
    assert (row["hostname"], row["state"], row["address"]) == (HOST, "onboarded", LAPTOP_ADDRESS), enrolled
    assert enrolled["process"]["gateways"] == "pushed"
    code, report = enrolled["comply"]
    host = report["hosts"][HOST]
    assert code == 0 and host["compliant"], {c: r for c, r in host["results"].items() if r["status"] != "pass"}
    assert {c: host["results"][c]["status"] for c in ("VPN-001", "VPN-002", "VPN-003")} == {
        "VPN-001": "pass", "VPN-002": "pass", "VPN-003": "pass"}, host["results"]
    assert not enrolled["reached_outside"], "the home router fell while the laptop was onboarded"
    with Store.open(site) as store:
        assert store.require_device(HOST).state == "onboarded"
    # On the laptop: the first boot ran under systemd and spent the token; the management account is key-only;
    # every login of it came through the tunnel (from the gateway's address), none from outside.
    r = on_laptop(laptop, "systemctl show -p ActiveState,Result deskguard-enrol; sudo test -e "
                       "/etc/deskguard-agent/enrolment-token && echo token-left || echo token-gone; sudo passwd -S deskguard; "
                       "sudo journalctl --no-pager -o cat -t sshd -t sshd-session | grep 'Accepted publickey for "
                       "deskguard' | awk '{print $6}' | sort | uniq -c", timeout=120)
    out = r.stdout
    assert "Result=success" in out and "token-gone" in out, (out, r.stderr)
    [account] = [line.split() for line in out.splitlines() if line.startswith("deskguard ")]
    assert account[1] == "L", out                 # locked: no password to log in with, key only
    sources = [line.split()[1] for line in out.splitlines() if re.fullmatch(r"\s*\d+ \S+", line)]
    assert sources == [GATEWAY_ADDRESS], out


def ping_gateway(laptop):
    r = on_laptop(laptop, f"ping -c 3 -W 5 {GATEWAY_ADDRESS} >/dev/null; echo rc=$?", timeout=120)
    return r.stdout.strip().endswith("rc=0")


def laptop_key(laptop) -> str:
    """Read on the laptop only to prove it appears nowhere else (never printed)."""
    return on_laptop(laptop, "sudo cat /etc/wireguard/wg0.key", timeout=60).stdout.strip()


def test_the_tunnel_carries_a_ping_and_the_gateway_has_the_enrolled_peer(site, laptop, gateway, enrolled):
    peers = json.loads(deskguard(site, "vpn", "gateway-config", "--format", "json").stdout)["peers"]
    assert [(p["hostname"], p["address"]) for p in peers] == [(HOST, LAPTOP_ADDRESS)]
    # The key the laptop made at its first boot, kept by onboarding; the gateway carries exactly it.
    assert peers[0]["public_key"] == enrolled["key"] and gateway.peers() == [enrolled["key"]]
    assert ping_gateway(laptop)
    r = on_laptop(laptop, "sudo stat -c '%a %U' /etc/wireguard/wg0.key; sudo wg show wg0 public-key; "
                       "ping -c 1 -W 2 192.0.2.1 >/dev/null 2>&1; sudo nft list table inet deskguard_vpn", timeout=120)
    lines = r.stdout.splitlines() or [r.stderr]
    assert lines[0] == "600 root" and lines[1] == peers[0]["public_key"], (r.returncode, r.stdout, r.stderr)
    # The kill switch rejected the ping outside the tunnel (its counter moved) while SSH kept working.
    rejected = [line for line in lines if "reject" in line and "counter packets" in line]
    assert rejected and "counter packets 0 " not in rejected[0], r.stdout


def test_facts_module_judges_vpn_001_to_003_read_only(site, laptop, gateway, enrolled):
    """The read-only module the nightly check will use: one round trip, nothing changed."""
    import os
    import subprocess

    from deskguard.site import KIT_ROOT

    peer = json.loads(deskguard(site, "vpn", "gateway-config", "--format", "json").stdout)["peers"][0]
    assert ping_gateway(laptop)   # traffic, so the handshake is fresh
    args = json.dumps({"gateway_public_key": gateway.public_key, "public_key": peer["public_key"], "kill_switch": True})
    env = {**os.environ, "ANSIBLE_CONFIG": str(KIT_ROOT / "ansible.cfg"), "DESKGUARD_SITE": str(site)}
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible"), HOST, "-i", str(site / "inventory" / "hosts.yml"),
                           "-m", "deskguard_vpn_facts", "-a", args, "-o"], capture_output=True, text=True, env=env,
                          timeout=300)
    OUTPUTS.append(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout.split("=>", 1)[1])
    assert result["changed"] is False
    assert {k: v["state"] for k, v in result["controls"].items()} == {
        "VPN-001": "compliant", "VPN-002": "compliant", "VPN-003": "compliant"}, result


def test_second_run_changes_nothing(site, laptop, enrolled):
    """The same onboarding `enrolment process` ran, again by hand: through the tunnel, as the management account."""
    from deskguard.lab.image import lab_key

    proc = deskguard(site, "onboard", HOST, "--os", "debian", "--address", LAPTOP_ADDRESS, "--ssh-user", "deskguard",
                     "--user", OPERATOR, "--ssh-key", str(lab_key()), "--json")
    out = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else None
    assert proc.returncode == 0, (proc.stderr[-3000:], out)
    assert out["changed_tasks"] == 0, out
    assert {c["control"]: c["state"] for c in out["controls"]}["VPN-001"] == "already compliant", out


def test_rotation_through_the_tunnel_is_refused_and_the_tunnel_keeps_working(site, laptop, gateway, enrolled):
    """Found here (session 10): `vpn rotate` of a laptop IT manages only through its tunnel made the laptop restart
    the tunnel on its new key before its answer could come back, and before the gateway knew the key
    (unreachable; only the laptop's rollback timer brought the old key back). The controller now refuses it in
    one line before the laptop is touched: key, gateway and tunnel as they were; no private key anywhere else."""
    before = json.loads(deskguard(site, "vpn", "gateway-config", "--format", "json").stdout)["peers"][0]
    old_private = laptop_key(laptop)
    proc = deskguard(site, "vpn", "rotate", HOST, "--json")
    assert proc.returncode != 0, OUTPUTS[-1][-3000:]
    row = json.loads(proc.stdout)
    assert row["state"] == "not rotated" and row["public_key"] == before["public_key"], row
    assert any("manages this laptop through its tunnel" in m for m in row["messages"]), row
    assert gateway.peers() == [before["public_key"]]
    assert ping_gateway(laptop)
    assert laptop_key(laptop) == old_private
    _assert_private_keys_nowhere(site, laptop, [old_private])


def test_removing_the_device_stops_its_handshakes(site, laptop, gateway, enrolled):
    key = json.loads(deskguard(site, "vpn", "gateway-config", "--format", "json").stdout)["peers"][0]["public_key"]
    assert deskguard(site, "devices", "remove", HOST, "--yes").returncode == 0, OUTPUTS[-1]
    assert json.loads(deskguard(site, "vpn", "gateway-config", "--format", "json").stdout)["peers"] == []
    assert deskguard(site, "vpn", "push-gateway").returncode == 0, OUTPUTS[-1][-3000:]
    assert key not in gateway.peers() and key not in gateway.handshakes()
    assert not ping_gateway(laptop)                               # its handshakes no longer get an answer
    assert key not in gateway.handshakes()


def _assert_private_keys_nowhere(site, laptop, keys):
    site_bytes = b"".join(p.read_bytes() for p in site.rglob("*") if p.is_file())
    journal = on_laptop(laptop, "sudo journalctl -o short --no-pager; true", timeout=180).stdout
    assert "deskguard_wireguard" in journal       # the grep means something: the module calls are logged
    for k in keys:
        assert len(k) == 44
        assert k.encode() not in site_bytes
        assert k not in journal
        assert not any(k in o for o in OUTPUTS)
