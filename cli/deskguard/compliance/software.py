"""SW-001..003 and AV-001: the nightly run's judges for the posture's `software` and `av` sections (Linux
collectors in plugins/module_utils/deskguard_software.py, deskguard_browser_policy.py, deskguard_av.py; the
Windows ones in the DeskguardPostureSoftware/-Av .psm1 files, with the same keys)."""

from __future__ import annotations

from .results import Result


def _result(cid, status, observed=None, expected=None, evidence=None):
    return Result(cid, status, observed, expected, list(evidence or []))


def _check(cid: str, observed: dict, expected: dict, problems: list[str]):
    return _result(cid, "fail" if problems else "pass", observed, expected, problems)


def denied(p: dict, policy: dict, _posture: dict | None = None):
    windows = p.get("family") == "Windows"
    wanted = ([d.get("name") for d in policy.get("software_policy_denied_windows_software") or []] if windows
              else list(policy.get("software_policy_denied_packages") or []))
    expected = {"denied_installed": [], "denied": wanted}
    observed = {"denied_installed": p.get("denied_installed") or [], "denylist_pinned": p.get("denylist_pinned")}
    problems = [f"denied software installed: {name}" for name in p.get("denied_installed") or []]
    if not windows and p.get("denylist_pinned") is False:
        problems.append("the denylist is not pinned (apt preferences / dnf exclude) as the policy says")
    return _check("SW-001", observed, expected, problems)


def sources(p: dict, policy: dict, _posture: dict | None = None):
    approved = list(policy.get("software_policy_allowed_sources") or [])
    if not approved or p.get("family") == "Windows":
        return _result("SW-002", "not_applicable", evidence=["no approved sources in the policy"
                                                            if approved == [] else "no package sources on Windows"])
    outside = [s for s in p.get("sources") or [] if not s.get("approved")]
    return _check("SW-002", {"outside": [f"{s['uri']} ({s['file']})" for s in outside]}, {"approved": approved},
                  [f"unapproved source {s['uri']} in {s['file']}" for s in outside])


def browsers(p: dict, policy: dict, _posture: dict | None = None):
    if not policy.get("software_policy_browsers_enabled", True):
        return _result("SW-003", "not_applicable", evidence=["browser policies off in the policy"])
    found = p.get("browsers") or {}
    if not found:
        return _result("SW-003", "not_applicable", evidence=["no managed browser installed"])
    problems = []
    if "registry" in found:   # Windows: the role's registry values compared on the laptop
        if not found["registry"].get("checked"):
            # Nothing compared is no evidence: never a pass (the posture was not given the expected values).
            return _result("SW-003", "error", found, None, ["no expected browser registry values were compared"])
        problems += [f"browser policy {v} differs from the policy" for v in found["registry"].get("differs") or []]
    else:
        for browser, files in found.items():
            for f in files:
                if not f.get("present"):
                    problems.append(f"{browser}: {f['path']} missing")
                elif not f.get("valid_json"):
                    problems.append(f"{browser}: {f['path']} is not valid JSON")
                elif f.get("rejected"):
                    problems.append(f"{browser}: {f['path']}: the browser refuses " + "; ".join(f["rejected"]))
                elif not f.get("matches"):
                    problems.append(f"{browser}: {f['path']} differs from the policy ({', '.join(f.get('differs') or [])})")
                elif f.get("mode") != "0644" or f.get("owner_uid") != 0:
                    problems.append(f"{browser}: {f['path']} is not 0644 root")
    return _check("SW-003", {"browsers": sorted(found)}, {"policy files": "present, valid JSON, as the policy says"},
                  problems)


def antivirus(p: dict, policy: dict, _posture: dict | None = None):
    defender = p.get("engine") == "defender"
    required = policy.get("software_policy_windows_defender_required", True) if defender \
        else policy.get("software_policy_av_required", False)
    if not required:
        return _result("AV-001", "not_applicable", evidence=["antivirus not required by the policy on this OS"])
    limit = float(policy.get("software_policy_av_max_signature_age_days", 3))
    age = p.get("signature_age_days")
    expected = {"engine": "defender" if defender else "clamav", "running": True, "signature_age_days": f"<= {limit:g}"}
    if defender:
        observed = {k: p.get(k) for k in ("installed", "realtime_protection", "antivirus_enabled",
                                          "am_service_enabled", "signature_age_days")}
        problems = [] if p.get("installed") else ["Microsoft Defender is not available (Get-MpComputerStatus failed)"]
        for key, what in (("am_service_enabled", "the antimalware service is off"),
                          ("antivirus_enabled", "antivirus is off"),
                          ("realtime_protection", "real-time protection is off")):
            if p.get("installed") and not p.get(key):
                problems.append(what)
    else:
        observed = {k: p.get(k) for k in ("installed", "daemon_active", "updater_active", "signature_age_days")}
        problems = [] if p.get("installed") else ["ClamAV is not installed"]
        if p.get("installed"):
            problems += [what for key, what in (("daemon_active", "clamav-daemon is not running"),
                                                ("updater_active", "clamav-freshclam is not running"))
                         if not p.get(key)]
    if p.get("installed"):
        if age is None:
            problems.append("no signatures")
        elif age > limit:
            problems.append(f"signatures {age:g} days old (policy: at most {limit:g})")
    return _check("AV-001", observed, expected, problems)


JUDGES = {
    "SW-001": ("software", denied),
    "SW-002": ("software", sources),
    "SW-003": ("software", browsers),
    "AV-001": ("av", antivirus),
}
