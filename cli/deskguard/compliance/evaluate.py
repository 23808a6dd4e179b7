"""Judge one host's collected posture against its policy: one Result per control.

Pure functions of (posture, collection errors, policy variables, today): the same evaluation for the CLI,
AWX (the action plugin calls it) and, later, agent check-ins. The policy variables are the host's own
(group_vars/all + host_vars), so per-host exceptions work as they do for the roles.
"""

from __future__ import annotations

import datetime as dt

from . import accounts, network, software, windows
from .catalog import CONTROLS
from .laptop_judged import usb, vpn
from .results import PASSING, STATUSES, PolicyError, Result, _check, settle
from .wording import shown


# ------------------------------------------------------------------------------------------ evaluators

def screen_lock(p: dict, policy: dict, _posture: dict | None = None) -> Result:
    minutes = int(policy.get("screen_lock_idle_minutes", 5))
    expected = {"idle_delay": f"1..{minutes * 60} s", "lock_enabled": True, "locked": True, "db_compiled": True}
    observed = {k: p.get(k) for k in ("idle_delay", "lock_enabled", "db_compiled")}
    observed["locked"] = p.get("locked") or []
    problems = []
    delay = p.get("idle_delay")
    if not isinstance(delay, int) or not 0 < delay <= minutes * 60:
        problems.append(f"idle-delay is {shown(delay, 's')}, policy wants 1..{minutes * 60} s")
    if p.get("lock_enabled") is not True:
        problems.append("screen lock is not enabled")
    for key in ("/org/gnome/desktop/session/idle-delay", "/org/gnome/desktop/screensaver/lock-enabled"):
        if key not in (p.get("locked") or []):
            problems.append(f"{key} is not locked (the user can change it)")
    if not p.get("profile_uses_local_db"):
        problems.append("the dconf user profile does not read the system database")
    if not p.get("db_compiled"):
        problems.append("the dconf database is older than its settings (dconf update not run)")
    return _session_checked(p.get("session"), minutes * 60, observed, expected, problems)


def _session_checked(session: dict | None, limit: int, observed: dict, expected: dict, problems: list[str]) -> Result:
    """LCK-001 by what the operator's session gets: a pass needs GNOME's own reader to have answered (values
    within the policy, not writable by the operator); wrong files fail either way; otherwise "not checked"."""
    session = session or {}
    observed["desktop"] = session.get("desktop")
    # Flat keys (no nested mapping): every report format shows them as they are.
    expected.update({"session_idle_delay": f"1..{limit} s", "session_lock_enabled": True, "session_writable": []})
    if session.get("checked"):
        values, writable = session.get("values") or {}, session.get("writable") or {}
        observed.update({"session_read_by": session.get("reader"), "session_idle_delay": values.get("idle_delay"),
                         "session_lock_enabled": values.get("lock_enabled"),
                         "session_writable": sorted(k for k, v in writable.items() if v)})
        delay = values.get("idle_delay")
        if not isinstance(delay, int) or not 0 < delay <= limit:
            problems.append(f"the operator's session gets idle-delay {shown(delay, 's')} (GNOME), policy wants 1..{limit} s")
        if values.get("lock_enabled") is not True:
            problems.append("the operator's session has the screen lock off (GNOME)")
        for key in ("idle_delay", "lock_enabled"):
            if writable.get(key) is not False:
                problems.append(f"the operator can change {key.replace('_', '-')} in their session (gsettings writable)")
        return _check("LCK-001", observed, expected, problems)
    if problems:
        return _check("LCK-001", observed, expected, problems)
    why = session.get("why") or "this laptop's posture has no reading of the session (an older agent)"
    return Result("LCK-001", "not_checked", observed, expected,
                  [f"the idle lock the operator's session gets was not read: {why}; the dconf files are as the policy says"])


def firewall(p: dict, policy: dict, _posture: dict | None = None) -> Result:
    sources = list(policy.get("firewall_management_sources") or [])
    port = str(policy.get("firewall_management_port", 22))
    expected = {"active": True, "incoming": "DROP or REJECT", "management": [f"{s} -> {port}/tcp" for s in sources]}
    defaults = p.get("defaults") or {}
    observed = {"tool": p.get("tool"), "active": p.get("active"), "incoming": defaults.get("input"),
                "rules": (p.get("rules") or [])}
    problems = []
    if not p.get("tool"):
        problems.append("no firewall tool (ufw) installed")
    if p.get("active") is not True:
        problems.append("the firewall is not active")
    if defaults.get("input") not in ("DROP", "REJECT"):
        problems.append(f"inbound default is {shown(defaults.get('input'))}, not deny")
    for src in sources:
        if not any(f"from {src} " in r and f"port {port}" in r for r in (p.get("rules") or [])):
            problems.append(f"no rule lets the management network {src} reach port {port}")
    return _check("FW-001", observed, expected, problems)


def updates(p: dict, policy: dict, _posture: dict | None = None) -> Result:
    expected = {"installed": True, "periodic_unattended_upgrade": "1", "periodic_update_lists": "1",
                "timers": "enabled", "origins": "security only" if policy.get("auto_update_security_only", True)
                else "any"}
    observed = {k: p.get(k) for k in ("installed", "periodic_unattended_upgrade", "periodic_update_lists",
                                      "timers", "origins")}
    problems = []
    if not p.get("installed"):
        problems.append("unattended-upgrades is not installed")
    for key, name in (("periodic_unattended_upgrade", "APT::Periodic::Unattended-Upgrade"),
                      ("periodic_update_lists", "APT::Periodic::Update-Package-Lists")):
        if p.get(key) != "1":
            problems.append(f"{name} is {shown(p.get(key))}, not \"1\"")
    if p.get("timers") != ["enabled", "enabled"]:
        problems.append(f"apt-daily timers are {shown(p.get('timers'))}, not both enabled")
    origins = p.get("origins") or []
    if not origins:
        problems.append("no update origins configured")
    elif policy.get("auto_update_security_only", True) and not all("security" in o.lower() for o in origins):
        problems.append("origins beyond security updates: " + ", ".join(o for o in origins if "security" not in o.lower()))
    return _check("UPD-001", observed, expected, problems)


def updates_applied(p: dict, policy: dict, posture: dict) -> Result:
    max_days = float(policy.get("auto_update_max_age_days", 7))
    age, up_days = p.get("last_run_age_days"), (posture.get("os") or {}).get("uptime_seconds", 0) / 86400
    observed = {"reboot_pending": p.get("reboot_pending"), "last_run_age_days": age}
    expected = {"reboot_pending": False, "last_run_age_days": f"<= {max_days:g}"}
    problems = []
    # Linux names the packages that want the reboot, Windows the registry markers that say so.
    reasons = p.get("reboot_packages") or p.get("reboot_reasons") or []
    tool = p.get("tool") or "unattended-upgrades"
    if p.get("reboot_pending"):
        problems.append("reboot pending after updates (" + (", ".join(reasons) or "system") + ")")
    if age is None and up_days > max_days:
        problems.append(f"{tool} has never installed updates in {up_days:.0f} days of uptime")
    elif age is not None and age > max_days:
        problems.append(f"last {tool} run {age:.1f} days ago (policy: {max_days:g})")
    return _check("UPD-002", observed, expected, problems)


DISK_EXPECTED = {
    "Linux": {"ENC-001": "root and swap on LUKS2, approved cipher",
              "ENC-002": "an active escrowed key matching a keyslot on every volume",
              "ENC-003": "every keyslot escrowed or in the enrolment baseline",
              "ENC-004": "the root bound to this machine's TPM on the policy's PCRs, the TPM releases its key, "
                         "no key file in the initramfs (disk_encryption_linux_unlock: tpm2)"},
    "Windows": {"ENC-001": "OS volume fully encrypted with the policy's method, BitLocker protection on",
                "ENC-002": "an escrowed recovery password whose protector id is on the OS volume",
                "ENC-003": "every recovery-password protector escrowed; no startup key, password or key file",
                "ENC-004": "not applicable on Windows (BitLocker's TPM protector is ENC-001's)"},
}


def disk(escrow_outcome, family: str = "Linux") -> list[Result]:
    """ENC-001..004 from the escrow verification's outcome (deskguard.compliance.disk: LUKS keyslots or
    BitLocker protectors compared with the escrow records)."""
    controls = escrow_outcome.controls(escrow_applied=False)
    status = {"compliant": "pass", "noncompliant": "fail", "not_applicable": "not_applicable", "failed": "error"}
    out = []
    for cid, expected in DISK_EXPECTED.get(family, DISK_EXPECTED["Linux"]).items():
        rep = controls[cid]
        observed = ({"volumes": [v["device"] for v in escrow_outcome.volumes]} if cid == "ENC-002"
                    else {"unknown_keyslots": escrow_outcome.enc003} if cid == "ENC-003"
                    else {"problems": escrow_outcome.enc004} if cid == "ENC-004"
                    else {"violations": escrow_outcome.enc001, "volumes": escrow_outcome.volumes}
                    if family == "Windows" else {"violations": escrow_outcome.enc001})
        out.append(Result(cid, status.get(rep["state"], "error"), observed, expected, list(rep["findings"])))
    return out


def agent(p: dict, policy: dict, _posture: dict | None = None) -> Result:
    """AGT-001: the agent installed, its timer (Windows: scheduled task) enabled and running, its device key
    present, and a successful check-in within three intervals (a laptop just switched on may not have checked
    in yet)."""
    interval = int(policy.get("endpoint_agent_interval_minutes") or 15)
    limit = 3 * interval * 60
    expected = {"installed": True, "timer": "enabled, active", "device_key_present": True,
                "last_checkin_age_seconds": f"<= {limit}"}
    observed = {k: p.get(k) for k in ("installed", "timer_enabled", "timer_active", "device_key_present",
                                      "last_checkin", "last_checkin_age_seconds", "pending_refusals",
                                      "last_run_result")}
    problems = []
    if not p.get("installed"):
        problems.append("the check-in agent is not installed")
    else:
        if not (p.get("timer_enabled") and p.get("timer_active")):
            problems.append(f"{p.get('scheduler') or 'deskguard-agent.timer'} is not enabled and active")
        # Windows' scheduled task records its last exit code; 267011 (0x41303) means it has not run yet.
        if p.get("last_run_result") not in (None, 0, 267011):
            problems.append(f"the agent's last scheduled run failed (result {p['last_run_result']})")
        if not p.get("device_key_present"):
            problems.append("the device key is missing (the laptop cannot sign acknowledgements or check-ins)")
        age = p.get("last_checkin_age_seconds")
        if age is None:
            problems.append("the agent has never checked in successfully")
        elif age > limit:
            problems.append(f"last successful check-in {age // 60} min ago (more than 3 intervals of {interval} min)")
    # Set by the nightly run, not by the laptop: the agent's installed collector is not this kit's code (an
    # older kit's, or altered), so the run shipped its own. An agent that is not the kit's is not healthy.
    if p.get("code_differs") and p.get("installed"):
        observed["code_differs"] = p["code_differs"]
        problems.append(f"{p['code_differs']}: `deskguard comply --fix` or onboarding installs the kit's agent again")
    return _check("AGT-001", observed, expected, problems)


# Control -> (the posture section it reads, its judge(section, policy, whole posture)). ENC-* come from the
# escrow verification instead (see disk()). by_os: a Windows posture has its own judge where its facts differ.
JUDGES = {
    "LCK-001": ("screen_lock", windows.by_os(screen_lock, windows.screen_lock)),
    "FW-001": ("firewall", windows.by_os(firewall, windows.firewall)),
    "UPD-001": ("updates", windows.by_os(updates, windows.updates)),
    "UPD-002": ("updates", updates_applied),
    **{cid: ("usb", lambda p, policy, posture, cid=cid: windows.by_os(usb, windows.usb)(p, policy, posture)[cid])
       for cid in ("USB-001", "USB-002", "USB-003")},
    **{cid: ("vpn", lambda p, policy, posture, cid=cid: windows.by_os(vpn, windows.vpn)(p, policy, posture)[cid])
       for cid in ("VPN-001", "VPN-002", "VPN-003")},
    "AGT-001": ("agent", agent),
    **network.JUDGES,   # NET-001..003, judged in network.py
    **software.JUDGES,  # SW-001..003, AV-001, judged in software.py
    **accounts.JUDGES,  # ACC-001..005, judged in accounts.py
}


# -------------------------------------------------------------------------------------------- waivers

def parse_waivers(policy: dict, hostname: str) -> dict[str, dict]:
    """The waivers that apply to this host, by control. PolicyError for a waiver the kit cannot honour."""
    found = {}
    for i, w in enumerate(policy.get("deskguard_waivers") or []):
        if not isinstance(w, dict):
            raise PolicyError(f"deskguard_waivers[{i}] is not a mapping")
        cid = w.get("control")
        if cid not in CONTROLS:
            raise PolicyError(f"deskguard_waivers[{i}]: unknown control {cid!r} (known: {', '.join(CONTROLS)})")
        if CONTROLS[cid].mandatory:
            raise PolicyError(f"deskguard_waivers[{i}]: {cid} is mandatory and cannot be waived")
        if not str(w.get("reason") or "").strip():
            raise PolicyError(f"deskguard_waivers[{i}] ({cid}): a waiver needs a reason")
        try:
            expires = dt.date.fromisoformat(str(w.get("expires")))
        except ValueError:
            raise PolicyError(f"deskguard_waivers[{i}] ({cid}): expires must be a date YYYY-MM-DD, "
                              f"got {w.get('expires')!r}") from None
        hosts = w.get("hosts")
        if hosts is None or hostname in hosts:
            found[cid] = {"reason": str(w["reason"]), "expires": expires}
    return found


# --------------------------------------------------------------------------------------------- the run

def evaluate(hostname: str, posture: dict, errors: dict, policy: dict, escrow_outcome=None,
             today: dt.date | None = None) -> list[Result]:
    """One Result per control of the catalog, in catalog order."""
    today = today or dt.date.today()
    waivers = parse_waivers(policy, hostname)
    results: dict[str, Result] = {}
    for r in disk(escrow_outcome, windows.family(posture)) if escrow_outcome is not None else []:
        results[r.id] = r
    for cid, (section, judge) in JUDGES.items():
        if section in errors or section not in posture:
            results[cid] = Result(cid, "error", evidence=[f"{section} not collected: {errors.get(section, 'missing')}"])
        else:
            results[cid] = judge(posture[section], policy, posture)
    if "ENC-001" not in results:
        for cid in ("ENC-001", "ENC-002", "ENC-003", "ENC-004"):
            results[cid] = Result(cid, "error", evidence=["disk not evaluated (no escrow verification)"])
    out = []
    for cid, control in CONTROLS.items():
        r = settle(results[cid])
        r.title, r.severity, r.remediation = control.title, control.severity, control.remediation
        if not policy.get(f"{control.role}_enabled", True):
            r.status, r.evidence = "not_applicable", ["disabled in the policy"]
        elif cid in waivers and r.status in ("fail", "error"):
            w = waivers[cid]
            if w["expires"] < today:
                r.evidence.append(f"waiver expired on {w['expires']} ({w['reason']})")
            else:
                r.status = "waived"
                r.evidence.append(f"waived until {w['expires']}: {w['reason']}")
        out.append(r)
    return out


def host_summary(results: list[Result]) -> dict:
    """score = passed / (passed + failed + errors) in %, a pass with a warning counting as passed, waived, n/a
    and not checked left out; compliant only if nothing failed and every mandatory control passed."""
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    passed = counts["pass"] + counts["warn"]
    judged = passed + counts["fail"] + counts["error"]
    mandatory_ok = all(r.status in (*PASSING, "not_applicable") for r in results if CONTROLS[r.id].mandatory)
    return {"score": round(100.0 * passed / judged, 1) if judged else 100.0, "counts": counts,
            "compliant": counts["fail"] == 0 and counts["error"] == 0 and mandatory_ok}
