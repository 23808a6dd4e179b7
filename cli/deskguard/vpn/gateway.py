"""The gateway's peer list, from the store, in the formats a VPN server can load.

Only enrolled peers appear (an address allocated before the laptop reported its key is listed as pending in
the JSON only). No private key is ever here: the gateway keeps its own, the laptops keep theirs. The output is
deterministic (no timestamps) so that re-exporting an unchanged fleet changes nothing downstream.
"""

from __future__ import annotations

import ipaddress
import json

from .settings import VpnSettings

FORMATS = ("wg-quick", "networkd", "json")
# The inventory group of Linux WireGuard gateways that playbooks/vpn_gateway.yml pushes (may be absent).
GATEWAY_GROUP = "vpn_gateways"


def limit_with_gateways(site, hostname: str) -> str:
    """An Ansible limit for one laptop plus the site's VPN gateways, if its inventory has any."""
    from ..site.inventory import has_group

    return f"{hostname},{GATEWAY_GROUP}" if has_group(site, GATEWAY_GROUP) else hostname


def peer_rows(store, settings: VpnSettings) -> tuple[list[dict], list[str]]:
    """(enrolled peers, hostnames still waiting for their key), in address order."""
    peers, pending = [], []
    for peer, device in store.list_vpn_peers(pool=settings.pool):
        # A laptop that enrolled itself and waits for an admin's approval is not let in yet (docs/enrolment.md).
        if not peer.public_key or device.state == "pending":
            pending.append(device.hostname)
            continue
        host_bits = 32 if ipaddress.ip_address(peer.address).version == 4 else 128
        peers.append({"hostname": device.hostname, "device_uuid": device.uuid, "public_key": peer.public_key,
                      "address": peer.address, "allowed_ips": [f"{peer.address}/{host_bits}"]})
    return peers, pending


def render(fmt: str, settings: VpnSettings, peers: list[dict], pending: list[str]) -> str:
    if fmt == "json":
        return json.dumps({"interface": settings.interface, "pool": settings.pool,
                           "gateway_address": settings.gateway_address, "listen_port": settings.listen_port,
                           "peers": peers, "pending": pending}, indent=2, sort_keys=True) + "\n"
    if fmt == "wg-quick":
        return _wg_quick(settings, peers)
    if fmt == "networkd":
        return _networkd(settings, peers)
    raise ValueError(fmt)


def _wg_quick(settings: VpnSettings, peers: list[dict]) -> str:
    lines = [f"# deskguard: {len(peers)} enrolled laptop(s) of {settings.pool} (deskguard vpn gateway-config)",
             "# The private key stays on the gateway: it is loaded by PostUp, never written here.",
             "[Interface]",
             f"Address = {settings.gateway_address}/{settings.prefixlen}",
             f"ListenPort = {settings.listen_port}",
             "PostUp = wg set %i private-key /etc/wireguard/%i.key"]
    for p in peers:
        lines += ["", f"# {p['hostname']} {p['device_uuid']}", "[Peer]", f"PublicKey = {p['public_key']}",
                  f"AllowedIPs = {', '.join(p['allowed_ips'])}"]
    return "\n".join(lines) + "\n"


def _networkd(settings: VpnSettings, peers: list[dict]) -> str:
    # A systemd-networkd .netdev; the .network with Address= is the gateway admin's (one line, see docs/vpn.md).
    lines = [f"# deskguard: {len(peers)} enrolled laptop(s) of {settings.pool} (deskguard vpn gateway-config)",
             "[NetDev]", f"Name = {settings.interface}", "Kind = wireguard", "",
             "[WireGuard]", f"ListenPort = {settings.listen_port}",
             f"PrivateKeyFile = /etc/systemd/network/{settings.interface}.key"]
    for p in peers:
        lines += ["", f"# {p['hostname']} {p['device_uuid']}", "[WireGuardPeer]", f"PublicKey = {p['public_key']}",
                  f"AllowedIPs = {', '.join(p['allowed_ips'])}"]
    return "\n".join(lines) + "\n"
