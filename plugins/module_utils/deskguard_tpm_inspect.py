# -*- coding: utf-8 -*-
"""Target-side TPM facts of a LUKS root (ENC-004), read without changing anything: the clevis bindings, whether
this machine's TPM releases their keys now, and the key files that would put a key into the initramfs.

The reading half of deskguard_tpm_bind (which binds, and imports everything here), in a file of its own so
the nightly posture collector never carries the binding half. Unlock keys reach clevis on stdin only.
"""

from __future__ import annotations

import os
import re
import subprocess

try:  # inside a module (Ansiballz) the kit's module_utils live under ansible.module_utils
    from ansible.module_utils import deskguard_luks_inspect as dl
except ImportError:  # unit tests: plain modules on sys.path
    import deskguard_luks_inspect as dl

CLEVIS = "clevis"
_ENV = dict(os.environ, LC_ALL="C", LANG="C")


def _run(argv, stdin=b""):
    try:
        proc = subprocess.run(list(argv), input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=dict(os.environ, LC_ALL="C", LANG="C"))
    except OSError as exc:
        return 127, b"", str(exc).encode()
    return proc.returncode, proc.stdout, proc.stderr


def tpm_present():
    """A TPM 2.0 the tools can reach: the kernel's resource manager, or the TCTI the environment names."""
    return bool(os.environ.get("TPM2TOOLS_TCTI")) or os.path.exists("/dev/tpmrm0")


def bindings(dump):
    """[{token, slot, pin, pcr_bank, pcr_ids}] of a luks_dump(): every clevis token, whatever its pin."""
    out = []
    for tid, token in sorted(dump.get("tokens", {}).items(), key=lambda kv: int(kv[0])):
        if token.get("type") != "clevis":
            continue
        for slot in token.get("keyslots") or [None]:
            entry = {"token": int(tid), "slot": None if slot is None else int(slot)}
            entry.update(dl.clevis_pin(token))
            out.append(entry)
    return out


def tpm_key(device, slot):
    """The key the TPM releases for slot's clevis binding now, or None (PCRs changed, another TPM, no TPM)."""
    rc, out, _ = _run([CLEVIS, "luks", "pass", "-d", device, "-s", str(int(slot))])
    return out if rc == 0 and out else None


def unseals(device, slot):
    """True if this machine's TPM releases slot's key now and that key opens slot (what the next boot does)."""
    key = tpm_key(device, slot)
    return key is not None and dl.test_key(device, key, slot)


def facts(device, dump, check_unseal=True):
    """ENC-004's facts for one LUKS device: {tpm_present, bindings: [{..., unseals}]} (no secret)."""
    found = bindings(dump)
    present = tpm_present()
    for entry in found:
        if entry.get("pin") == "tpm2" and entry["slot"] is not None and check_unseal:
            entry["unseals"] = present and unseals(device, entry["slot"])
    return {"tpm_present": present, "bindings": found}


# ----------------------------------------------------------------------------------- initramfs key file

CONF_HOOK = os.path.join("cryptsetup-initramfs", "conf-hook")
_PATTERN = re.compile(r"^\s*KEYFILE_PATTERN\s*=\s*(.*?)\s*$")


def _read_text(path):
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


def keyfile_pattern(etc="/etc"):
    """cryptsetup-initramfs's KEYFILE_PATTERN (the key files copied into the initramfs), '' when unset."""
    for line in (_read_text(os.path.join(etc, CONF_HOOK)) or "").splitlines():
        m = _PATTERN.match(line)
        if m and m.group(1).strip("\"'"):
            return m.group(1).strip("\"'")
    return ""


def crypttab_keyfiles_of(device, luks_uuid, crypttab_text):
    """The key files crypttab names for this device (the third field), not the cryptsetup-keys.d guesses."""
    entries = [(n, s, k) for n, s, k in dl.crypttab_keyfiles(crypttab_text)]
    return [k for k in dl.keyfiles_for(device, luks_uuid, entries) if "/cryptsetup-keys.d/" not in k]


def keyfile_facts(device, luks_uuid, etc="/etc", crypttab_text=None):
    """{crypttab_keyfiles: [paths], keyfile_pattern: str}: what puts a key file into this laptop's initramfs."""
    if crypttab_text is None:
        crypttab_text = _read_text(os.path.join(etc, "crypttab")) or ""
    return {"crypttab_keyfiles": crypttab_keyfiles_of(device, luks_uuid, crypttab_text),
            "keyfile_pattern": keyfile_pattern(etc)}


def add_facts(inventory, etc="/etc", crypttab_text=None):
    """Add ENC-004's facts ("tpm": bindings, unseals, key files) to every device of a deskguard_luks
    inventory, in place (the same call as ENC-001..003: no second round trip). Returns inventory."""
    for dev in inventory.get("devices") or []:
        try:
            dump = dl.luks_dump(dev["device"])
        except dl.LuksError as exc:
            dev["tpm"] = {"error": str(exc)}
            continue
        dev["tpm"] = dict(facts(dev["device"], dump),
                          **keyfile_facts(dev["device"], dev.get("luks_uuid"), etc, crypttab_text))
    return inventory
