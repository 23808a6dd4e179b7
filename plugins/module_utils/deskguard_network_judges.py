"""NET-001 not tethered / not on mobile data, NET-002 no open Wi-Fi, NET-003 call system reachable through the
VPN within the policy's latency / jitter / loss limits: the judges of the `network` observation
(deskguard_network.gather). One copy for both sides: the controller (cli/deskguard/compliance/network.py wraps
each result for the nightly run and `deskguard netcheck`) and the laptop (deskguard_operator_netwatch.py, which
tells the operator at login and on every network change). Evidence lines are sentences a helpdesk can read out.

Anything the laptop could not determine makes the control an `error`, never a `pass`; a definite problem
makes it a `fail` (which outranks an unknown). Each judge returns a plain dict {id, status, observed, expected,
evidence}. Pure Python 3.9+ stdlib (f-strings, no controller import).
"""

from __future__ import annotations

try:  # inside a module (Ansiballz) the kit's module_utils live under ansible.module_utils
    from ansible.module_utils import deskguard_network
except ImportError:  # unit tests, the controller and the agent import them as plain modules
    import deskguard_network

MOBILE_KINDS = {"usb_tether": "a phone's USB tethering", "bluetooth_pan": "a phone's Bluetooth tethering",
                "mobile_broadband": "a mobile broadband modem"}
ALLOWED_NETWORKS = "the home broadband or the company mobile Wi-Fi"


def _result(cid, observed, expected, problems, unknowns):
    status = "fail" if problems else "error" if unknowns else "pass"
    return {"id": cid, "status": status, "observed": observed, "expected": expected,
            "evidence": problems + [f"could not determine: {u}" for u in unknowns]}


def company_router(wifi: dict | None, policy: dict) -> dict | None:
    """The policy's company mobile Wi-Fi router the laptop is on (SSID pattern and, when given, BSSID), or None."""
    if not wifi or not wifi.get("ssid"):
        return None
    for router in policy.get("network_posture_company_routers") or []:
        if not isinstance(router, dict) or not deskguard_network.ssid_matches(wifi["ssid"], [router.get("ssid", "")]):
            continue
        bssids = router.get("bssid") or []
        bssids = [bssids] if isinstance(bssids, str) else bssids
        if not bssids or (wifi.get("bssid") or "").lower() in {str(b).lower() for b in bssids}:
            return router
    return None


def hotspot_patterns(policy: dict) -> list[str]:
    extra = policy.get("network_posture_hotspot_ssids") or []
    return list(deskguard_network.DEFAULT_HOTSPOT_SSIDS) + [str(p) for p in extra]


def tethering(p: dict, policy: dict, _posture: dict | None = None):
    uplink, wifi = p.get("uplink") or {}, p.get("wifi") or {}
    nm = p.get("networkmanager") or {}
    router = company_router(wifi, policy) if uplink.get("kind") == "wifi" else None
    observed = {"interface": uplink.get("interface"), "kind": uplink.get("kind"), "driver": uplink.get("driver"),
                "usb_id": uplink.get("usb_id"), "ssid": wifi.get("ssid"), "bssid": wifi.get("bssid"),
                "android_metered": p.get("android_metered"), "nm_metered": nm.get("metered"),
                "company_router": router.get("ssid") if router else None}
    expected = {"link": ALLOWED_NETWORKS}
    problems, unknowns = [], []
    kind = uplink.get("kind")
    if not uplink:
        unknowns.append("no default route was found (offline, or `ip` missing)" if not p.get("default_routes")
                        else "the default route's interface could not be read")
    elif kind == "unknown":
        unknowns.append(f"what kind of link {uplink.get('interface')} is"
                        + ("" if uplink.get("present", True) else " (it disappeared during the check)"))
    elif kind in MOBILE_KINDS:
        allowed = {str(a).lower() for a in policy.get("network_posture_allowed_usb_adapters") or []}
        if kind == "usb_tether" and (uplink.get("usb_id") or "").lower() in allowed:
            kind = "wired"  # a company USB-Ethernet dock that uses a CDC driver: judged like any wired link
        else:
            how = f"driver {uplink['driver']}" if uplink.get("driver") else f"interface {uplink.get('interface')}"
            problems.append(f"Connected through {MOBILE_KINDS[kind]} ({how}"
                            + (f", USB id {uplink['usb_id']}" if uplink.get("usb_id") else "") + ").")
    if kind == "wifi" and router is None:
        pattern = deskguard_network.ssid_matches(wifi.get("ssid"), hotspot_patterns(policy))
        if pattern:
            problems.append(f"Connected to the Wi-Fi \"{wifi['ssid']}\", whose name matches the phone hotspot "
                            f"pattern \"{pattern}\".")
        if "android_softap_bssid" in (wifi.get("bssid_hints") or []):
            problems.append(f"The Wi-Fi's BSSID {wifi['bssid']} is an Android phone's hotspot address (02:1a:11).")
    if router is None and kind not in MOBILE_KINDS:
        if p.get("android_metered"):
            problems.append("The network's DHCP lease carries ANDROID_METERED: an Android phone is sharing its "
                            "mobile data.")
        if nm.get("metered") in ("yes", "guess_yes"):
            problems.append(f"NetworkManager marks the connection metered ({nm['metered'].replace('_', ' ')}).")
    return _result("NET-001", observed, expected, problems, unknowns)


def open_wifi(p: dict, policy: dict, _posture: dict | None = None):
    uplink, wifi = p.get("uplink") or {}, p.get("wifi") or {}
    observed = {"kind": uplink.get("kind"), "ssid": wifi.get("ssid"), "security": wifi.get("security")}
    expected = {"security": "WPA2, WPA3 or enterprise (not open, not WEP)"}
    problems, unknowns = [], []
    if not uplink or uplink.get("kind") == "unknown":
        unknowns.append("which link carries the traffic")
    elif uplink.get("kind") == "wifi":
        sec = wifi.get("security") or "unknown"
        if sec == "open":
            problems.append(f"Connected to the open Wi-Fi \"{wifi.get('ssid')}\" (no encryption): anyone nearby "
                            f"can watch the traffic.")
        elif sec == "wep":
            problems.append(f"Connected to the Wi-Fi \"{wifi.get('ssid')}\" with WEP, which is broken encryption.")
        elif sec == "unknown":
            unknowns.append(f"the security of the Wi-Fi \"{wifi.get('ssid')}\"")
    return _result("NET-002", observed, expected, problems, unknowns)


def limits(policy: dict) -> dict:
    return {"rtt_ms": float(policy.get("network_posture_max_rtt_ms", 150)),
            "jitter_ms": float(policy.get("network_posture_max_jitter_ms", 30)),
            "loss_pct": float(policy.get("network_posture_max_loss_pct", 2))}


def call_system(p: dict, policy: dict, _posture: dict | None = None):
    wanted = policy.get("network_posture_call_system") or []
    if not wanted:
        return {"id": "NET-003", "status": "not_applicable", "observed": None, "expected": None,
                "evidence": ["the policy names no call system"]}
    lim, via_vpn = limits(policy), bool(policy.get("network_posture_require_vpn", True))
    vpn, cs = p.get("vpn") or {}, p.get("call_system") or {}
    samples = cs.get("samples") or {}
    observed = {"vpn_up": vpn.get("up"), "vpn_handshake_age": vpn.get("handshake_age"),
                "targets": {t["host"]: {"resolved": t.get("resolved"), "through_vpn": t.get("through_vpn"),
                                        "ports": {k: v.get("state") for k, v in (t.get("ports") or {}).items()}}
                            for t in cs.get("targets") or []},
                **{k: samples.get(k) for k in ("rtt_avg_ms", "jitter_ms", "loss_pct")}}
    expected = {"through_vpn": via_vpn, "rtt_avg_ms": f"<= {lim['rtt_ms']:g}",
                "jitter_ms": f"<= {lim['jitter_ms']:g}", "loss_pct": f"<= {lim['loss_pct']:g}"}
    problems, unknowns = [], []
    if via_vpn:
        max_age = deskguard_network.deskguard_vpn_facts.DEFAULT_HANDSHAKE_MAX_AGE
        if not vpn:
            unknowns.append("the VPN's state")
        elif not vpn.get("up"):
            problems.append(f"VPN is down: the tunnel interface {vpn.get('interface')} is not up.")
        elif vpn.get("handshake_age") is None or vpn["handshake_age"] > max_age:
            problems.append(f"VPN is down: interface {vpn.get('interface')} is up but the gateway has not answered"
                            + (f" for {vpn['handshake_age']} s." if vpn.get("handshake_age") is not None else "."))
    if not cs:
        unknowns.append("the call system was not probed (the network_posture role has not deployed its targets)")
    for t in cs.get("targets") or []:
        host = t["host"]
        if t.get("resolved") is False:
            problems.append(f"The call system's name {host} does not resolve ({t.get('error')}).")
            continue
        if t.get("resolved") is None:
            unknowns.append(f"{host}: {t.get('error') or 'not resolved'}")
            continue
        if via_vpn and t.get("through_vpn") is False:
            problems.append(f"The call system {host} is reached via {t.get('route_dev')}, not through the VPN.")
        elif via_vpn and t.get("through_vpn") is None:
            unknowns.append(f"which interface carries the route to {host}")
        for port, r in (t.get("ports") or {}).items():
            if r["state"] == "refused":
                problems.append(f"The call system {host} refuses connections on port {port}.")
            elif r["state"] == "unknown":
                unknowns.append(f"{host} port {port} did not answer in time")
            elif r["state"] != "open":
                problems.append(f"The call system {host} port {port} cannot be reached ({r['state']}).")
    if samples:
        reach = "Call system reachable"
        if samples.get("received") == 0:
            problems.append(f"The call system stopped answering: {samples.get('sent')} of {samples.get('sent')} "
                            f"samples lost.")
        else:
            if samples["loss_pct"] > lim["loss_pct"]:
                problems.append(f"{reach}, {samples['loss_pct']:g}% packet loss exceeds {lim['loss_pct']:g}%: calls "
                                f"will break up.")
            if samples.get("jitter_ms") is not None and samples["jitter_ms"] > lim["jitter_ms"]:
                problems.append(f"{reach}, jitter {samples['jitter_ms']:g} ms exceeds {lim['jitter_ms']:g} ms: voice "
                                f"quality will suffer.")
            if samples["rtt_avg_ms"] > lim["rtt_ms"]:
                problems.append(f"{reach}, round trip {samples['rtt_avg_ms']:g} ms exceeds {lim['rtt_ms']:g} ms: "
                                f"expect delay and talk-over.")
    elif cs and not problems:
        unknowns.append("no RTT samples (no call-system port answered)")
    return _result("NET-003", observed, expected, problems, unknowns)


JUDGES = {"NET-001": tethering, "NET-002": open_wifi, "NET-003": call_system}

# The policy variables the judges read; the network_posture role leaves them on the laptop (network-posture.json,
# key "policy") so the laptop judges with the controller's policy.
POLICY_KEYS = ("network_posture_call_system", "network_posture_require_vpn", "network_posture_max_rtt_ms",
               "network_posture_max_jitter_ms", "network_posture_max_loss_pct", "network_posture_hotspot_ssids",
               "network_posture_company_routers", "network_posture_allowed_usb_adapters")


def judge_all(network, policy):
    """[{id, status, observed, expected, evidence}] for NET-001..003, in that order."""
    return [judge(network, policy) for judge in JUDGES.values()]
