"""The lab's VPN gateway: userspace wireguard-go in a network namespace of its own (the host kernel has no
WireGuard module). Two ways in:
- `start()` for the lab VM (`dgvpn-gw`): reached at 10.0.2.2:<relay port> through qemu's user network and the
  UDP relay; nothing here touches the lab's bridge or namespaces.
- `start_on_bridge()` for laptop containers (`dgvpn-ct`): the namespace gets a veth on the lab bridge and
  the lab's service address 2 (10.213.0.2 in the default lab), a host of the containers' own LAN, so they dial
  it directly (no relay, any number of laptops). Its veth leaves the bridge with the namespace, before `lab
  down` removes the bridge.
Namespaces, interface names (wireguard-go's UAPI sockets too) and the relay port are machine-wide: each lab's
carry its index (`tag()`, `lab_port()`), so two labs can each run a gateway (the default lab's names are the
ones above).
`use_in_site()` points a test site's policy and inventory at either. `route_pool()` makes the controller reach
the laptops' VPN addresses through the gateway, as a company's VPN concentrator does (issue 22: IT onboards a
laptop shipped to a home through its tunnel); `vm_pool()` is the pool the VM gateway then uses."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

WG_PORT = 51820
RELAY_OFFSET = 379     # UDP relay port = the lab's port base + this (2599 in the default lab)
ADDRESS = "10.77.0.1/24"


def tag() -> str:
    """"" in the default lab, else the lab's index (deskguard.lab.identity)."""
    from deskguard.lab import identity

    return identity.tag(identity.lab_index())


def lab_port(offset: int = RELAY_OFFSET) -> int:
    """A loopback port in this lab's own block (vm.port_base: 2220 in the default lab, 2220 + 1000 k in lab k)."""
    from deskguard.lab.vm import port_base

    return port_base() + offset


def _sh(*cmd, **kw):
    return subprocess.run(list(cmd), check=True, capture_output=True, text=True, **kw)


def in_ns(*cmd, check=True, netns=None):
    netns = netns or f"dgvpn{tag()}-gw"
    return subprocess.run(["ip", "netns", "exec", netns, *cmd], check=check, capture_output=True, text=True)




@dataclass
class Gateway:
    public_key: str
    wg: subprocess.Popen
    relay: subprocess.Popen | None
    workdir: Path
    netns: str = "dgvpn-gw"
    iface: str = "dgvpn0"
    relay_port: int = 0
    endpoint: str = ""
    veth: str | None = None            # the bridge's port, removed at once (a namespace's veths go lazily)
    routes: list[str] | None = None    # pools this machine routes into the namespace (route_pool)
    uplink: str | None = None          # this machine's end of the VM gateway's veth (route_pool)

    def peers(self) -> list[str]:
        return in_ns("wg", "show", self.iface, "peers", netns=self.netns).stdout.split()

    def handshakes(self) -> dict[str, int]:
        out = in_ns("wg", "show", self.iface, "latest-handshakes", netns=self.netns).stdout
        return {k: int(v) for k, v in (line.split("\t") for line in out.splitlines() if "\t" in line)}

    def stop(self) -> None:
        for proc in (self.relay, self.wg):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for net in self.routes or []:
            subprocess.run(["ip", "route", "del", net], capture_output=True)
        for veth in (self.veth, self.uplink):
            if veth:
                subprocess.run(["ip", "link", "del", veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        Path(f"/var/run/wireguard/{self.iface}.sock").unlink(missing_ok=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _namespace(netns: str) -> None:
    subprocess.run(["ip", "netns", "del", netns], capture_output=True)   # a leftover of an interrupted run
    _sh("ip", "netns", "add", netns)
    _sh("ip", "-n", netns, "link", "set", "lo", "up")


def _wireguard(netns: str, iface: str) -> tuple[str, subprocess.Popen, Path]:
    """wireguard-go with a fresh key, listening on WG_PORT, 10.77.0.1/24 on its interface."""
    workdir = Path(tempfile.mkdtemp(prefix="dgvpn-gw-"))
    key = workdir / "gateway.key"
    old = os.umask(0o077)
    try:
        key.write_text(_sh("wg", "genkey").stdout)
    finally:
        os.umask(old)
    public = _sh("wg", "pubkey", input=key.read_text()).stdout.strip()
    env = {**os.environ, "WG_PROCESS_FOREGROUND": "1"}
    wg = subprocess.Popen(["ip", "netns", "exec", netns, "wireguard-go", "-f", iface], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            if in_ns("ip", "link", "show", iface, check=False, netns=netns).returncode == 0 and \
                    Path(f"/var/run/wireguard/{iface}.sock").exists():
                break
            time.sleep(0.1)
        in_ns("wg", "set", iface, "listen-port", str(WG_PORT), "private-key", str(key), netns=netns)
        in_ns("ip", "addr", "add", ADDRESS, "dev", iface, netns=netns)
        in_ns("ip", "link", "set", iface, "up", netns=netns)
    except BaseException:
        Gateway(public, wg, None, workdir, netns, iface).stop()
        raise
    return public, wg, workdir


def start(netns: str | None = None, iface: str | None = None, relay_port: int | None = None) -> Gateway:
    """Another lab may run beside this one: its own namespace, interface (wireguard-go's UAPI sockets are
    machine-wide) and relay port keep them apart (dgvpn-gw, dgvpn0, 2599 in the default lab)."""
    netns, iface = netns or f"dgvpn{tag()}-gw", iface or f"dgvpn{tag()}0"
    relay_port = relay_port or lab_port()
    _namespace(netns)
    public, wg, workdir = _wireguard(netns, iface)
    relay = None
    try:
        relay = subprocess.Popen([sys.executable, str(Path(__file__).with_name("udprelay.py")), str(relay_port),
                                  netns, str(WG_PORT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert relay.stdout.readline().strip() == "ready", relay.stderr.read() if relay.poll() else "relay silent"
    except BaseException:
        Gateway(public, wg, relay, workdir, netns, iface, relay_port).stop()
        raise
    return Gateway(public, wg, relay, workdir, netns, iface, relay_port, f"10.0.2.2:{relay_port}")


def start_on_bridge() -> Gateway:
    """The gateway as one more host on the lab bridge (the laptop containers' LAN), at the lab's service
    address 2, reserved for it in lab/network.py (dgvpn-ct, dgvpnct0, dgvpnct-br on dglab0 at 10.213.0.2 in the
    default lab). Its interface is not the VM gateway's: wireguard-go's UAPI socket names are machine-wide."""
    from deskguard.lab import network

    bridge, address = network.bridge(), network.service_address(2)
    netns, iface, veth = f"dgvpn{tag()}-ct", f"dgvpnct{tag()}0", f"dgvpnct{tag()}-br"
    _namespace(netns)
    subprocess.run(["ip", "link", "del", veth], capture_output=True)     # a leftover of an interrupted run
    try:
        _sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _sh("ip", "link", "set", veth, "master", bridge, "up")
        _sh("ip", "-n", netns, "addr", "add", f"{address}/16", "dev", "eth0")
        _sh("ip", "-n", netns, "link", "set", "eth0", "up")
    except BaseException:
        subprocess.run(["ip", "link", "del", veth], capture_output=True)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        raise
    try:
        public, wg, workdir = _wireguard(netns, iface)
    except BaseException:
        subprocess.run(["ip", "link", "del", veth], capture_output=True)
        raise
    return Gateway(public, wg, None, workdir, netns, iface, 0, f"{address}:{WG_PORT}", veth)


def vm_pool() -> tuple[str, str]:
    """(pool, gateway address) of this lab's VM gateway: 10.(170 + lab index).77.0/24, apart from the laptop
    containers' pools (10.120-162), the labs' own ranges (10.213-255) and qemu's 10.0.2.0/24."""
    from deskguard.lab import identity

    third = 170 + identity.lab_index()
    return f"10.{third}.77.0/24", f"10.{third}.77.1"


def route_pool(gw: Gateway, pool: str, address: str) -> None:
    """The controller reaches `pool` through the gateway: the gateway takes `address` in the pool, forwards,
    and masquerades what it sends into the tunnel (the laptop sees IT arrive from `address`, inside its own
    pool). The bridge gateway is routed over its bridge port; the VM gateway, which has none, gets a veth of
    its own to this machine (dgvpn<tag>-h, 10.(170 + lab index).78.0/30). Undone by gw.stop()."""
    from deskguard.lab import network

    in_ns("ip", "addr", "add", f"{address}/{pool.split('/')[1]}", "dev", gw.iface, netns=gw.netns)
    in_ns("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=gw.netns)
    in_ns("nft", "add table ip dgmasq; add chain ip dgmasq post { type nat hook postrouting priority 100; }; "
          f"add rule ip dgmasq post oifname {gw.iface} masquerade", netns=gw.netns)
    gw.routes = [pool]
    if gw.veth:
        via = ["via", network.service_address(2), "dev", network.bridge()]
    else:
        link = pool.replace(".77.0/24", ".78")
        host_side = gw.uplink = f"dgvpn{tag()}-h"
        subprocess.run(["ip", "link", "del", host_side], capture_output=True)   # a leftover of an interrupted run
        _sh("ip", "link", "add", host_side, "type", "veth", "peer", "name", "up0", "netns", gw.netns)
        _sh("ip", "addr", "add", f"{link}.1/30", "dev", host_side)
        _sh("ip", "link", "set", host_side, "up")
        in_ns("ip", "addr", "add", f"{link}.2/30", "dev", "up0", netns=gw.netns)
        in_ns("ip", "link", "set", "up0", "up", netns=gw.netns)
        via = ["via", f"{link}.2", "dev", host_side]
    _sh("ip", "route", "replace", pool, *via)


def use_in_site(site: Path, gateway: Gateway, management: str) -> Path:
    """The site's policy turned to the VPN through `gateway` (kill switch on; IT manages the laptops from
    `management`, through the tunnel), and the gateway in the site's inventory under its namespace's name: it
    is this machine, whose wg talks to the namespaced wireguard-go through the UAPI socket."""
    from deskguard.site.inventory import add_host

    policy = site / "inventory" / "group_vars" / "all" / "policy.yml"
    text = policy.read_text().replace("vpn_enabled: false", "vpn_enabled: true")
    text = text.replace('vpn_endpoint: ""', f'vpn_endpoint: "{gateway.endpoint}"')
    text = text.replace('vpn_gateway_public_key: ""', f'vpn_gateway_public_key: "{gateway.public_key}"')
    text = text.replace("vpn_kill_switch: false", "vpn_kill_switch: true")
    text = text.replace("vpn_management_networks: []", f'vpn_management_networks: ["{management}"]')
    policy.write_text(text)
    add_host(site, gateway.netns, {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                                   "vpn_gateway_interface": gateway.iface,
                                   "vpn_gateway_state_file": str(site / ".deskguard" / "gw-state.json"),
                                   "vpn_gateway_persist_file": str(site / ".deskguard" / "gw-peers.conf")},
             group="vpn_gateways")
    return site
