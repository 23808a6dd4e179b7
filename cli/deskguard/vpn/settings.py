"""The policy's VPN settings, checked before anything changes: one clear message per bad value."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass

from ..errors import UsageError

# 1280 is IPv6's minimum link MTU (WireGuard carries IPv6 too); 1420 is 1500 minus WireGuard's 80 bytes of
# IPv6 overhead, the largest that never fragments on an ordinary 1500-byte link.
MTU_RANGE = (1280, 1420)
# A pool must hold more than the gateway: a /30 has 2 host addresses, the gateway's and one laptop's.
MIN_POOL_HOSTS = 2
INTERFACE_RE = re.compile(r"[a-zA-Z0-9_=+.-]{1,15}")  # what the kernel and wg-quick accept
HOST_RE = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


class VpnSettingsError(UsageError):
    """A bad VPN policy value: exit 2, nothing changed."""


def check_public_key(value, what: str = "public key") -> str:
    """A WireGuard key is 32 bytes, written as 44 characters of standard base64."""
    text = str(value or "").strip()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(text) != 44 or len(raw) != 32:
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise VpnSettingsError(f"invalid WireGuard {what} {shown!r}: it must be 32 bytes in base64 (44 characters, "
                               "as `wg pubkey` prints it)")
    return text


def check_endpoint(value) -> tuple[str, int]:
    """host:port, [v6]:port or a name; the port 1..65535."""
    text = str(value or "").strip()
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\s\[\]]+):(\d{1,5})", text)
    if not m:
        raise VpnSettingsError(f"invalid VPN endpoint {text[:80]!r}: write host:port (vpn.example.com:51820, "
                               "203.0.113.5:51820 or [2001:db8::5]:51820)")
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    if m.group(1):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise VpnSettingsError(f"invalid VPN endpoint {text!r}: {host!r} is not an IPv6 address") from None
    elif not _is_ip(host) and not HOST_RE.fullmatch(host):
        raise VpnSettingsError(f"invalid VPN endpoint {text!r}: {host!r} is neither an address nor a host name")
    if not 1 <= int(port) <= 65535:
        raise VpnSettingsError(f"invalid VPN endpoint {text!r}: the port must be 1..65535")
    return host, int(port)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _network(value, what: str):
    try:
        return ipaddress.ip_network(str(value).strip(), strict=True)
    except ValueError as exc:
        raise VpnSettingsError(f"invalid {what} {str(value)[:60]!r}: {exc}") from None


@dataclass(frozen=True)
class VpnSettings:
    pool: str
    gateway_address: str
    endpoint: str
    gateway_public_key: str
    interface: str = "wg0"
    dns: tuple[str, ...] = ()
    tunnel: str = "split"
    allowed_ips: tuple[str, ...] = ()
    keepalive: int = 25
    mtu: int = 1420
    kill_switch: bool = False
    management_networks: tuple[str, ...] = ()
    listen_port: int = 51820

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.pool).prefixlen

    def laptop_allowed_ips(self) -> list[str]:
        """What the laptop routes into the tunnel: everything (full), or the pool plus the listed networks."""
        if self.tunnel == "full":
            return ["0.0.0.0/0", "::/0"]
        nets = [self.pool] + [n for n in self.allowed_ips if n != self.pool]
        return nets


def check_networks(policy: dict) -> tuple:
    """The networks of a policy, checked even while the VPN is off (the gateway's config and the next
    enrolment use them): (pool, management networks, allowed networks); VpnSettingsError on the first bad one."""
    pool = _network(policy.get("vpn_pool"), "vpn_pool")
    hosts = pool.num_addresses - (2 if pool.version == 4 else 1)   # network/broadcast (v4), subnet-router (v6)
    if hosts < MIN_POOL_HOSTS or pool.prefixlen > (30 if pool.version == 4 else 126):
        raise VpnSettingsError(f"vpn_pool {pool} is too small: one address is the gateway's and the rest must "
                               f"hold the fleet; use at least a /{30 if pool.version == 4 else 126}, sized for it")
    mgmt = tuple(str(_network(n, "vpn_management_networks entry")) for n in policy.get("vpn_management_networks") or ())
    for n in mgmt:
        if ipaddress.ip_network(n).overlaps(pool):
            raise VpnSettingsError(f"vpn_pool {pool} overlaps the management network {n}: laptops would route the "
                                   "management traffic into the tunnel; choose a pool outside it")
    allowed = tuple(str(_network(n, "vpn_allowed_ips entry")) for n in policy.get("vpn_allowed_ips") or ())
    return pool, mgmt, allowed


def from_policy(policy: dict) -> VpnSettings:
    """Check the vpn_* values of a policy (role variables); raise VpnSettingsError on the first bad one."""
    pool, mgmt, allowed = check_networks(policy)
    gw = policy.get("vpn_gateway_address") or str(next(pool.hosts()))
    try:
        gw_ip = ipaddress.ip_address(str(gw))
    except ValueError:
        raise VpnSettingsError(f"invalid vpn_gateway_address {str(gw)[:60]!r}") from None
    if gw_ip not in pool:
        raise VpnSettingsError(f"vpn_gateway_address {gw_ip} is not in vpn_pool {pool}")
    endpoint = str(policy.get("vpn_endpoint") or "")
    check_endpoint(endpoint)
    key = check_public_key(policy.get("vpn_gateway_public_key"), "gateway public key (vpn_gateway_public_key)")
    iface = str(policy.get("vpn_interface") or "wg0")
    if not INTERFACE_RE.fullmatch(iface):
        raise VpnSettingsError(f"invalid vpn_interface {iface[:40]!r}: 1-15 characters of letters, digits, _=+.-")
    mtu = _int(policy.get("vpn_mtu", 1420), "vpn_mtu")
    if not MTU_RANGE[0] <= mtu <= MTU_RANGE[1]:
        raise VpnSettingsError(f"vpn_mtu {mtu} is out of range: {MTU_RANGE[0]}..{MTU_RANGE[1]} (1280 is the IPv6 "
                               "minimum; above 1420 packets fragment on a 1500-byte link)")
    keepalive = _int(policy.get("vpn_keepalive", 25), "vpn_keepalive")
    if not 0 <= keepalive <= 65535:
        raise VpnSettingsError(f"vpn_keepalive {keepalive} is out of range: 0 (off) .. 65535 seconds")
    tunnel = str(policy.get("vpn_tunnel", "split"))
    if tunnel not in ("split", "full"):
        raise VpnSettingsError(f"vpn_tunnel must be split or full, not {tunnel!r}")
    dns = tuple(str(d) for d in policy.get("vpn_dns") or ())
    for d in dns:
        if not _is_ip(d) and not HOST_RE.fullmatch(d):
            raise VpnSettingsError(f"invalid vpn_dns entry {d[:60]!r}: a resolver address or a search domain")
    port = _int(policy.get("vpn_gateway_listen_port", 51820), "vpn_gateway_listen_port")
    if not 1 <= port <= 65535:
        raise VpnSettingsError(f"vpn_gateway_listen_port {port} is out of range 1..65535")
    return VpnSettings(pool=str(pool), gateway_address=str(gw_ip), endpoint=endpoint, gateway_public_key=key,
                       interface=iface, dns=dns, tunnel=tunnel, allowed_ips=allowed, keepalive=keepalive, mtu=mtu,
                       kill_switch=bool(policy.get("vpn_kill_switch", False)), management_networks=mgmt,
                       listen_port=port)


def _int(value, what: str) -> int:
    if isinstance(value, bool):
        raise VpnSettingsError(f"{what} must be a number, not {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise VpnSettingsError(f"{what} must be a number, not {str(value)[:30]!r}") from None
