# -*- coding: utf-8 -*-
"""The gateway side: make a running WireGuard interface carry exactly the enrolled laptops, without touching
its other peers or any established session (`wg syncconf`), and keep that list for the next boot.

`wg syncconf` sets the *whole* interface: a file without PrivateKey/ListenPort clears the key and moves the
port (seen on wireguard-go in the lab). So the interface's own section is carried over from `wg showconf`
into a 0600 file that exists only for the sync, and is never returned.

Which peers are the kit's is remembered in a state file: a peer the kit never added (a site-to-site link, an
admin's own laptop) is always kept; one the kit added and the store no longer lists (a removed device, a
rotated key) is dropped.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile


class GatewayError(Exception):
    pass


def _run(cmd):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise GatewayError("%s failed (exit %d): %s" % (" ".join(cmd[:3]), proc.returncode,
                                                        " ".join(proc.stderr.split())[:300]))
    return proc.stdout


def running_peers(interface, run=_run):
    """{public key: {allowed_ips, endpoint, keepalive}} of the running interface (the key line skipped)."""
    peers = {}
    for line in run(["wg", "show", interface, "dump"]).splitlines()[1:]:
        f = line.split("\t")
        if len(f) < 8:
            continue
        peers[f[0]] = {"allowed_ips": [] if f[3] == "(none)" else sorted(f[3].split(",")),
                       "endpoint": None if f[2] == "(none)" else f[2],
                       "keepalive": 0 if f[7] == "off" else int(f[7]),
                       "preshared": f[1] != "(none)"}
    return peers


def interface_section(interface, run=_run):
    """The [Interface] lines of the running config (PrivateKey, ListenPort, FwMark): for the sync file only."""
    lines = []
    for line in run(["wg", "showconf", interface]).splitlines():
        if line.strip().startswith("[Peer]"):
            break
        if line.strip() and not line.strip().startswith("["):
            lines.append(line.strip())
    return lines


def load_managed(path):
    try:
        with open(path) as fh:
            return set(json.load(fh).get("managed", []))
    except (OSError, ValueError):
        return set()


def plan(running, managed, wanted):
    """(peers to keep as they are, kit peers wanted, keys to drop, changed?)."""
    foreign = {k: v for k, v in running.items() if k not in managed and k not in wanted}
    drop = sorted(k for k in running if k in managed and k not in wanted)
    differs = bool(drop) or any(k not in running or running[k]["allowed_ips"] != sorted(v["allowed_ips"])
                                for k, v in wanted.items())
    return foreign, drop, differs


def render_peers(foreign, wanted, interface_lines=()):
    """A config for `wg syncconf`: the interface's own lines as they are, then every peer to keep."""
    lines = ["[Interface]"] + list(interface_lines)
    for key, peer in sorted(foreign.items()):
        if peer.get("preshared"):
            raise GatewayError("peer %s uses a preshared key this kit cannot carry over; add it to the gateway's "
                               "own config file instead" % key)
        lines += ["", "[Peer]", "PublicKey = %s" % key]
        if peer["allowed_ips"]:
            lines.append("AllowedIPs = %s" % ", ".join(peer["allowed_ips"]))
        if peer.get("endpoint"):
            lines.append("Endpoint = %s" % peer["endpoint"])
        if peer.get("keepalive"):
            lines.append("PersistentKeepalive = %d" % peer["keepalive"])
    for key, peer in sorted(wanted.items()):
        lines += ["", "[Peer]", "PublicKey = %s" % key, "AllowedIPs = %s" % ", ".join(peer["allowed_ips"])]
    return "\n".join(lines) + "\n"


def sync(interface, peers, state_path, persist_path, check_mode=False, run=_run):
    wanted = {p["public_key"]: {"allowed_ips": sorted(p["allowed_ips"])} for p in peers}
    running = running_peers(interface, run)
    managed = load_managed(state_path)
    foreign, drop, differs = plan(running, managed, wanted)
    result = {"changed": differs, "added": sorted(k for k in wanted if k not in running), "removed": drop,
              "kept_foreign": len(foreign), "peers": len(wanted)}
    if not differs or check_mode:
        return result
    d = os.path.dirname(state_path)
    os.makedirs(d, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".deskguard-sync-")   # 0600: it holds the gateway's key
    try:
        os.write(fd, render_peers(foreign, wanted, interface_section(interface, run)).encode())
        os.close(fd)
        run(["wg", "syncconf", interface, tmp])
    finally:
        os.unlink(tmp)
    _write(state_path, json.dumps({"managed": sorted(wanted)}, indent=1) + "\n")
    if persist_path:
        # For boot: `PostUp = wg addconf %i <persist_path>` in the gateway's wg-quick file (docs/vpn.md).
        _write(persist_path, render_peers({}, wanted).replace("[Interface]\n\n", "", 1))
    return result


def _write(path, text):
    d = os.path.dirname(path)
    os.makedirs(d, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".deskguard-")
    os.write(fd, text.encode())
    os.fchmod(fd, 0o600)
    os.close(fd)
    os.rename(tmp, path)
