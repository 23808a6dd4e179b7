# -*- coding: utf-8 -*-
"""The software_policy role's one step on Linux (SW-001..003, AV-001), unit-tested without Ansible.

Order, each part computed before anything changes: the denylist is checked (a package the kit needs is refused
with nothing touched); the package manager's dry run of the removal must not take a protected package with it;
then the pin / exclude file and the browser policy files are converged (deskguard_files: compared, written
atomically); then denied packages are purged and proven gone; unapproved sources are disabled only in
`enforce` mode; ClamAV's units are enabled when the policy requires AV. Check mode stops after the plan.
"""

from __future__ import annotations

import os
import re
import subprocess

try:
    from ansible.module_utils import deskguard_av, deskguard_browser_policy, deskguard_files, deskguard_software
except ImportError:
    import deskguard_av
    import deskguard_browser_policy
    import deskguard_files
    import deskguard_software

_APT_ENV = dict(os.environ, LC_ALL="C", LANG="C", DEBIAN_FRONTEND="noninteractive")
DISABLED_SUFFIX = ".disabled"   # in apt's Dir::Ignore-Files-Silently list: ignored without a warning
COMMENT = "# deskguard SW-002 (not an approved source): "


class ApplyError(Exception):
    pass


def _run(argv):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_APT_ENV, timeout=900)
    return proc.returncode, proc.stdout.decode(errors="replace")


def removal_plan(packages, fam):
    """Every package the removal would take away (the denied ones and whatever depends on them)."""
    if not packages:
        return []
    if fam == "Debian":
        rc, out = _run(["apt-get", "-s", "-o", "DPkg::Lock::Timeout=300", "purge", *packages])
        if rc != 0:
            raise ApplyError("apt-get cannot plan the removal of %s: %s" % (", ".join(packages), out.strip()[-300:]))
        return sorted({m.group(1).split(":")[0] for m in re.finditer(r"^(?:Purg|Remv) (\S+)", out, re.M)})
    if fam == "RedHat":
        rc, out = _run(["dnf", "-q", "--assumeno", "remove", *packages])
        # --assumeno makes dnf answer "no" and exit 1 after printing the transaction.
        return sorted(set(packages) | set(re.findall(r"^ (\S+)\s+\S+\s+\S+\s+\S+", out, re.M)))
    raise ApplyError("no supported package manager (dpkg or rpm) on this laptop")


def _remove(packages, fam, root="/"):
    if root != "/":   # apt and dnf act on the running system only
        raise ApplyError("cannot remove packages under %s, only on the running system" % root)
    argv = (["apt-get", "-y", "-o", "DPkg::Lock::Timeout=300", "purge", *packages] if fam == "Debian"
            else ["dnf", "-y", "remove", *packages])
    rc, out = _run(argv)
    if rc != 0:
        raise ApplyError("%s failed (rc %d): %s" % (" ".join(argv[:2]), rc, out.strip()[-500:]))


def _unapproved_edits(found, root):
    """{file: ("rename", target) or ("content", text)} disabling every unapproved source of `found` (all sources):
    a file under sources.list.d with nothing approved, or any deb822 file with an unapproved URI, is renamed
    aside; in other files the unapproved lines are commented out."""
    by_file = {}
    for src in found:
        if not src["approved"]:
            by_file.setdefault(os.path.join(root, src["file"].lstrip("/")), []).append(src)
    edits = {}
    for path, bad in by_file.items():
        if path.endswith(".sources") or (path.endswith(".list") and "sources.list.d" in path
                                         and all(not s["approved"] for s in found if s["file"] == bad[0]["file"])):
            edits[path] = ("rename", path + DISABLED_SUFFIX)
        else:
            with open(path) as fh:
                lines = fh.read().splitlines()
            for src in bad:
                if src["line"]:
                    lines[src["line"] - 1] = COMMENT + lines[src["line"] - 1]
            edits[path] = ("content", "\n".join(lines) + "\n")
    return edits


def _file_specs(pins, browsers):
    specs = []
    for path, content in {**pins, **browsers}.items():
        specs.append({"path": path, "state": "absent"} if content is None
                     else {"path": path, "content": content, "mode": "0644"})
    return specs


def apply(params, check_mode=False, root="/"):
    """Returns {changed, removed, files, sources_disabled, units, deskguard_controls}."""
    denied = deskguard_software.check_denylist(params.get("denied_packages") or [],
                                               params.get("protected_packages") or [])
    fam = deskguard_software.family(root)
    protected = set(params.get("protected_packages") or [])
    present = deskguard_software.installed(denied, fam, root)
    taken = removal_plan(present, fam) if present else []
    collateral = sorted(set(taken) & protected)
    if collateral:
        raise ApplyError("removing %s would also remove %s, which deskguard needs; nothing was changed"
                         % (", ".join(present), ", ".join(collateral)))

    browser_settings = params.get("browser") or {}
    refused = deskguard_browser_policy.url_filter_problems(list(browser_settings.get("url_blocklist") or []))
    if refused and params.get("browsers_enabled", True):
        raise ApplyError("software_policy_url_blocklist has entries the browsers refuse (%s); nothing was changed"
                         % "; ".join(refused))
    browsers = deskguard_browser_policy.targets(browser_settings, root) if params.get("browsers_enabled", True) else {}
    specs = _file_specs(deskguard_software.pin_files(denied, fam, root), browsers)
    file_todo = deskguard_files.plan(specs)

    approved = params.get("allowed_sources") or []
    found = deskguard_software.sources(root, approved) if approved else []
    outside = [s for s in found if not s["approved"]]
    enforce = params.get("sources_mode") == "enforce" and bool(approved)
    edits = _unapproved_edits(found, root) if enforce and outside else {}

    av_required = bool(params.get("av_required"))
    units = deskguard_files.units_to_enable(list(deskguard_av.UNITS)) if av_required else []

    changed = bool(file_todo or present or edits or units)
    result = {"changed": changed, "removed": present, "removal_takes": taken,
              "files": [{"path": s["path"], "reason": r} for s, r in file_todo],
              "sources_outside": [{"file": s["file"], "uri": s["uri"]} for s in outside],
              "sources_disabled": sorted(edits), "units": units}
    if not check_mode and changed:
        deskguard_files.apply(specs, [], False)
        if present:
            _remove(present, fam, root)
            left = deskguard_software.installed(denied, fam, root)
            if left:
                raise ApplyError("still installed after removal: %s" % ", ".join(left))
        for path, (kind, value) in edits.items():
            if kind == "rename":
                os.replace(path, value)
            else:
                deskguard_files.apply([{"path": path, "content": value, "mode": "0644"}], [], False)
        if units:
            deskguard_files.apply([], [], False, units)
    result["deskguard_controls"] = controls(result, params, bool(browsers), fam, root)
    return result


def controls(result, params, any_browser, fam, root):
    """Per-control states for the runner's summary (one step reports all four controls)."""
    out = {}
    sw1 = [f for f in result["files"] if "preferences.d" in f["path"] or "dnf.conf" in f["path"]]
    out["SW-001"] = {"state": "applied" if (result["removed"] or sw1) else "compliant",
                     "findings": ["removed: " + ", ".join(result["removed"])] if result["removed"] else []}
    if not params.get("allowed_sources"):
        out["SW-002"] = {"state": "not_applicable", "findings": ["no approved sources in the policy"]}
    elif result["sources_outside"] and not result["sources_disabled"]:
        out["SW-002"] = {"state": "noncompliant", "findings": [
            "unapproved source %(uri)s in %(file)s (report-only; set software_policy_sources_mode: enforce)" % s
            for s in result["sources_outside"]]}
    else:
        out["SW-002"] = {"state": "applied" if result["sources_disabled"] else "compliant",
                         "findings": ["disabled " + p for p in result["sources_disabled"]]}
    sw3 = [f for f in result["files"] if "policies" in f["path"]]
    out["SW-003"] = ({"state": "applied" if sw3 else "compliant", "findings": []} if any_browser
                     else {"state": "not_applicable", "findings": ["no managed browser installed"]})
    if not params.get("av_required"):
        out["AV-001"] = {"state": "not_applicable", "findings": ["antivirus not required on Linux by the policy"]}
    else:
        av = deskguard_av.collect(root)
        limit = float(params.get("av_max_signature_age_days") or 3)
        age = av["signature_age_days"]
        problems = [] if av["installed"] else ["ClamAV is not installed"]
        if age is None or age > limit:
            problems.append("signatures %s (policy: at most %g days old); freshclam must reach its mirror" % (
                "missing" if age is None else "%.1f days old" % age, limit))
        out["AV-001"] = {"state": "noncompliant" if problems else ("applied" if result["units"] else "compliant"),
                         "findings": problems}
    return out
