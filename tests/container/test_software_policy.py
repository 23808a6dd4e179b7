"""software_policy on a real laptop container (Debian 12, systemd, dpkg/apt): check mode first, converge, the
browser policy files present and parsed back as JSON, a second run with nothing changed; a denied package the
operator installs by hand (a real .deb built here with dpkg-deb, installed with dpkg -i) is reported by the
nightly run and purged by `--fix`; a denylist naming a package the kit needs is refused before any change.

The lab image has no browser: the test puts an empty stand-in at each browser's executable path, which is all
the role looks at; no browser is started (docs/software-policy.md)."""

from __future__ import annotations

import base64
import json
import re
import subprocess

import pytest

from deskguard.lab import network
from deskguard.lab.access import run_ssh as ssh
from sitetools import comply_json, onboard_lab

pytestmark = pytest.mark.container

HOST = "lap-sw1"
DENIED = "dg-test-remote-desktop"
STANDINS = ("/usr/lib/chromium/chromium", "/usr/lib/firefox-esr/firefox-esr")
POLICY_FILES = ("/etc/chromium/policies/managed/deskguard.json", "/etc/firefox/policies/policies.json",
                "/usr/lib/firefox-esr/distribution/policies.json")
POLICY = {"software_policy_denied_packages": f"[{DENIED}, anydesk]",
          "software_policy_url_blocklist": '["games.example", "file://*"]',
          "software_policy_browser_extension_allowlist": "[aaaabbbbccccddddeeeeffffgggghhhh]",
          "software_policy_doh_resolver": "https://dns.corp.example/dns-query"}


def onboard(site, laptop, *extra):
    return onboard_lab(site, HOST, laptop, *extra, timeout=600)


def comply(site, *args):
    rc, report = comply_json(site, *args, timeout=600)
    return rc, dict(report["hosts"][HOST]["results"])


def sw_states(out):
    return {c["control"]: c["state"] for c in out["controls"] if c["control"].startswith(("SW-", "AV-"))}


def tiny_deb(tmp_path) -> str:
    """A real Debian package built with dpkg-deb, base64 for the trip over SSH."""
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr/share/doc" / DENIED).mkdir(parents=True)
    (root / "usr/share/doc" / DENIED / "README").write_text("stands in for a forbidden remote-desktop tool\n")
    (root / "DEBIAN/control").write_text(f"Package: {DENIED}\nVersion: 1.0\nArchitecture: all\n"
                                         "Maintainer: deskguard tests <t@example.invalid>\n"
                                         "Description: test package the policy denies\n")
    deb = tmp_path / f"{DENIED}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], check=True,
                   stdout=subprocess.DEVNULL)
    return base64.b64encode(deb.read_bytes()).decode()


@pytest.fixture(scope="module")
def laptop(lab_container):
    host = lab_container.hosts["lab-ct1"]
    r = ssh(host, "sudo sh -c 'for p in " + " ".join(STANDINS) + "; do mkdir -p $(dirname $p); touch $p; done; "
                  "rm -f " + " ".join(POLICY_FILES) + "'; echo ok")
    assert r.stdout.strip().endswith("ok"), r.stderr
    return host


def with_values(text, values):
    """The policy text with each key's one-line value replaced (the example policy writes each on one line)."""
    for key, value in values.items():
        text, n = re.subn(rf"^{key}:.*$", f"{key}: {value}", text, flags=re.M)
        assert n == 1, key
    return text


@pytest.fixture(scope="module")
def site(make_site):
    site = make_site(management=network.lab_network())
    policy = site / "inventory" / "group_vars" / "all" / "policy.yml"
    policy.write_text(with_values(policy.read_text(), POLICY))
    return site


def policy_files(laptop):
    r = ssh(laptop, "for f in " + " ".join(POLICY_FILES) + "; do sudo stat -c '%a %U' $f; sudo cat $f; echo '<<>>'; done")
    return r.stdout.split("<<>>\n")[:-1]


def test_check_mode_first_changes_nothing(site, laptop):
    proc, out = onboard(site, laptop, "--check")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert sw_states(out) == {"SW-001": "would change", "SW-002": "not applicable", "SW-003": "would change",
                              "AV-001": "not applicable"}, out["controls"]
    r = ssh(laptop, "ls " + " ".join(POLICY_FILES) + " /etc/apt/preferences.d/deskguard-denylist 2>&1 | grep -c 'No such'")
    assert r.stdout.strip() == "4"


def test_converge_writes_the_policy_files_as_valid_json(site, laptop):
    proc, out = onboard(site, laptop)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert sw_states(out) == {"SW-001": "applied", "SW-002": "not applicable", "SW-003": "applied",
                              "AV-001": "not applicable"}, out["controls"]
    chromium, firefox, firefox_dist = policy_files(laptop)
    head, _, body = chromium.partition("\n")
    assert head == "644 root"
    chrome = json.loads(body)
    assert chrome["ExtensionInstallBlocklist"] == ["*"] and chrome["DnsOverHttpsMode"] == "secure"
    assert chrome["URLBlocklist"] == ["games.example", "file://*"]
    for text in (firefox, firefox_dist):
        head, _, body = text.partition("\n")
        assert head == "644 root"
        policies = json.loads(body)["policies"]
        assert policies["DNSOverHTTPS"]["ProviderURL"] == "https://dns.corp.example/dns-query"
        assert policies["ExtensionSettings"]["*"]["installation_mode"] == "blocked"
    pin = ssh(laptop, "cat /etc/apt/preferences.d/deskguard-denylist; apt-cache policy anydesk 2>&1 | head -3")
    assert f"Package: anydesk {DENIED}\nPin: version *\nPin-Priority: -1" in pin.stdout, pin.stdout


def test_second_run_changes_nothing(site, laptop):
    proc, out = onboard(site, laptop)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert out["changed_tasks"] == 0, out
    assert sw_states(out)["SW-003"] == "already compliant"


def test_a_denied_package_installed_by_hand_is_reported_then_purged_by_fix(site, laptop, tmp_path):
    r = ssh(laptop, f"base64 -d > /tmp/{DENIED}.deb && sudo dpkg -i /tmp/{DENIED}.deb >/dev/null && "
                    f"dpkg-query -W -f '${{Status}}' {DENIED}", stdin=tiny_deb(tmp_path))
    assert r.stdout.strip() == "install ok installed", r.stdout + r.stderr

    rc, results = comply(site)
    assert rc == 1
    assert results["SW-001"]["status"] == "fail"
    assert results["SW-001"]["evidence"] == [f"denied software installed: {DENIED}"]
    assert results["SW-003"]["status"] == "pass" and results["AV-001"]["status"] == "not_applicable"

    rc, fixed = comply(site, "--fix")
    assert fixed["SW-001"]["status"] == "pass", fixed["SW-001"]
    gone = ssh(laptop, f"dpkg-query -W -f '${{Status}}' {DENIED} 2>&1; test -e /usr/share/doc/{DENIED} || echo gone")
    assert "install ok installed" not in gone.stdout and gone.stdout.strip().endswith("gone"), gone.stdout


def test_a_denylist_naming_a_package_the_kit_needs_is_refused_before_any_change(site, laptop):
    policy = site / "inventory" / "group_vars" / "all" / "policy.yml"
    good = policy.read_text()
    before = policy_files(laptop)
    try:
        policy.write_text(with_values(good, {"software_policy_denied_packages": f"[{DENIED}, openssh-server]",
                                             "software_policy_url_blocklist": '["new.example"]'}))
        proc, out = onboard(site, laptop)
        assert proc.returncode != 0
        assert "openssh-server, which deskguard needs" in proc.stdout + proc.stderr
    finally:
        policy.write_text(good)
    assert policy_files(laptop) == before   # the URL blocklist change was not written either
    assert ssh(laptop, "dpkg-query -W -f '${Status}' openssh-server").stdout == "install ok installed"
