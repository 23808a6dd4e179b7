# -*- coding: utf-8 -*-
"""SW-001 denied packages and SW-002 package sources on Linux: read them (the nightly posture) and the files
that keep a denied package out (an apt pin, dnf's exclude list). Pure stdlib; reads only, except
`pin_files`, which only renders.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess

APT_PIN = "etc/apt/preferences.d/deskguard-denylist"
DNF_CONF = "etc/dnf/dnf.conf"
_NAME = re.compile(r"^[a-z0-9][a-z0-9+.\-_]*$")
_C_ENV = dict(os.environ, LC_ALL="C", LANG="C")


class PolicyError(ValueError):
    pass


def check_denylist(denied, protected):
    """The denylist, checked: package names only, none of `protected` (the packages the kit needs to manage,
    encrypt, update and reach the laptop: the role's vars/main.yml and onboard.yml's package map). PolicyError
    with one line otherwise."""
    bad = [n for n in denied if not isinstance(n, str) or not _NAME.match(n)]
    if bad:
        raise PolicyError("software_policy_denied_packages: not package names: %s" % ", ".join(map(str, bad)))
    needed = sorted(set(denied) & set(protected))
    if needed:
        raise PolicyError("software_policy_denied_packages names %s, which deskguard needs to manage the laptop; "
                          "remove %s from the denylist" % (", ".join(needed), "it" if len(needed) == 1 else "them"))
    return sorted(set(denied))


def family(root="/"):
    if os.path.exists(os.path.join(root, "usr/bin/dpkg-query")) or os.path.isdir(os.path.join(root, "var/lib/dpkg")):
        return "Debian"
    if os.path.exists(os.path.join(root, "usr/bin/rpm")):
        return "RedHat"
    return None


def installed(names, fam, root="/"):
    """The subset of names installed (dpkg: unpacked or more; rpm: rpm -q succeeds), in the package database
    under root."""
    if not names:
        return []
    if fam == "Debian":
        admindir = os.path.join(root, "var/lib/dpkg")
        proc = subprocess.run(["dpkg-query", "--admindir=" + admindir, "-W", "-f",
                               "${Package}\t${db:Status-Abbrev}\n", *names],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_C_ENV, timeout=30)
        found = []
        for line in proc.stdout.decode(errors="replace").splitlines():
            pkg, _, status = line.partition("\t")
            # Second letter: i installed; U/F/H/W/t unpacked or half-done (its files are there, it counts);
            # c (only configuration files left) and n do not.
            if status[1:2] and status[1] in "iUFHWt":
                found.append(pkg.split(":")[0])
        return sorted(set(found) & set(names))
    if fam == "RedHat":
        proc = subprocess.run(["rpm", "--root", root, "-q", "--qf", "%{NAME}\n", *names], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, env=_C_ENV, timeout=30)
        return sorted(set(proc.stdout.decode(errors="replace").split()) & set(names))
    return []


def pin_files(denied, fam, root="/"):
    """{path: content or None (absent)} keeping denied packages out: an apt pin with priority -1 (never
    installed, not even as a dependency) or dnf's exclude= in [main]."""
    denied = sorted(set(denied))   # the same file whatever order the policy lists them in
    if fam == "Debian":
        path = os.path.join(root, APT_PIN)
        if not denied:
            return {path: None}
        return {path: "# Managed by deskguard (SW-001): packages the company forbids, never installed,\n"
                      "# not even to satisfy a dependency.\n"
                      "Package: %s\nPin: version *\nPin-Priority: -1\n" % " ".join(denied)}
    if fam == "RedHat":
        path = os.path.join(root, DNF_CONF)
        return {path: dnf_conf_with_excludes(_read(path) or "[main]\n", denied)}
    return {}


_DG_EXCLUDE = "# deskguard SW-001"


def dnf_conf_with_excludes(text, denied):
    """dnf.conf with the kit's exclude= line (marked) in [main] replaced; other lines kept as they are."""
    lines = [ln for ln in text.splitlines() if not ln.endswith(_DG_EXCLUDE)]
    if denied:
        line = "exclude=%s  %s" % (" ".join(denied), _DG_EXCLUDE)
        idx = next((i for i, ln in enumerate(lines) if ln.strip() == "[main]"), None)
        if idx is None:
            lines[:0] = ["[main]", line]
        else:
            lines.insert(idx + 1, line)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ sources

def _one_line(path):
    out = []
    with open(path) as fh:
        for n, raw in enumerate(fh, 1):
            line = raw.split("#", 1)[0].strip()
            if not line.startswith(("deb ", "deb-src ")):
                continue
            words = re.sub(r"\[[^\]]*\]", " ", line).split()
            if len(words) >= 2:
                out.append({"file": path, "line": n, "type": words[0], "uri": words[1].rstrip("/")})
    return out


def _deb822(path):
    out = []
    with open(path) as fh:
        stanzas = re.split(r"\n\s*\n", fh.read())
    for stanza in stanzas:
        fields = {}
        for raw in stanza.splitlines():
            if raw.startswith("#") or ":" not in raw or raw[:1].isspace():
                continue
            key, _, value = raw.partition(":")
            fields[key.strip().lower()] = value.strip()
        if fields.get("enabled", "yes").lower() == "no" or "uris" not in fields:
            continue
        for uri in fields["uris"].split():
            out.append({"file": path, "line": None, "type": fields.get("types", "deb"), "uri": uri.rstrip("/")})
    return out


def apt_sources(root="/"):
    found = []
    main = os.path.join(root, "etc/apt/sources.list")
    if os.path.isfile(main):
        found += _one_line(main)
    for path in sorted(glob.glob(os.path.join(root, "etc/apt/sources.list.d/*.list"))):
        found += _one_line(path)
    for path in sorted(glob.glob(os.path.join(root, "etc/apt/sources.list.d/*.sources"))):
        found += _deb822(path)
    return found


def dnf_sources(root="/"):
    found = []
    for path in sorted(glob.glob(os.path.join(root, "etc/yum.repos.d/*.repo"))):
        section, fields = None, {}
        with open(path) as fh:
            lines = fh.read().splitlines() + ["[]"]
        for raw in lines:
            line = raw.strip()
            if line.startswith("[") and line.endswith("]"):
                if section and fields.get("enabled", "1") != "0":
                    for key in ("baseurl", "metalink", "mirrorlist"):
                        for uri in fields.get(key, "").split():
                            found.append({"file": path, "line": None, "type": section, "uri": uri.rstrip("/")})
                section, fields = line[1:-1], {}
            elif "=" in line and not line.startswith("#"):
                key, _, value = line.partition("=")
                fields[key.strip()] = value.strip()
    return found


def allowed(uri, approved):
    """A source is approved when its URI starts with an approved one (scheme and host included)."""
    uri = uri.rstrip("/")
    return any(uri == a.rstrip("/") or uri.startswith(a.rstrip("/") + "/") for a in approved)


def sources(root="/", approved=()):
    fam = family(root)
    found = apt_sources(root) if fam == "Debian" else dnf_sources(root) if fam == "RedHat" else []
    for src in found:
        src["approved"] = allowed(src["uri"], approved)
        if root != "/":
            src["file"] = "/" + os.path.relpath(src["file"], root)
    return found


def _read(path):
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


def pinned(denied, fam, root="/"):
    """Whether the files that keep the denied packages out are as the kit writes them."""
    return all(_read(path) == content for path, content in pin_files(denied, fam, root).items())


def collect(root="/", params=None):
    """The nightly posture's `software` section (browser policies added by the caller)."""
    params = params or {}
    fam = family(root)
    denied = list(params.get("denied_packages") or [])
    return {"family": fam, "denied_installed": installed(denied, fam, root), "denylist_pinned": pinned(denied, fam, root),
            "sources": sources(root, params.get("allowed_sources") or [])}
