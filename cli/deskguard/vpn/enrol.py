"""Enrol (or rotate) one laptop: the controller's order of steps, independent of Ansible.

1. check the policy's VPN settings (a bad pool, endpoint, key or MTU stops here, nothing changed);
2. the management guard: if IT reaches this laptop *through* the tunnel, a change of its tunnel address would cut
   that path, so it is refused; any other change is made with the laptop's rollback timer armed;
3. allocate the laptop's address in the store (the same one on every re-run; unique even with two admins);
4. one module call on the laptop: key made there if missing (or on rotation), config written and tested,
   tunnel up; only the public key comes back;
5. the public key is recorded on the peer (the gateway learns it from `deskguard vpn gateway-config`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Callable

from ..errors import DeskguardError
from .settings import VpnSettings, check_public_key

Remote = Callable[[str, dict], dict]
MODULE = "deskguard_wireguard"


class VpnRefused(DeskguardError):
    """The management guard refused a change: exit 1, nothing changed on the laptop."""

    exit_code = 1


@dataclass
class Request:
    device_uuid: str
    hostname: str
    settings: VpnSettings
    mode: str = "apply"                 # apply | rotate | check
    management_address: str | None = None
    rollback_seconds: int = 300
    captive_ports: tuple[str, ...] = ()
    backend: str = "auto"
    implementation: str = "auto"        # Linux: auto | kernel | userspace (wireguard-go)


@dataclass
class Outcome:
    changed: bool = False
    address: str | None = None
    public_key: str | None = None
    implementation: str | None = None
    rollback_armed: bool = False
    management_over_vpn: bool = False
    controls: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def over_tunnel(address: str | None, pool: str) -> bool:
    """IT reaches the laptop through the tunnel when its management address is in the VPN pool."""
    try:
        return address is not None and ipaddress.ip_address(address) in ipaddress.ip_network(pool)
    except ValueError:
        return False   # a host name: resolved by SSH, not by us; treated as outside the tunnel


def module_args(req: Request, address: str, rollback: int) -> dict:
    s = req.settings
    return {"interface": s.interface, "address": address, "gateway_public_key": s.gateway_public_key,
            "endpoint": s.endpoint, "allowed_ips": s.laptop_allowed_ips(), "dns": list(s.dns), "mtu": s.mtu,
            "keepalive": s.keepalive, "kill_switch": s.kill_switch,
            "kill_switch_captive_ports": list(req.captive_ports),
            "management_networks": list(s.management_networks), "rotate": req.mode == "rotate",
            "rollback_seconds": rollback, "backend": req.backend,
            "implementation": req.implementation}


def run(store, remote: Remote, req: Request) -> Outcome:
    s = req.settings
    out = Outcome(management_over_vpn=over_tunnel(req.management_address, s.pool))
    current = store.vpn_peer(req.device_uuid) if store is not None else None
    if current is not None and current.pool != s.pool and over_tunnel(req.management_address, current.pool):
        raise VpnRefused(f"{req.hostname}: IT manages this laptop through the tunnel ({req.management_address}, pool "
                         f"{current.pool}); moving it to pool {s.pool} would cut that path. Give it a management "
                         "address outside the tunnel first (deskguard devices update), then re-run")
    if req.mode == "rotate" and out.management_over_vpn:
        # The laptop would restart its tunnel on the new key before its answer, and before the gateway learns the
        # key: the play loses the laptop and only the rollback timer brings the old key back (found on the VM).
        raise VpnRefused(f"{req.hostname}: IT manages this laptop through its tunnel ({req.management_address}); a new "
                         "key would cut that path before the gateway learns it. Nothing was changed. Rotate it "
                         "while IT reaches it outside the tunnel (its ansible_host on that path)")
    if req.mode == "check":
        if current is None or current.pool != s.pool:
            out.changed = True
            out.notes.append(f"would allocate an address in {s.pool} and enrol a new key")
            out.controls = {"VPN-001": {"state": "noncompliant", "findings": ["not enrolled yet"]}}
            return out
        peer_address = current.address
    else:
        peer = store.allocate_vpn_address(req.device_uuid, s.pool, reserved=[s.gateway_address])
        peer_address = peer.address
    rollback = req.rollback_seconds if out.management_over_vpn else 0
    res = remote(MODULE, module_args(req, peer_address, rollback))
    out.address = peer_address
    out.changed = bool(res.get("changed"))
    out.rollback_armed = bool(res.get("rollback_armed"))
    out.implementation = res.get("implementation")
    pub = res.get("public_key")
    if req.mode != "check":
        out.public_key = check_public_key(pub, "public key reported by the laptop")
        store.set_vpn_public_key(peer.id, out.public_key, reason="rotate" if req.mode == "rotate" else "enrol")
    controls = dict(res.get("controls") or {})
    # VPN-002 needs the gateway to know this key: it is judged by the nightly check, not by this step.
    controls.pop("VPN-002", None)
    if out.changed and "VPN-001" in controls:
        controls["VPN-001"] = {**controls["VPN-001"], "state": "applied"}
    if out.changed and s.kill_switch and "VPN-003" in controls:
        controls["VPN-003"] = {**controls["VPN-003"], "state": "applied"}
    if out.implementation == "userspace" and "VPN-001" in controls:
        # Said every run, never silently: wireguard-go is slower than the kernel and its own process.
        note = f"userspace WireGuard (wireguard-go): {res.get('implementation_reason') or 'chosen by the policy'}"
        controls["VPN-001"] = {**controls["VPN-001"],
                               "findings": list(controls["VPN-001"].get("findings") or []) + [note]}
        out.notes.append(note)
    out.controls = controls
    if req.mode == "rotate":
        out.notes.append("new key pair made on the laptop; push the gateway (playbooks/vpn_gateway.yml)")
    return out
