# -*- coding: utf-8 -*-
"""Read-only VPN facts and their evaluation: VPN-001 configured, VPN-002 tunnel up with a recent handshake,
VPN-003 kill switch. `gather` reads the laptop (no change, ever); `evaluate` is pure, so the module, a later
`endpoint_posture` module and the agent all judge the same facts the same way."""

from __future__ import annotations

import os
import stat
import subprocess
import time

# WireGuard re-handshakes every 2 minutes while there is traffic, and persistent keepalive makes traffic:
# an older handshake than this means the tunnel is not working (a quiet tunnel without keepalive looks alike,
# which is why the policy's keepalive is on by default).
DEFAULT_HANDSHAKE_MAX_AGE = 180


def _out(cmd):
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError:
        return None
    return proc.stdout if proc.returncode == 0 else None


ROLLBACK_TIMER = "deskguard-vpn-rollback.timer"   # deskguard_rollback.VPN_UNIT; its script needs the saved files


def gather(interface, key_path, conf_paths, kill_switch_table, now=None, out=_out, saved_dir=None):
    """What is on the laptop now. Never reads the private key itself: `wg` derives the public key; of the
    files a VPN change kept aside for its rollback (``saved_dir``, the previous key among them) only whether
    any is left while no rollback timer runs."""
    now = time.time() if now is None else now
    facts = {"interface": interface, "config_files": [p for p in conf_paths if os.path.exists(p)],
             "key_file": None, "interface_up": False, "public_key": None, "peers": [], "kill_switch": False,
             "previous_key_left": None}
    if saved_dir and os.path.isdir(saved_dir) and os.listdir(saved_dir):
        if out(["systemctl", "is-active", ROLLBACK_TIMER]) is None:
            facts["previous_key_left"] = saved_dir
    try:
        st = os.stat(key_path)
        facts["key_file"] = {"mode": "%04o" % stat.S_IMODE(st.st_mode), "uid": st.st_uid}
    except OSError:
        pass
    dump = out(["wg", "show", interface, "dump"])
    if dump is not None:
        facts["interface_up"] = True
        lines = dump.splitlines()
        if lines:
            # Line 1 is the interface: private key, public key, port, fwmark. The private key is dropped here.
            fields = lines[0].split("\t")
            facts["public_key"] = fields[1] if len(fields) > 1 and fields[1] != "(none)" else None
        for line in lines[1:]:
            f = line.split("\t")
            if len(f) < 8:
                continue
            hs = int(f[4] or 0)
            facts["peers"].append({"public_key": f[0], "endpoint": None if f[2] == "(none)" else f[2],
                                   "allowed_ips": [] if f[3] == "(none)" else f[3].split(","),
                                   "latest_handshake_age": int(now - hs) if hs else None,
                                   "rx_bytes": int(f[5]), "tx_bytes": int(f[6])})
    table = out(["nft", "list", "table", "inet", kill_switch_table])
    facts["kill_switch"] = bool(table) and "reject" in table and "hook output" in table
    return facts


def evaluate(facts, expected):
    """Per control: {state: compliant|noncompliant|not_applicable, observed, expected, findings}."""
    gw = expected.get("gateway_public_key")
    peer = next((p for p in facts.get("peers", []) if p["public_key"] == gw), None)
    problems = []
    if not facts.get("config_files"):
        problems.append("no tunnel configuration")
    key = facts.get("key_file")
    if key is None:
        problems.append("no private key file")
    elif key["mode"] != "0600" or key["uid"] != 0:
        problems.append("private key file is %s uid %d, not 0600 root" % (key["mode"], key["uid"]))
    if not facts.get("interface_up"):
        problems.append("interface %s is not up" % facts.get("interface"))
    elif peer is None:
        problems.append("the gateway is not a peer of %s" % facts.get("interface"))
    if expected.get("public_key") and facts.get("public_key") and facts["public_key"] != expected["public_key"]:
        problems.append("the laptop's key is not the one enrolled")
    if facts.get("previous_key_left"):
        problems.append("a previous private key is still on the laptop (%s): no rollback needs it any more"
                        % facts["previous_key_left"])
    vpn1 = {"state": "noncompliant" if problems else "compliant", "findings": problems,
            "observed": {"interface_up": facts.get("interface_up"), "config_files": facts.get("config_files")},
            "expected": {"interface": facts.get("interface"), "gateway_public_key": gw}}
    max_age = int(expected.get("handshake_max_age") or DEFAULT_HANDSHAKE_MAX_AGE)
    age = peer["latest_handshake_age"] if peer else None
    up = age is not None and age <= max_age
    vpn2 = {"state": "compliant" if up else "noncompliant",
            "findings": [] if up else ["no handshake with the gateway" if age is None
                                       else "last handshake %d s ago (more than %d s)" % (age, max_age)],
            "observed": {"latest_handshake_age": age}, "expected": {"max_age": max_age}}
    if not expected.get("kill_switch"):
        vpn3 = {"state": "not_applicable", "findings": ["the policy has no kill switch"],
                "observed": {"kill_switch": facts.get("kill_switch")}, "expected": {"kill_switch": False}}
    else:
        on = bool(facts.get("kill_switch"))
        vpn3 = {"state": "compliant" if on else "noncompliant", "findings": [] if on else ["kill switch not loaded"],
                "observed": {"kill_switch": on}, "expected": {"kill_switch": True}}
    return {"VPN-001": vpn1, "VPN-002": vpn2, "VPN-003": vpn3}
