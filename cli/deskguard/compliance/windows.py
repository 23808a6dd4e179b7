"""Judges for the posture sections whose Windows facts differ from Linux (deskguard_posture.ps1): LCK-001,
FW-001, UPD-001, USB-001..003, VPN-001..003. Where a Windows fact means the same as a Linux one the .ps1 emits
the Linux key and the Linux judge scores both (UPD-002, AGT-001, NET-*); ENC-* are in disk.py.

The posture says which judge applies: `posture.os.family` is "Windows" on Windows (the Linux `os` section
has no family). Expected values are the ones the roles' Windows tasks write, from the same policy variables.
"""

from __future__ import annotations

from ..site import module_utils
from .laptop_judged import vpn as linux_vpn
from .results import PolicyError, Result
from .wording import shown


def family(posture: dict | None) -> str:
    return ((posture or {}).get("os") or {}).get("family") or "Linux"


def known_family(posture: dict, windows_host: bool) -> dict:
    """The posture with its family stated when the laptop could not say it: a Windows host whose `os` section
    failed (or is missing from a check-in) is still judged by the Windows judges, never by the Linux ones on
    Windows facts. `windows_host`: the host is reached over a PowerShell connection (winrm/psrp)."""
    seen = (posture or {}).get("os") or {}
    if not windows_host or "family" in seen:
        return posture
    return {**(posture or {}), "os": {**seen, "family": "Windows"}}


def by_os(linux, windows):
    """A judge(section, policy, posture) that scores a Windows posture with `windows`, any other with `linux`."""
    def judge(p, policy, posture=None):
        return (windows if family(posture) == "Windows" else linux)(p, policy, posture)
    return judge


def _check(cid: str, observed, expected, problems: list[str]):
    return Result(cid, "fail" if problems else "pass", observed, expected, problems)


def screen_lock(p: dict, policy: dict, _posture: dict | None = None):
    """LCK-001: the machine inactivity limit (a machine policy, which a user cannot change) within the policy."""
    limit = int(policy.get("screen_lock_idle_minutes", 5)) * 60
    timeout = p.get("inactivity_timeout_secs")
    observed = {"inactivity_timeout_secs": timeout, "screen_saver_policies": p.get("screen_saver_policies") or []}
    expected = {"inactivity_timeout_secs": f"1..{limit} s"}
    problems = []
    if timeout is None:
        problems.append("InactivityTimeoutSecs is not set: Windows does not lock an idle session")
    elif not isinstance(timeout, int) or not 0 < timeout <= limit:
        problems.append(f"InactivityTimeoutSecs is {shown(timeout, 's')}, policy wants 1..{limit} s")
    return _check("LCK-001", observed, expected, problems)


PROFILES = ("Domain", "Private", "Public")


def firewall(p: dict, policy: dict, _posture: dict | None = None):
    """FW-001: every profile on with inbound blocked by default, as the firewall role sets it (WinRM stays
    reachable through its own rule, reported)."""
    profiles = p.get("profiles") or {}
    observed = {name: {"enabled": (profiles.get(name) or {}).get("enabled"),
                       "inbound": (profiles.get(name) or {}).get("default_inbound_action")} for name in PROFILES}
    observed["management_rules"] = p.get("management_rules") or []
    expected = {name: {"enabled": "True", "inbound": "Block"} for name in PROFILES}
    problems = []
    for name in PROFILES:
        prof = profiles.get(name)
        if prof is None:
            problems.append(f"the {name} profile was not reported")
            continue
        if prof.get("enabled") != "True":
            problems.append(f"the {name} profile is off (Enabled={prof.get('enabled') or 'not reported'})")
        if prof.get("default_inbound_action") != "Block":
            problems.append(f"the {name} profile's inbound default is {prof.get('default_inbound_action') or 'not reported'}, "
                            "not Block")
    return _check("FW-001", observed, expected, problems)


def update_policy(policy: dict) -> dict:
    """The Windows Update AU values the auto_update role writes (roles/auto_update/vars/main.yml,
    __auto_update_windows_values; tests/windows/test_posture_windows.py keeps the two equal)."""
    hour = int(str(policy.get("auto_update_window_start", "06:00")).split(":")[0])
    return {"NoAutoUpdate": 0, "AUOptions": 4, "ScheduledInstallDay": 0, "ScheduledInstallTime": hour,
            "NoAutoRebootWithLoggedOnUsers": 1,
            "AlwaysAutoRebootAtScheduledTime": 1 if policy.get("auto_update_reboot") else 0}


def updates(p: dict, policy: dict, _posture: dict | None = None):
    """UPD-001: the automatic-install policy in force and the update service not disabled."""
    want = update_policy(policy)
    seen = p.get("policy") or {}
    service = p.get("service") or {}
    observed = {"policy": seen, "service_start_type": service.get("start_type")}
    expected = {"policy": want, "service_start_type": "not Disabled"}
    problems = [f"{name} is {shown(seen.get(name))}, policy wants {value}" for name, value in want.items()
                if seen.get(name) != value]
    if service.get("start_type") == "Disabled":
        problems.append("the Windows Update service (wuauserv) is disabled")
    return _check("UPD-001", observed, expected, problems)


# ------------------------------------------------------------------------------------------------ USB

def _usb_expected(policy: dict) -> dict:
    from .policy import approved_usb_devices

    utils = module_utils("deskguard_usb_windows")
    try:
        return utils.windows_usb_values(policy.get("usb_control_mode"), approved_usb_devices(policy),
                                        policy.get("usb_control_windows_extra_allow_ids") or [])
    except utils.PolicyError as exc:
        raise PolicyError(str(exc)) from None


def _list_problem(key: str, seen: dict, wanted: dict) -> str:
    def show(entries):
        return ", ".join(sorted(map(str, entries.values()))) or "nothing"
    return f"{key} lists {show(seen)}, policy wants {show(wanted)}"


def usb(p: dict, policy: dict, _posture: dict | None = None) -> dict:
    """USB-001 the mode's values present, USB-002 the allow lists exactly the approved devices (allow_listed),
    USB-003 nothing of another mode left and the deny-class list exact: the registry as the role writes it."""
    exp = _usb_expected(policy)
    seen = {(v["path"].lower(), v["name"].lower()): v.get("data") for v in p.get("values") or []}
    lists = {key: {name: data for (path, name), data in seen.items() if path == key.lower()} for key in exp["lists"]}

    def where(v):
        return f"{v['path']}\\{v['name']}"

    missing = [f"{where(v)} is {shown(seen.get((v['path'].lower(), v['name'].lower())))}, policy wants {v['data']}"
               for v in exp["present"] if str(seen.get((v["path"].lower(), v["name"].lower()))) != str(v["data"])]
    out = {"USB-001": Result("USB-001", "fail" if missing else "pass",
                             {"values": {where(v): seen.get((v["path"].lower(), v["name"].lower()))
                                         for v in exp["present"]}, "attached": p.get("attached") or []},
                             {"mode": policy.get("usb_control_mode"),
                              "values": {where(v): v["data"] for v in exp["present"]}}, missing)}
    allow = [k for k in exp["lists"] if k.rsplit("\\", 1)[-1] in ("AllowDeviceIDs", "AllowInstanceIDs")]
    if policy.get("usb_control_mode") != "allow_listed":
        out["USB-002"] = Result("USB-002", "not_applicable", None, None, ["only in allow_listed mode"])
    else:
        wrong = [_list_problem(k, lists[k], exp["lists"][k]) for k in allow
                 if sorted(map(str, lists[k].values())) != sorted(exp["lists"][k].values())]
        out["USB-002"] = Result("USB-002", "fail" if wrong else "pass", {k: lists[k] for k in allow},
                                {k: exp["lists"][k] for k in allow}, wrong)
    stale = [f"{where(v)} is set ({shown(seen[(v['path'].lower(), v['name'].lower())])}) but belongs to another mode"
             for v in exp["absent"] if (v["path"].lower(), v["name"].lower()) in seen]
    stale += [_list_problem(k, lists[k], exp["lists"][k]) for k in exp["lists"]
              if k not in allow and sorted(map(str, lists[k].values())) != sorted(exp["lists"][k].values())]
    out["USB-003"] = Result("USB-003", "fail" if stale else "pass",
                            {"stale_values": [where(v) for v in exp["absent"]
                                              if (v["path"].lower(), v["name"].lower()) in seen]},
                            {"stale_values": [], **{k: exp["lists"][k] for k in exp["lists"] if k not in allow}}, stale)
    return out


# ------------------------------------------------------------------------------------------------ VPN

def vpn(p: dict, policy: dict, posture: dict | None = None) -> dict:
    if p.get("client") == "ikev2":
        return _ikev2(p, policy)
    # WireGuard for Windows keeps the private key inside the tunnel config, not in a key file: the file
    # check of the Linux facts is replaced by the config's ACL (SYSTEM and Administrators only), judged below.
    results = linux_vpn(dict(p, key_file={"mode": "0600", "uid": 0}), policy, posture)
    extra = []
    if p.get("config_files") and p.get("config_private") is not True:
        extra.append("the tunnel configuration (it holds the private key) is readable beyond SYSTEM and Administrators")
    service = p.get("service") or {}
    if service.get("status") != "Running":
        extra.append(f"the tunnel service {service.get('name') or 'WireGuardTunnel'} is "
                     f"{service.get('status') or 'not installed'}")
    first = results["VPN-001"]
    first.observed = {**(first.observed or {}), "service": service, "config_private": p.get("config_private")}
    if extra:
        first.status, first.evidence = "fail", first.evidence + extra
    return results


def _ikev2(p: dict, policy: dict) -> dict:
    conn = p.get("ikev2") or {}
    server = policy.get("vpn_windows_ikev2_server")
    problems = []
    if not conn:
        problems.append(f"no all-user VPN connection deskguard-{p.get('interface') or 'wg0'}")
    else:
        if conn.get("server") != server:
            problems.append(f"the connection's server is {shown(conn.get('server'))}, policy wants {shown(server)}")
        if conn.get("tunnel_type") != "Ikev2":
            problems.append(f"the connection's tunnel type is {shown(conn.get('tunnel_type'))}, not Ikev2")
    up = conn.get("status") == "Connected"
    kill = bool(policy.get("vpn_kill_switch"))
    return {
        "VPN-001": _check("VPN-001", {"connection": conn or None}, {"server": server, "tunnel_type": "Ikev2"}, problems),
        "VPN-002": Result("VPN-002", "pass" if up else "fail", {"status": conn.get("status")}, {"status": "Connected"},
                          [] if up else [f"the IKEv2 connection is {conn.get('status') or 'absent'}"]),
        "VPN-003": Result("VPN-003", "fail" if kill else "not_applicable", {"kill_switch": False}, {"kill_switch": kill},
                          ["the built-in IKEv2 client has no kill switch"] if kill else ["the policy has no kill switch"]),
    }
