# -*- coding: utf-8 -*-
"""The laptop side of VPN-001/VPN-003: its WireGuard key, tunnel config and kill switch, in one pass.

Shared by the `deskguard_wireguard` module and unit-tested without Ansible (commands go through `run`).
The private key is made here, on the laptop, written once 0600 root, and read by nothing but `wg`: the
wg-quick config loads it with PostUp, so no config text, diff, result or error message ever contains it.
Only NetworkManager needs it inline, in a 0600 root keyfile NM itself insists on.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile

KILL_SWITCH_TABLE = "deskguard_vpn"
KILL_SWITCH_UNIT = "deskguard-vpn-killswitch.service"
HEADER = "# Managed by deskguard (VPN-001); local edits are replaced at the next run.\n"


class WireGuardError(Exception):
    pass


def _run(cmd, stdin=None):
    proc = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise WireGuardError("%s failed (exit %d): %s" % (" ".join(cmd[:3]), proc.returncode,
                                                          " ".join(proc.stderr.split())[:300]))
    return proc.stdout


class Paths(object):
    """Where things live; tests point these at a temporary root."""

    def __init__(self, interface, config_dir="/etc/wireguard", state_dir="/var/lib/deskguard/vpn",
                 nm_dir="/etc/NetworkManager/system-connections", unit_dir="/etc/systemd/system",
                 nft_dir="/etc/deskguard", uapi_dir="/var/run/wireguard"):
        self.interface = interface
        self.config_dir = config_dir
        self.key = os.path.join(config_dir, interface + ".key")
        self.conf = os.path.join(config_dir, interface + ".conf")
        self.nm = os.path.join(nm_dir, "deskguard-%s.nmconnection" % interface)
        self.nft = os.path.join(nft_dir, "vpn-killswitch.nft")
        self.unit = os.path.join(unit_dir, KILL_SWITCH_UNIT)
        # wg-quick@IFACE's drop-in naming the userspace implementation (absent: the kernel module).
        self.dropin = os.path.join(unit_dir, "wg-quick@%s.service.d" % interface, "deskguard-userspace.conf")
        self.uapi_dir = uapi_dir   # where wireguard-go leaves its control socket
        self.state_dir = state_dir
        self.backup_dir = os.path.join(state_dir, "previous")


# -- key ------------------------------------------------------------------------------------------------

def public_key(paths, run=_run):
    """The public key of the laptop's key file (None if there is none). The key goes to `wg` on stdin only."""
    if not os.path.exists(paths.key):
        return None
    with open(paths.key) as fh:
        return run(["wg", "pubkey"], stdin=fh.read()).strip()


def make_key(paths, run=_run):
    """A new private key, 0600 root in a 0700 directory, replacing the old file atomically. Returns the new
    public key. The old key is kept (0600) in the backup directory while a rollback may need it."""
    os.makedirs(paths.config_dir, mode=0o700, exist_ok=True)
    os.chmod(paths.config_dir, 0o700)
    private = run(["wg", "genkey"]).strip()
    fd, tmp = tempfile.mkstemp(dir=paths.config_dir, prefix=".deskguard-key-")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (private + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, paths.key)
    pub = run(["wg", "pubkey"], stdin=private + "\n").strip()
    del private
    return pub


# -- rendering ------------------------------------------------------------------------------------------

def render_wg_quick(p):
    """wg-quick(8) config. Address is the laptop's /32 (/128): routes come from AllowedIPs only."""
    lines = [HEADER.rstrip("\n"), "[Interface]", "Address = %s/%d" % (p["address"], _host_bits(p["address"]))]
    if p.get("mtu"):
        lines.append("MTU = %d" % int(p["mtu"]))
    if p.get("dns"):
        lines.append("DNS = %s" % ", ".join(p["dns"]))
    lines.append("PostUp = wg set %%i private-key %s" % p["key_path"])
    lines += ["", "[Peer]", "PublicKey = %s" % p["gateway_public_key"], "Endpoint = %s" % p["endpoint"],
              "AllowedIPs = %s" % ", ".join(p["allowed_ips"])]
    if int(p.get("keepalive") or 0):
        lines.append("PersistentKeepalive = %d" % int(p["keepalive"]))
    return "\n".join(lines) + "\n"


def render_nm(p, private_key):
    """NetworkManager keyfile (NM ignores it unless it is 0600 root). The only file holding the key inline."""
    iface = p["interface"]
    lines = [HEADER.rstrip("\n"), "[connection]", "id=deskguard-%s" % iface, "type=wireguard",
             "interface-name=%s" % iface, "autoconnect=true", "", "[wireguard]", "private-key=%s" % private_key]
    if p.get("mtu"):
        lines.append("mtu=%d" % int(p["mtu"]))
    lines += ["", "[wireguard-peer.%s]" % p["gateway_public_key"], "endpoint=%s" % p["endpoint"],
              "allowed-ips=%s;" % ";".join(p["allowed_ips"])]
    if int(p.get("keepalive") or 0):
        lines.append("persistent-keepalive=%d" % int(p["keepalive"]))
    v4 = [a for a in [p["address"]] if ":" not in a]
    lines += ["", "[ipv4]", "method=manual", "address1=%s/32" % v4[0] if v4 else "method=disabled"]
    if p.get("dns"):
        lines.append("dns=%s;" % ";".join(d for d in p["dns"] if _is_ip(d)))
        domains = [d for d in p["dns"] if not _is_ip(d)]
        if domains:
            lines.append("dns-search=%s;" % ";".join(domains))
    if "0.0.0.0/0" in p["allowed_ips"]:
        lines.append("never-default=false")
    lines += ["", "[ipv6]", "method=ignore"]
    return "\n".join(lines) + "\n"


def render_kill_switch(p, endpoint_addresses):
    """nftables: nothing leaves except through the tunnel, to the VPN endpoint, to the management networks,
    replies of connections already made (so an SSH session from IT is never cut), DHCP, and the ports the
    captive-portal sign-in needs. Replaced atomically by `nft -f` (the table is declared, deleted, rebuilt)."""
    iface = p["interface"]
    host, port = _split_endpoint(p["endpoint"])
    rules = ['oifname "lo" accept', 'oifname "%s" accept' % iface, "ct state established,related accept",
             "udp sport 68 udp dport 67 accept", "meta l4proto ipv6-icmp accept"]
    for addr in endpoint_addresses:
        rules.append("%s daddr %s udp dport %d accept" % ("ip6" if ":" in addr else "ip", addr, port))
    for net in p.get("management_networks") or []:
        rules.append("%s daddr %s accept" % ("ip6" if ":" in net else "ip", net))
    for spec in p.get("kill_switch_captive_ports") or []:
        num, proto = str(spec).split("/")
        rules.append("%s dport %d accept" % (proto, int(num)))
    rules.append('counter reject comment "deskguard VPN-003 kill switch"')
    body = "\n".join("        " + r for r in rules)
    return (HEADER + "table inet %s\ndelete table inet %s\n" % (KILL_SWITCH_TABLE, KILL_SWITCH_TABLE)
            + "table inet %s {\n    chain output {\n        type filter hook output priority 0; policy accept;\n"
            % KILL_SWITCH_TABLE + body + "\n    }\n}\n")


def render_kill_switch_unit(nft_path):
    return (HEADER + "[Unit]\nDescription=deskguard VPN kill switch (VPN-003)\nDefaultDependencies=no\n"
            "Before=network-pre.target\nWants=network-pre.target\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\n"
            "ExecStart=/usr/sbin/nft -f %s\nExecStop=/usr/sbin/nft delete table inet %s\n\n"
            "[Install]\nWantedBy=multi-user.target\n" % (nft_path, KILL_SWITCH_TABLE))


def _host_bits(address):
    return 128 if ":" in address else 32


def _is_ip(text):
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(fam, text)
            return True
        except (OSError, ValueError):
            pass
    return False


def _split_endpoint(endpoint):
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), int(port)


def resolve_endpoint(endpoint):
    """The endpoint's addresses for the kill switch (resolved now; a gateway that moves needs a re-run)."""
    host, port = _split_endpoint(endpoint)
    if _is_ip(host):
        return [host]
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise WireGuardError("cannot resolve the VPN endpoint %s for the kill switch: %s" % (host, exc))
    return sorted({i[4][0] for i in infos})
