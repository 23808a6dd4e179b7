"""Issue 22 in the lab (container tier): a laptop behind a "home router" enrols itself and is onboarded through
its tunnel only.

Laptop container lab-ct1 gets a firewall table, set from its console (nsenter, not SSH: what the person who
installs it has), that drops SSH arriving anywhere but on its tunnel: the controller cannot reach it by SSH on
the lab bridge, as behind a home router. The enrolment package (built by `deskguard enrolment package`, IT's key
= the lab key) is installed from the console, twice; its first boot enrols against a real `deskguard serve`
(HTTPS on the lab bridge, the CA pinned), brings its tunnel up to the lab's wireguard-go gateway (a namespace on
the bridge; it routes the controller into the pool and masquerades it, as a company's VPN concentrator
would); `deskguard enrolment process` pushes the gateway and onboards it over its VPN address; `deskguard
comply` passes over the tunnel. lab-ct2 installs a package whose token was revoked: nothing enrols. The VM
version (real kernel WireGuard, a LUKS root, a real first boot) is tests/vm/test_vpn_vm.py: docs/enrolment.md."""

from __future__ import annotations

import importlib.util
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from deskguard.lab import identity, network

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vm"))
import labgateway  # noqa: E402

pytestmark = pytest.mark.container
HOME = "home-ct1"
_spec = importlib.util.spec_from_file_location("wincerts", Path(__file__).parents[1] / "windows" / "certs.py")
certs = sys.modules.setdefault("wincerts", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(certs)


def pool() -> tuple[str, str]:
    """(pool, gateway address) of this lab alone: the controller routes it to this lab's gateway."""
    third = 120 + identity.lab_index()
    return f"10.{third}.77.0/24", f"10.{third}.77.1"


def deskguard(site, *args, timeout=1200):
    from sitetools import run_deskguard

    return run_deskguard(site, *args, timeout=timeout)


def console(host, command: str, stdin: bytes | None = None, timeout=300) -> subprocess.CompletedProcess:
    """A command on the laptop's own console (its namespaces, entered from this machine): not the network."""
    pid = host.extra.get("init_pid") or network.children(host.pid)[0]
    return subprocess.run(["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "-r", "-w", "/bin/sh", "-c",
                           command], input=stdin, capture_output=True, timeout=timeout)


def ssh_reaches(address: str) -> bool:
    from deskguard.lab.image import lab_key

    r = subprocess.run(["ssh", "-i", str(lab_key()), "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                        f"dgadmin@{address}", "true"], capture_output=True, timeout=30)
    return r.returncode == 0


@pytest.fixture(scope="module")
def laptops(fresh_containers):
    return fresh_containers.hosts["lab-ct1"], fresh_containers.hosts["lab-ct2"]


@pytest.fixture(scope="module")
def gateway(lab_container):
    gw = labgateway.start_on_bridge()
    net, address = pool()
    route = ["ip", "route", "replace", net, "via", network.service_address(2), "dev", network.bridge()]
    try:
        labgateway.in_ns("ip", "addr", "add", f"{address}/24", "dev", gw.iface, netns=gw.netns)
        labgateway.in_ns("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=gw.netns)
        labgateway.in_ns("nft", "add table ip dgmasq; add chain ip dgmasq post { type nat hook postrouting "
                         f"priority 100; }}; add rule ip dgmasq post oifname {gw.iface} masquerade", netns=gw.netns)
        subprocess.run(route, check=True, capture_output=True)
        yield gw
    finally:
        subprocess.run(["ip", "route", "del", net], capture_output=True)
        gw.stop()


@pytest.fixture(scope="module")
def site(make_site, gateway):
    from deskguard.lab.sites import set_policy_lines

    site = labgateway.use_in_site(make_site(management=network.lab_network()), gateway, network.lab_network())
    net, address = pool()
    # IT's SSH now arrives through the tunnel, from the gateway's address in the pool (it masquerades): the
    # firewall's management sources must name the pool, as a site that manages laptops over its VPN does.
    set_policy_lines(site, {"vpn_pool": net, "firewall_management_sources": [network.lab_network(), net]},
                     "enrol through this lab's gateway", appended={"vpn_gateway_address": address},
                     note="issue 22 lab: this lab's pool")
    return site


@pytest.fixture(scope="module")
def server(site, tmp_path_factory):
    """`deskguard serve` over HTTPS on this machine's lab bridge address, its certificate from a CA made here."""
    from sitetools import free_port

    folder = tmp_path_factory.mktemp("pki")
    ca, ca_key = certs.make_ca(folder)
    cert = certs.issue(folder, ca, ca_key, addresses=(network.host_address(),))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DESKGUARD_DB_URL", "DESKGUARD_SITE")}
    proc = subprocess.Popen([sys.executable, "-m", "deskguard", "serve", "--site", str(site), "--bind",
                             f"{network.host_address()}:{port}", "--tls-cert", str(cert.cert), "--tls-key",
                             str(cert.key)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"https://{network.host_address()}:{port}"
    for _ in range(150):
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1, context=ssl._create_unverified_context())
            break
        except OSError:
            time.sleep(0.1)
    yield {"url": url, "ca": ca.cert}
    proc.terminate()
    out = proc.communicate(timeout=20)[0]
    assert "Traceback" not in out, out[-3000:]
    print(out[-3000:])


def package(site, server, tmp_path, *, revoked=False) -> Path:
    from deskguard.lab.image import lab_key
    from deskguard.store import Store

    with Store.open(site) as store:
        row, token = store.create_enrolment_token(uses=1, operator="tanaka")
    out = tmp_path / ("revoked.deb" if revoked else "home.deb")
    proc = deskguard(site, "enrolment", "package", "--token", token, "--ssh-public-key", f"{lab_key()}.pub",
                     "--ca-file", str(server["ca"]), "--server-url", server["url"], "--hostname",
                     "home-ct2" if revoked else HOME, "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    if revoked:
        assert deskguard(site, "enrolment", "revoke", row.id, "--reason", "lab: revoked").returncode == 0
    return out


def install(host, deb: Path) -> subprocess.CompletedProcess:
    console(host, "cat > /root/deskguard-enrol.deb", stdin=deb.read_bytes())
    return console(host, "dpkg -i /root/deskguard-enrol.deb")


def wait_for(host, command: str, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if console(host, command).returncode == 0:
            return True
        time.sleep(2)
    return False


@pytest.fixture(scope="module")
def home(laptops, gateway, site, server, tmp_path_factory):
    laptop = laptops[0]
    # The home router: SSH only through the tunnel (wg0), from this moment on.
    r = console(laptop, "nft add table inet homerouter && nft add chain inet homerouter input '{ type filter hook "
                        "input priority -10; }' && nft add rule inet homerouter input tcp dport 22 iifname != wg0 drop")
    assert r.returncode == 0, r.stderr
    assert not ssh_reaches(laptop.address), "the controller still reaches the laptop's SSH on the bridge"
    deb = package(site, server, tmp_path_factory.mktemp("pkg"))
    started = time.monotonic()
    r = install(laptop, deb)
    assert r.returncode == 0, r.stdout + r.stderr
    assert wait_for(laptop, "test -f /var/lib/deskguard-agent/enrolled.json && systemctl is-active --quiet "
                            "wg-quick@wg0", 180), console(laptop, "journalctl -u deskguard-enrol --no-pager | "
                                                                  "tail -20").stdout.decode()
    print(f"enrolment: package installed to tunnel up in {time.monotonic() - started:.1f} s")
    return {"laptop": laptop, "deb": deb}


def test_the_laptop_enrols_itself_and_brings_its_tunnel_up(site, home, gateway):
    from deskguard.store import Store

    net, _gw = pool()
    with Store.open(site) as store:
        device = store.require_device(HOME)
        peer = store.vpn_peer(device.uuid)
    assert device.state == "enrolled" and device.ssh_user == "deskguard" and device.operator == "tanaka"
    assert device.address == peer.address == net.replace(".0/24", ".2")
    r = console(home["laptop"], "wg show wg0 public-key; stat -c '%a %U' /etc/wireguard/wg0.key "
                                "/etc/deskguard-agent/device.key; test -e /etc/deskguard-agent/enrolment-token "
                                "&& echo token-left; getent passwd deskguard; passwd -S deskguard")
    out = r.stdout.decode()
    assert out.splitlines()[0] == peer.public_key and out.count("600 root") == 2, out
    assert "token-left" not in out and "/home/deskguard:/bin/bash" in out
    assert out.splitlines()[-1].split()[1] == "L", out        # locked: no password to log in with, key only


def test_installing_the_package_again_changes_nothing(site, home):
    from deskguard.store import Store

    with Store.open(site) as store:
        before = (len(store.list_devices()), len(store.list_audit()))
    r = install(home["laptop"], home["deb"])
    assert r.returncode == 0, r.stderr
    time.sleep(5)   # the first-boot unit ran again (the token came back with the package) and finished
    assert wait_for(home["laptop"], "! test -e /etc/deskguard-agent/enrolment-token", 60)
    with Store.open(site) as store:
        assert (len(store.list_devices()), len(store.list_audit())) == before
    assert console(home["laptop"], "systemctl is-failed --quiet deskguard-enrol").returncode != 0
    assert console(home["laptop"], "systemctl is-active --quiet wg-quick@wg0").returncode == 0


def test_process_onboards_it_over_the_tunnel_and_comply_passes(site, home, gateway):
    from deskguard.lab.image import lab_key

    assert not ssh_reaches(home["laptop"].address)           # still no way in but the tunnel
    started = time.monotonic()
    proc = deskguard(site, "enrolment", "process", "--ssh-key", str(lab_key()), "--json")
    out = json.loads(proc.stdout) if proc.stdout.startswith("{") else None
    print(f"enrolment process (gateway push + onboarding over the tunnel): {time.monotonic() - started:.0f} s")
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    [row] = out["laptops"]
    assert (row["hostname"], row["state"], out["gateways"]) == (HOME, "onboarded", "pushed"), out
    net, _gw = pool()
    assert row["address"].startswith(net.rsplit(".", 1)[0])
    proc = deskguard(site, "comply", "--limit", HOME, "--format", "json")
    report = json.loads(proc.stdout)
    host = report["hosts"][HOME]
    assert proc.returncode == 0, {c: r for c, r in host["results"].items() if r["status"] in ("fail", "error")}
    assert host["compliant"], host
    assert not ssh_reaches(home["laptop"].address)           # the home router still stands
    # Processing again finds nothing to do.
    again = deskguard(site, "enrolment", "process", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["laptops"] == []


def test_a_revoked_token_enrols_nothing(site, laptops, server, gateway, tmp_path):
    from deskguard.store import Store

    laptop = laptops[1]
    deb = package(site, server, tmp_path, revoked=True)
    assert install(laptop, deb).returncode == 0
    # The first boot runs and is refused; it stays queued to retry, and nothing is written anywhere.
    assert wait_for(laptop, "journalctl -u deskguard-enrol --no-pager | grep -q 'HTTP 403 revoked'", 120)
    r = console(laptop, "test -e /var/lib/deskguard-agent/enrolled.json && echo enrolled; "
                        "test -e /etc/wireguard/wg0.conf && echo tunnel; journalctl -u deskguard-enrol --no-pager")
    out = r.stdout.decode()
    assert "enrolled\n" not in out and "tunnel\n" not in out and "dgenrol-" not in out
    with Store.open(site) as store:
        assert store.get_device("home-ct2") is None
