# -*- coding: utf-8 -*-
"""SW-003: the managed browser policies the kit writes, rendered from the policy, and where each browser reads
them on Linux. Pure stdlib; used by the role's module, the nightly posture (to compare what is on disk with
what should be) and the controller (to hand the posture its expected values).

Policy names checked against the Chrome Enterprise policy list and Mozilla's policy-templates README:
Chromium/Chrome: ExtensionInstallBlocklist/-Allowlist, SafeBrowsingProtectionLevel (1 = standard protection),
URLBlocklist, DnsOverHttpsMode ("off" | "secure") with DnsOverHttpsTemplates. Firefox: ExtensionSettings
("*" blocked, allowed IDs "allowed"), WebsiteFilter.Block, DNSOverHTTPS {Enabled, ProviderURL, Fallback,
Locked}, and the safe-browsing preferences locked through the Preferences policy.
"""

from __future__ import annotations

import json
import os
import re

# browser -> (files or directories whose presence means it is installed, the policy files it reads)
BROWSERS = {
    "chromium": (("usr/bin/chromium", "usr/lib/chromium/chromium", "usr/bin/chromium-browser"),
                 ("etc/chromium/policies/managed/deskguard.json",)),
    "chrome": (("opt/google/chrome/chrome",),
               ("etc/opt/chrome/policies/managed/deskguard.json",)),
    # /etc/firefox/policies is the system-wide place on Linux; Debian's firefox-esr is also given the
    # installation directory's distribution/policies.json (upstream's documented place for every build).
    "firefox": (("usr/lib/firefox/firefox", "usr/lib64/firefox/firefox"),
                ("etc/firefox/policies/policies.json",)),
    "firefox-esr": (("usr/lib/firefox-esr/firefox-esr",),
                    ("etc/firefox/policies/policies.json", "usr/lib/firefox-esr/distribution/policies.json")),
}


# Chromium's URL filter format (the policy's url_blocklist is written in it): [scheme://][.]host[:port][/path],
# the host a name, an IP address or "*" alone. Chromium 14x refuses a wildcard inside a host ("*.games.example":
# "Policy parsing error" in chrome://policy, proven by tests/container/test_desktop_controls.py) and then blocks
# nothing for that entry. "games.example" already blocks its subdomains; ".games.example" only the host itself.
_FILTER = re.compile(r"^(?:(?P<scheme>[a-z][a-z0-9+.-]*|\*)://)?(?P<host>\.?[^/:?@*\s]+|\*)?(?::(?P<port>\d+|\*))?"
                     r"(?P<rest>[/?@]\S*)?$", re.I)


def url_filter_problem(entry):
    """Why Chromium would refuse this URL filter, or None when it takes it."""
    if not isinstance(entry, str) or not entry.strip():
        return "not a text entry"
    m = _FILTER.match(entry)
    if m and m.group("scheme") and m.group("scheme").lower() == "file":
        return None   # file:// filters have no host
    if not m or not m.group("host"):
        if "*" in entry.split("/", 3)[2 if "://" in entry else 0]:
            return "a wildcard inside a host name (write the domain itself: it blocks its subdomains too)"
        return "not of the form [scheme://][.]host[:port][/path]"
    return None


def url_filter_problems(entries):
    """["'entry': why", ...] for the entries Chromium refuses (a list that is not a list of text: one line)."""
    if not isinstance(entries, list):
        return ["URLBlocklist is not a list"]
    return ["%r: %s" % (e, why) for e in entries for why in [url_filter_problem(e)] if why]


def firefox_match_pattern(entry):
    """The Chromium URL filter as a Firefox WebsiteFilter match pattern (<scheme>://<host>/<path>, which
    Firefox requires): no scheme -> any scheme, a name -> the name and its subdomains unless it starts with
    ".", an address as it is, no port (match patterns have none), the path with "*" after it."""
    m = _FILTER.match(entry)
    scheme = (m.group("scheme") or "*").lower()
    if scheme == "file":
        return "file:///*" if entry.rstrip("/*") in ("file:", "file:/") else entry if entry.endswith("*") else entry + "*"
    host = m.group("host")
    ip = re.match(r"^(\d+\.){3}\d+$|^\[", host)   # an address has no subdomains (nor does Chromium match any)
    host = "*" if host == "*" else host[1:] if host.startswith(".") else host if ip else "*." + host
    if scheme not in ("http", "https", "*"):
        scheme = "*"
    path = (m.group("rest") or "").split("?")[0].split("@")[0]
    return "%s://%s%s*" % (scheme, host, path if path.startswith("/") else "/")


# Firefox's WebsiteFilter takes WebExtension match patterns only; it skips anything else.
_MATCH_PATTERN = re.compile(r"^(?:(?:\*|https?|wss?|ftp)://(?:\*|\*\.[^/*]+|[^/*]+)|file://)/\S*$")


def rejected_entries(browser, found):
    """Entries of a policy file as found on disk that the browser refuses ([] when it takes them all)."""
    if not isinstance(found, dict):
        return ["the file is not a JSON object"]
    if browser.startswith("firefox"):
        block = ((found.get("policies") or {}).get("WebsiteFilter") or {}).get("Block", [])
        if not isinstance(block, list):
            return ["WebsiteFilter.Block is not a list"]
        return ["WebsiteFilter %r: not a match pattern (<scheme>://<host>/<path>)" % e for e in block
                if not isinstance(e, str) or not _MATCH_PATTERN.match(e)]
    out = ["URLBlocklist " + why for why in url_filter_problems(found.get("URLBlocklist", []))]
    if found.get("DnsOverHttpsMode", "off") not in ("off", "automatic", "secure"):
        out.append("DnsOverHttpsMode %r: not off, automatic or secure" % found["DnsOverHttpsMode"])
    return out


def chromium_policy(settings):
    """The managed policy for Chromium and Google Chrome (same names, same JSON)."""
    doh = settings.get("doh_resolver") or ""
    policy = {
        "ExtensionInstallBlocklist": ["*"],
        "ExtensionInstallAllowlist": sorted(settings.get("extension_allowlist") or []),
        "SafeBrowsingProtectionLevel": 1,
        "URLBlocklist": list(settings.get("url_blocklist") or []),
        # "secure": only the company's filtering resolver, no fallback around it; "off": the system resolver.
        "DnsOverHttpsMode": "secure" if doh else "off",
    }
    if doh:
        policy["DnsOverHttpsTemplates"] = doh
    return policy


def firefox_policy(settings):
    doh = settings.get("doh_resolver") or ""
    extensions = {"*": {"installation_mode": "blocked"}}
    for addon_id in sorted(settings.get("firefox_extension_allowlist") or []):
        extensions[addon_id] = {"installation_mode": "allowed"}
    dns = {"Enabled": bool(doh), "Locked": True}
    if doh:
        dns.update({"ProviderURL": doh, "Fallback": False})
    locked = {"Value": True, "Status": "locked"}
    return {"policies": {
        "ExtensionSettings": extensions,
        "WebsiteFilter": {"Block": [firefox_match_pattern(e) for e in settings.get("url_blocklist") or []
                                    if not url_filter_problem(e)]},
        "DNSOverHTTPS": dns,
        "Preferences": {"browser.safebrowsing.malware.enabled": locked,
                        "browser.safebrowsing.phishing.enabled": locked},
    }}


# Windows reads the same policies from the registry (HKLM\SOFTWARE\Policies\...): Google Chrome and Microsoft
# Edge take the Chromium names (Edge calls safe browsing SmartScreenEnabled); a list policy is a key whose
# values are "1", "2", ...; Firefox takes its nested policies (ExtensionSettings, Preferences) as JSON strings.
WINDOWS_CHROMIUM_LIKE = ((r"HKLM:\SOFTWARE\Policies\Google\Chrome", "SafeBrowsingProtectionLevel"),
                         (r"HKLM:\SOFTWARE\Policies\Microsoft\Edge", "SmartScreenEnabled"))
WINDOWS_FIREFOX = r"HKLM:\SOFTWARE\Policies\Mozilla\Firefox"
_CHROMIUM_LISTS = ("ExtensionInstallBlocklist", "ExtensionInstallAllowlist", "URLBlocklist")


def windows_registry(settings):
    """{"values": [{key, name, type, data}], "lists": [{key, items}]}: what the role writes on Windows and what
    the nightly posture compares there, from the same policies as the Linux files."""
    chromium, firefox = chromium_policy(settings), firefox_policy(settings)["policies"]
    values, lists = [], []
    for key, safe_browsing in WINDOWS_CHROMIUM_LIKE:
        values.append({"key": key, "name": safe_browsing, "type": "dword",
                       "data": chromium["SafeBrowsingProtectionLevel"]})
        values.append({"key": key, "name": "DnsOverHttpsMode", "type": "string", "data": chromium["DnsOverHttpsMode"]})
        if "DnsOverHttpsTemplates" in chromium:
            values.append({"key": key, "name": "DnsOverHttpsTemplates", "type": "string",
                           "data": chromium["DnsOverHttpsTemplates"]})
        lists += [{"key": key + "\\" + name, "items": chromium[name]} for name in _CHROMIUM_LISTS]
    for name in ("ExtensionSettings", "Preferences"):
        values.append({"key": WINDOWS_FIREFOX, "name": name, "type": "string",
                       "data": json.dumps(firefox[name], sort_keys=True)})
    dns = firefox["DNSOverHTTPS"]
    for name in ("Enabled", "Locked", "ProviderURL", "Fallback"):
        if name in dns:
            text = name == "ProviderURL"
            values.append({"key": WINDOWS_FIREFOX + "\\DNSOverHTTPS", "name": name,
                           "type": "string" if text else "dword", "data": dns[name] if text else int(dns[name])})
    lists.append({"key": WINDOWS_FIREFOX + "\\WebsiteFilter\\Block", "items": firefox["WebsiteFilter"]["Block"]})
    return {"values": values, "lists": lists}


def policy_for(browser, settings):
    return firefox_policy(settings) if browser.startswith("firefox") else chromium_policy(settings)


def render(policy):
    """The exact bytes written (sorted keys, so a converged file compares equal)."""
    return json.dumps(policy, indent=2, sort_keys=True) + "\n"


def installed(root="/"):
    return [name for name, (marks, _) in BROWSERS.items()
            if any(os.path.exists(os.path.join(root, m)) for m in marks)]


def targets(settings, root="/"):
    """{absolute path: rendered content} for the browsers installed under root."""
    out = {}
    for browser in installed(root):
        for rel in BROWSERS[browser][1]:
            out[os.path.join(root, rel)] = render(policy_for(browser, settings))
    return out


def observe(settings, root="/"):
    """Posture: per installed browser and policy file, present / valid JSON / equal to the expected policy /
    the entries the browser itself would refuse (a file can equal the policy and still be refused in part)."""
    seen = {}
    for browser in installed(root):
        expected = policy_for(browser, settings)
        files = []
        for rel in BROWSERS[browser][1]:
            path = os.path.join(root, rel)
            entry = {"path": "/" + rel, "present": os.path.isfile(path), "valid_json": False, "matches": False}
            if entry["present"]:
                st = os.stat(path)
                entry["mode"] = "%04o" % (st.st_mode & 0o7777)
                entry["owner_uid"] = st.st_uid
                try:
                    with open(path) as fh:
                        found = json.load(fh)
                    entry["valid_json"] = True
                    entry["matches"] = found == expected
                    entry["rejected"] = rejected_entries(browser, found)
                    if not entry["matches"] and isinstance(found, dict):
                        top = found.get("policies", found) if browser.startswith("firefox") else found
                        want = expected.get("policies", expected) if browser.startswith("firefox") else expected
                        entry["differs"] = sorted(k for k in set(top) | set(want)
                                                  if top.get(k) != want.get(k)) if isinstance(top, dict) else []
                except (ValueError, OSError):
                    pass
            files.append(entry)
        seen[browser] = files
    return seen
