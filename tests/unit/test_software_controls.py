"""The software_policy role's laptop-side code (SW-001..003, AV-001) on fake roots, with the real dpkg-query
reading a package database written in dpkg's own format: refusals happen before any change, files are
written atomically and read back, check mode changes nothing, and the nightly judges say why they fail."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "plugins" / "module_utils"))
import deskguard_av as av  # noqa: E402
import deskguard_browser_policy as bp  # noqa: E402
import deskguard_software as sw  # noqa: E402
import deskguard_software_apply as swa  # noqa: E402

pytestmark = pytest.mark.unit

ROLE_VARS = yaml.safe_load((REPO / "roles/software_policy/vars/main.yml").read_text())
PROTECTED = ROLE_VARS["__software_policy_protected_builtin"]
SETTINGS = {"extension_allowlist": ["aaaabbbbccccddddeeeeffffgggghhhh"], "firefox_extension_allowlist": ["sip@corp"],
            "url_blocklist": ["games.example"], "doh_resolver": "https://dns.corp.example/dns-query"}


def status_entry(name, status="install ok installed"):
    return (f"Package: {name}\nStatus: {status}\nPriority: optional\nSection: net\nMaintainer: x <x@x>\n"
            f"Architecture: all\nVersion: 1.0\nDescription: test\n\n")


def debian_root(tmp_path, packages=(), removed=()):
    """A root with dpkg's status file (read by the real dpkg-query --admindir)."""
    dpkg = tmp_path / "var/lib/dpkg"
    (dpkg / "info").mkdir(parents=True)
    (dpkg / "updates").mkdir()
    (dpkg / "status").write_text("".join(status_entry(p) for p in packages)
                                 + "".join(status_entry(p, "deinstall ok config-files") for p in removed))
    (tmp_path / "etc/apt/sources.list.d").mkdir(parents=True)
    return tmp_path


def snapshot(root):
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


# ------------------------------------------------------------------------------------------- SW-001

def test_a_denylist_naming_a_package_the_kit_needs_is_refused_in_one_line():
    with pytest.raises(sw.PolicyError) as exc:
        sw.check_denylist(["anydesk", "openssh-server", "sudo"], PROTECTED)
    assert "openssh-server, sudo" in str(exc.value) and "\n" not in str(exc.value)
    assert sw.check_denylist(["teamviewer", "anydesk", "anydesk"], PROTECTED) == ["anydesk", "teamviewer"]


def test_a_denylist_entry_that_is_not_a_package_name_is_refused():
    with pytest.raises(sw.PolicyError, match="not package names: rm -rf /"):
        sw.check_denylist(["rm -rf /"], PROTECTED)


def test_the_onboarding_packages_are_protected_too():
    onboard = yaml.safe_load((REPO / "playbooks/onboard.yml").read_text())[0]["vars"]["__onboard_packages"]
    fixed = {p for fam in onboard.values() for pkgs in fam.values() if isinstance(pkgs, list) for p in pkgs}
    # The role adds the play's map to the built-in list; the fixed part must be covered either way.
    assert fixed <= set(PROTECTED), sorted(fixed - set(PROTECTED))


def test_refusal_changes_nothing_on_the_laptop(tmp_path):
    root = debian_root(tmp_path, ["anydesk"])
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/chromium").write_text("")
    before = snapshot(root)
    with pytest.raises(sw.PolicyError):
        swa.apply({"denied_packages": ["anydesk", "python3"], "protected_packages": PROTECTED,
                   "browser": SETTINGS}, root=str(root))
    assert snapshot(root) == before


def test_installed_denied_packages_are_read_from_the_dpkg_database(tmp_path):
    root = debian_root(tmp_path, ["anydesk", "bash"], removed=["teamviewer"])
    # config-files only (removed, not purged) does not count as installed
    assert sw.installed(["anydesk", "teamviewer", "rustdesk"], "Debian", str(root)) == ["anydesk"]


def test_a_removal_that_would_take_a_protected_package_along_is_refused_before_any_change(tmp_path, monkeypatch):
    root = debian_root(tmp_path, ["anydesk"])
    monkeypatch.setattr(swa, "removal_plan", lambda pkgs, fam: ["anydesk", "openssh-server"])
    before = snapshot(root)
    with pytest.raises(swa.ApplyError, match="would also remove openssh-server"):
        swa.apply({"denied_packages": ["anydesk"], "protected_packages": PROTECTED}, root=str(root))
    assert snapshot(root) == before


def test_the_apt_pin_keeps_denied_packages_out_even_as_dependencies(tmp_path):
    root = debian_root(tmp_path)
    result = swa.apply({"denied_packages": ["teamviewer", "anydesk"], "protected_packages": PROTECTED},
                       root=str(root))
    pin = (root / sw.APT_PIN).read_text()
    assert "Package: anydesk teamviewer\nPin: version *\nPin-Priority: -1\n" in pin
    assert result["deskguard_controls"]["SW-001"]["state"] == "applied"
    # The nightly posture gets the policy's order, not the sorted one: still pinned (found by the container test).
    assert sw.collect(str(root), {"denied_packages": ["teamviewer", "anydesk"]})["denylist_pinned"] is True
    again = swa.apply({"denied_packages": ["teamviewer", "anydesk"], "protected_packages": PROTECTED}, root=str(root))
    assert again["changed"] is False and again["deskguard_controls"]["SW-001"]["state"] == "compliant"
    # An emptied denylist removes the pin
    swa.apply({"denied_packages": [], "protected_packages": PROTECTED}, root=str(root))
    assert not (root / sw.APT_PIN).exists()


def test_dnf_exclude_line_is_replaced_not_duplicated():
    conf = "[main]\ngpgcheck=1\n"
    once = sw.dnf_conf_with_excludes(conf, ["anydesk"])
    twice = sw.dnf_conf_with_excludes(once, ["anydesk", "teamviewer"])
    assert twice.count("exclude=") == 1 and "exclude=anydesk teamviewer" in twice and "gpgcheck=1" in twice
    assert sw.dnf_conf_with_excludes(twice, []) == conf


# ------------------------------------------------------------------------------------------- SW-002

SOURCES_LIST = ("deb http://deb.debian.org/debian bookworm main\n"
                "deb [signed-by=/x.gpg] http://evil.example/apt stable main\n"
                "# deb http://commented.example/debian bookworm main\n")
DEB822 = "Types: deb\nURIs: https://download.anydesk.example/linux\nSuites: all\nComponents: main\n"


def sources_root(tmp_path):
    root = debian_root(tmp_path)
    (root / "etc/apt/sources.list").write_text(SOURCES_LIST)
    (root / "etc/apt/sources.list.d/anydesk.sources").write_text(DEB822)
    (root / "etc/apt/sources.list.d/corp.list").write_text("deb http://deb.debian.org/debian-security bookworm-security main\n")
    return root


APPROVED = ["http://deb.debian.org/debian", "http://deb.debian.org/debian-security"]


def test_sources_outside_the_approved_list_are_found_in_both_formats(tmp_path):
    found = sw.sources(str(sources_root(tmp_path)), APPROVED)
    outside = sorted((s["file"], s["uri"]) for s in found if not s["approved"])
    assert outside == [("/etc/apt/sources.list", "http://evil.example/apt"),
                       ("/etc/apt/sources.list.d/anydesk.sources", "https://download.anydesk.example/linux")]
    assert len(found) == 4   # the commented line is no source


def test_a_prefix_is_not_approved_by_a_longer_host_name():
    assert not sw.allowed("http://deb.debian.org.evil.example/debian", ["http://deb.debian.org"])
    assert sw.allowed("http://deb.debian.org/debian/", ["http://deb.debian.org/debian"])


def test_report_mode_only_reports(tmp_path):
    root = sources_root(tmp_path)
    before = snapshot(root)
    result = swa.apply({"allowed_sources": APPROVED, "protected_packages": PROTECTED, "browsers_enabled": False},
                       root=str(root))
    assert result["deskguard_controls"]["SW-002"]["state"] == "noncompliant"
    assert any("evil.example" in f for f in result["deskguard_controls"]["SW-002"]["findings"])
    assert snapshot(root) == before


def test_enforce_mode_disables_only_the_unapproved_sources(tmp_path):
    root = sources_root(tmp_path)
    result = swa.apply({"allowed_sources": APPROVED, "sources_mode": "enforce", "protected_packages": PROTECTED},
                       root=str(root))
    assert result["deskguard_controls"]["SW-002"]["state"] == "applied"
    assert (root / "etc/apt/sources.list.d/anydesk.sources.disabled").exists()
    assert (root / "etc/apt/sources.list.d/corp.list").exists()
    text = (root / "etc/apt/sources.list").read_text()
    assert text.splitlines()[0] == "deb http://deb.debian.org/debian bookworm main"
    assert text.splitlines()[1].startswith(swa.COMMENT)
    assert all(s["approved"] for s in sw.sources(str(root), APPROVED))
    assert swa.apply({"allowed_sources": APPROVED, "sources_mode": "enforce", "protected_packages": PROTECTED},
                     root=str(root))["changed"] is False


# ------------------------------------------------------------------------------------------- SW-003

def browser_root(tmp_path, *marks):
    root = debian_root(tmp_path)
    for mark in marks:
        (root / mark).parent.mkdir(parents=True, exist_ok=True)
        (root / mark).write_text("")
    return root


def test_policies_are_written_only_for_installed_browsers_as_valid_json(tmp_path):
    root = browser_root(tmp_path, "usr/bin/chromium", "usr/lib/firefox-esr/firefox-esr")
    result = swa.apply({"browser": SETTINGS, "protected_packages": PROTECTED}, root=str(root))
    assert result["deskguard_controls"]["SW-003"]["state"] == "applied"
    chromium = json.loads((root / "etc/chromium/policies/managed/deskguard.json").read_text())
    assert chromium["ExtensionInstallBlocklist"] == ["*"]
    assert chromium["ExtensionInstallAllowlist"] == ["aaaabbbbccccddddeeeeffffgggghhhh"]
    assert chromium["DnsOverHttpsMode"] == "secure" and chromium["DnsOverHttpsTemplates"] == SETTINGS["doh_resolver"]
    assert chromium["SafeBrowsingProtectionLevel"] == 1 and chromium["URLBlocklist"] == ["games.example"]
    for rel in ("etc/firefox/policies/policies.json", "usr/lib/firefox-esr/distribution/policies.json"):
        firefox = json.loads((root / rel).read_text())["policies"]
        assert firefox["ExtensionSettings"]["*"] == {"installation_mode": "blocked"}
        assert firefox["ExtensionSettings"]["sip@corp"] == {"installation_mode": "allowed"}
        assert firefox["WebsiteFilter"] == {"Block": ["*://*.games.example/*"]}   # Firefox's own pattern syntax
        assert firefox["DNSOverHTTPS"] == {"Enabled": True, "ProviderURL": SETTINGS["doh_resolver"],
                                           "Fallback": False, "Locked": True}
        assert oct((root / rel).stat().st_mode & 0o777) == "0o644" and (root / rel).stat().st_uid == 0
    assert not (root / "etc/opt/chrome").exists()   # Chrome is not installed
    seen = bp.observe(SETTINGS, str(root))
    assert all(f["present"] and f["valid_json"] and f["matches"] for files in seen.values() for f in files)


def test_without_a_resolver_dns_over_https_is_off():
    assert bp.chromium_policy({})["DnsOverHttpsMode"] == "off" and "DnsOverHttpsTemplates" not in bp.chromium_policy({})
    assert bp.firefox_policy({})["policies"]["DNSOverHTTPS"] == {"Enabled": False, "Locked": True}


def test_check_mode_reports_and_changes_nothing(tmp_path):
    root = browser_root(tmp_path, "opt/google/chrome/chrome")
    before = snapshot(root)
    result = swa.apply({"browser": SETTINGS, "denied_packages": ["anydesk"], "protected_packages": PROTECTED},
                       check_mode=True, root=str(root))
    assert result["changed"] and {f["path"] for f in result["files"]} == {
        str(root / "etc/opt/chrome/policies/managed/deskguard.json"), str(root / sw.APT_PIN)}
    assert snapshot(root) == before


def test_an_edited_policy_file_is_seen_and_judged(tmp_path):
    from deskguard.compliance import software
    root = browser_root(tmp_path, "usr/bin/chromium")
    swa.apply({"browser": SETTINGS, "protected_packages": PROTECTED}, root=str(root))
    path = root / "etc/chromium/policies/managed/deskguard.json"
    edited = json.loads(path.read_text())
    edited["ExtensionInstallBlocklist"] = []
    path.write_text(json.dumps(edited))
    section = {"browsers": bp.observe(SETTINGS, str(root))}
    r = software.browsers(section, {})
    assert r.status == "fail" and "ExtensionInstallBlocklist" in r.evidence[0]
    path.write_text("{not json")
    assert "not valid JSON" in software.browsers({"browsers": bp.observe(SETTINGS, str(root))}, {}).evidence[0]
    path.unlink()
    assert "missing" in software.browsers({"browsers": bp.observe(SETTINGS, str(root))}, {}).evidence[0]


def test_a_policy_file_the_browser_refuses_fails_sw003_even_when_it_equals_the_policy(tmp_path):
    """Chromium refuses "*.games.example" in URLBlocklist (a wildcard inside a host: "Policy parsing error" in
    its chrome://policy, tests/container/test_desktop_controls.py) and Firefox skips a WebsiteFilter entry
    that is not a match pattern: a file equal to such a policy blocks nothing for that entry."""
    from deskguard.compliance import software
    root = browser_root(tmp_path, "usr/bin/chromium", "usr/lib/firefox-esr/firefox-esr")
    swa.apply({"browser": SETTINGS, "protected_packages": PROTECTED}, root=str(root))
    assert software.browsers({"browsers": bp.observe(SETTINGS, str(root))}, {}).status == "pass"
    wildcard = dict(SETTINGS, url_blocklist=["*.games.example"])
    (root / "etc/chromium/policies/managed/deskguard.json").write_text(bp.render(bp.chromium_policy(wildcard)))
    firefox = bp.firefox_policy(SETTINGS)
    firefox["policies"]["WebsiteFilter"]["Block"] = ["*.games.example"]
    (root / "etc/firefox/policies/policies.json").write_text(bp.render(firefox))
    seen = bp.observe(wildcard, str(root))
    assert seen["chromium"][0]["matches"]    # what the kit would have written from that policy...
    r = software.browsers({"browsers": seen}, {})
    assert r.status == "fail"                # ...and still refused by the browsers
    assert any("chromium" in e and "'*.games.example': a wildcard inside a host name" in e for e in r.evidence), r.evidence
    assert any("firefox-esr: /etc/firefox/policies/policies.json" in e and "not a match pattern" in e
               for e in r.evidence), r.evidence


def test_a_blocklist_the_browsers_refuse_is_refused_before_any_change(tmp_path):
    root = browser_root(tmp_path, "usr/bin/chromium")
    before = snapshot(root)
    with pytest.raises(swa.ApplyError, match=r"refuse \('\*\.games\.example': a wildcard inside a host name"):
        swa.apply({"browser": dict(SETTINGS, url_blocklist=["games.example", "*.games.example"]),
                   "protected_packages": PROTECTED}, root=str(root))
    assert snapshot(root) == before


@pytest.mark.parametrize("entry, firefox", [
    ("games.example", "*://*.games.example/*"), (".games.example", "*://games.example/*"),
    ("https://games.example/play", "https://*.games.example/play*"), ("127.0.0.1:8088/blocked", "*://127.0.0.1/blocked*"),
    ("file://*", "file:///*"), ("*", "*://*/*")])
def test_chromium_url_filters_become_firefox_match_patterns(entry, firefox):
    assert bp.url_filter_problem(entry) is None
    assert bp.firefox_match_pattern(entry) == firefox
    assert bp.rejected_entries("firefox", {"policies": {"WebsiteFilter": {"Block": [firefox]}}}) == []


# -------------------------------------------------------------------------------------------- AV-001

def cvd(path, built, version=27100, sigs=2070000):
    head = f"ClamAV-VDB:{time.strftime('%d %b %Y %H:%M %z', time.gmtime(built))}:{version}:{sigs}:90:" \
           f"{'0' * 32}:dsig:builder:{int(built)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head.encode().ljust(512, b" ") + b"\x1f\x8b rest of the database")


def test_signature_age_comes_from_the_database_header_not_the_file_time(tmp_path):
    now = 1_800_000_000
    cvd(tmp_path / av.DB_DIR / "main.cvd", now - 90 * 86400)
    cvd(tmp_path / av.DB_DIR / "daily.cld", now - 2 * 86400, version=27500)
    os.utime(tmp_path / av.DB_DIR / "daily.cld", (now, now))   # freshly copied, old content
    dbs = {d["name"]: d for d in av.databases(str(tmp_path), now=now)}
    assert dbs["daily.cld"] == {"version": 27500, "signatures": 2070000, "built": now - 2 * 86400,
                                "source": "header", "name": "daily.cld", "age_days": 2.0}
    section = av.collect(str(tmp_path), now=now)
    assert section["signature_age_days"] == 2.0 and section["installed"] is False


def test_a_database_without_a_header_falls_back_to_its_mtime(tmp_path):
    path = tmp_path / av.DB_DIR / "daily.cld"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage")
    os.utime(path, (1_000_000, 1_000_000))
    (d,) = av.databases(str(tmp_path), now=1_000_000 + 86400)
    assert d["source"] == "mtime" and d["age_days"] == 1.0


def judge_av(section, **policy):
    from deskguard.compliance import software
    return software.antivirus(section, policy)


def test_clamav_judged_only_when_required():
    section = {"engine": "clamav", "installed": False, "signature_age_days": None}
    assert judge_av(section).status == "not_applicable"
    r = judge_av(section, software_policy_av_required=True)
    assert r.status == "fail" and r.evidence == ["ClamAV is not installed"]
    ok = {"engine": "clamav", "installed": True, "daemon_active": True, "updater_active": True,
          "signature_age_days": 1.2}
    assert judge_av(ok, software_policy_av_required=True).status == "pass"
    stale = dict(ok, signature_age_days=9.5, daemon_active=False)
    assert judge_av(stale, software_policy_av_required=True).evidence == [
        "clamav-daemon is not running", "signatures 9.5 days old (policy: at most 3)"]


# Get-MpComputerStatus's properties as in Microsoft Learn's reference page, Example 1 ("Get the computer status",
# https://learn.microsoft.com/en-us/powershell/module/defender/get-mpcomputerstatus?view=windowsserver2022-ps),
# trimmed to what the kit reads, the date as ConvertTo-Json would give it. Documented output, not recorded on a host.
MP_STATUS_HEALTHY = {"AMEngineVersion": "1.1.24050.5", "AMProductVersion": "4.18.24050.7", "AMRunningMode": "Normal",
                     "AMServiceEnabled": True, "AntispywareEnabled": True, "AntivirusEnabled": True,
                     "AntivirusSignatureAge": 1, "AntivirusSignatureLastUpdated": "2024-06-04T08:06:27",
                     "AntivirusSignatureVersion": "1.413.102.0", "BehaviorMonitorEnabled": True,
                     "DefenderSignaturesOutOfDate": False, "RealTimeProtectionEnabled": True}


def test_defender_healthy_passes_and_turned_off_fails_with_reasons():
    assert judge_av(av.defender_section(MP_STATUS_HEALTHY)).status == "pass"
    off = dict(MP_STATUS_HEALTHY, RealTimeProtectionEnabled=False, AntivirusSignatureAge=12)
    r = judge_av(av.defender_section(off))
    assert r.status == "fail"
    assert r.evidence == ["real-time protection is off", "signatures 12 days old (policy: at most 3)"]
    assert judge_av(av.defender_section(None)).evidence == [
        "Microsoft Defender is not available (Get-MpComputerStatus failed)"]
    assert judge_av(av.defender_section(off), software_policy_windows_defender_required=False).status == \
        "not_applicable"


# ------------------------------------------------------------------------------------------ the nightly run

def test_posture_collects_software_and_av_sections(tmp_path):
    import deskguard_posture
    root = browser_root(tmp_path, "usr/bin/chromium")
    (root / "etc/apt/sources.list").write_text(SOURCES_LIST)
    posture, errors, _ = deskguard_posture.collect(["software", "av"], str(root), {
        "software": {"denied_packages": ["anydesk"], "allowed_sources": APPROVED, "browser": SETTINGS}})
    assert errors == {}
    assert posture["software"]["denied_installed"] == [] and posture["software"]["denylist_pinned"] is False
    assert posture["software"]["browsers"]["chromium"][0]["present"] is False
    assert posture["av"]["engine"] == "clamav"


def test_posture_params_carry_what_the_role_renders():
    from deskguard.compliance.policy import effective, posture_params
    params = posture_params(effective({"software_policy_url_blocklist": ["*.x"], "usb_control_mode": "block"}))
    role_keys = set(ROLE_VARS["__software_policy_browser"])
    assert set(params["software"]["browser"]) == role_keys and params["software"]["browser"]["url_blocklist"] == ["*.x"]


def test_a_denied_package_installed_fails_sw001_with_its_name():
    from deskguard.compliance import software
    r = software.denied({"family": "Debian", "denied_installed": ["anydesk"], "denylist_pinned": True},
                        {"software_policy_denied_packages": ["anydesk"]})
    assert r.status == "fail" and r.evidence == ["denied software installed: anydesk"]


# --------------------------------------------------------------------- the controller-side refusal, in Ansible

def guard_play(tmp_path, denied, onboard_vars=None):
    """Runs the role's guard (what onboard.yml's pre-tasks include) with real ansible-playbook on localhost."""
    import subprocess
    play = [{"hosts": "localhost", "gather_facts": False, "connection": "local",
             "vars": {"software_policy_denied_packages": denied, **(onboard_vars or {})},
             "tasks": [{"ansible.builtin.include_role": {"name": "software_policy", "tasks_from": "guard.yml"}}]}]
    path = tmp_path / "guard.yml"
    path.write_text(yaml.safe_dump(play))
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(REPO / "roles"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    return subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", str(path)],
                          capture_output=True, text=True, env=env, timeout=120)


def test_the_play_refuses_a_denylist_naming_a_kit_package_or_a_role_package(tmp_path):
    ok = guard_play(tmp_path, ["anydesk"])
    assert ok.returncode == 0, ok.stdout[-2000:]
    bad = guard_play(tmp_path, ["anydesk", "sudo"])
    assert bad.returncode != 0 and "names sudo, which deskguard needs" in bad.stdout, bad.stdout[-2000:]
    # A package only the onboarding play's map names (a role's package) is protected as well.
    mapped = guard_play(tmp_path, ["some-role-dep"], {"__onboard_packages": {"Debian": {"screen_lock": ["some-role-dep"]}}})
    assert mapped.returncode != 0 and "names some-role-dep" in mapped.stdout, mapped.stdout[-2000:]
    # With onboard.yml's own variables (its templated ClamAV entry included) the guard still evaluates.
    onboard = yaml.safe_load((REPO / "playbooks/onboard.yml").read_text())[0]["vars"]
    real = guard_play(tmp_path, ["anydesk"], {k: onboard[k] for k in ("__onboard_packages", "__onboard_clamav")})
    assert real.returncode == 0, real.stdout[-2000:]


def test_windows_browser_registry_drift_fails_and_an_empty_comparison_is_no_pass():
    from deskguard.compliance import software
    drift = {"family": "Windows", "browsers": {"registry": {"checked": 24, "differs": [
        "HKLM:\\SOFTWARE\\Policies\\Google\\Chrome\\DnsOverHttpsMode"]}}}
    r = software.browsers(drift, {})
    assert r.status == "fail" and "DnsOverHttpsMode differs" in r.evidence[0]
    assert software.browsers({"browsers": {"registry": {"checked": 24, "differs": []}}}, {}).status == "pass"
    assert software.browsers({"browsers": {"registry": {"checked": 0, "differs": []}}}, {}).status == "error"
    assert software.sources({"family": "Windows"}, {"software_policy_allowed_sources": ["http://x"]}).status == \
        "not_applicable"
