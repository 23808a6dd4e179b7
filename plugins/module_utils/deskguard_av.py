# -*- coding: utf-8 -*-
"""AV-001 on Linux: ClamAV installed, its daemons running and its signatures fresh. Read-only, stdlib.

Signature age comes from the databases' own headers, not from file times: every .cvd/.cld in
/var/lib/clamav starts with a 512-byte header "ClamAV-VDB:<build date>:<version>:<signatures>:<level>:<md5>:
<dsig>:<builder>:<build time in epoch seconds>". The build time says how old the signatures are; a file's
mtime only says when freshclam last wrote it (a restored backup or a copied image would look fresh). The
file's mtime is used only when the header cannot be read. The age reported is the *newest* database's (daily
is what freshclam updates several times a day; main changes rarely).
"""

from __future__ import annotations

import glob
import os
import subprocess
import time

DB_DIR = "var/lib/clamav"
UNITS = ("clamav-daemon", "clamav-freshclam")


def header(path):
    """{version, signatures, built} from a .cvd/.cld header; None if it is not one."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512).decode("ascii", errors="replace").rstrip("\x00 ")
    except OSError:
        return None
    if not head.startswith("ClamAV-VDB:"):
        return None
    fields = head.split(":")
    # The date field itself contains a colon (hh:mm), so count the fields from the end: the last is the
    # build time in seconds, the builder, dsig, md5, level, signatures and version come before it.
    try:
        built = int(fields[-1].strip())
        return {"version": int(fields[-7]), "signatures": int(fields[-6]), "built": built}
    except (ValueError, IndexError):
        return None


def databases(root="/", now=None):
    now = time.time() if now is None else now
    out = []
    for path in sorted(glob.glob(os.path.join(root, DB_DIR, "*.c[vl]d"))):
        info = header(path)
        if info:
            info["source"] = "header"
        else:
            info = {"built": int(os.path.getmtime(path)), "source": "mtime"}
        info["name"] = os.path.basename(path)
        info["age_days"] = round((now - info["built"]) / 86400, 2)
        out.append(info)
    return out


def _active(units):
    try:
        proc = subprocess.run(["systemctl", "is-active", *units], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {u: "unknown" for u in units}
    states = proc.stdout.decode(errors="replace").split()
    return dict(zip(units, states + ["unknown"] * (len(units) - len(states))))


def collect(root="/", params=None, now=None):
    """The nightly posture's `av` section on Linux."""
    dbs = databases(root, now)
    installed = any(os.path.exists(os.path.join(root, p)) for p in ("usr/sbin/clamd", "usr/bin/clamscan"))
    states = _active(UNITS) if installed else {u: "inactive" for u in UNITS}
    return {"engine": "clamav", "installed": installed,
            "daemon_active": states.get("clamav-daemon") == "active",
            "updater_active": states.get("clamav-freshclam") == "active",
            "signature_age_days": min((d["age_days"] for d in dbs), default=None),
            "databases": dbs}


def defender_section(status):
    """The Windows `av` section from Get-MpComputerStatus's properties (a dict, e.g. its ConvertTo-Json), as
    Ansible.ModuleUtils.DeskguardPostureAv.psm1 builds it: the Python twin, so recorded outputs can be judged
    in tests without Windows."""
    if not status:
        return {"engine": "defender", "installed": False}
    return {"engine": "defender", "installed": True,
            "realtime_protection": bool(status.get("RealTimeProtectionEnabled")),
            "antivirus_enabled": bool(status.get("AntivirusEnabled")),
            "am_service_enabled": bool(status.get("AMServiceEnabled")),
            "signature_age_days": int(status.get("AntivirusSignatureAge") or 0)
            if status.get("AntivirusSignatureAge") is not None else None,
            "signature_version": str(status.get("AntivirusSignatureVersion") or "")}
