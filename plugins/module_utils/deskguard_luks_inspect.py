# -*- coding: utf-8 -*-
"""Target-side LUKS reading: inspect headers, discover what is encrypted, fingerprint keyslots, test a key, and
the inventory the nightly run collects (ENC-001..003). Changes nothing.

The reading half of deskguard_luks, in a file of its own so that the posture collector (which ships in every
nightly module call and is compiled there on every run, AnsiballZ carries no bytecode) never carries the
key-changing half. deskguard_luks imports everything here and is the module callers use; the fail-safe
rules are in its docstring. Pure Python 3.9+ stdlib.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess

CRYPTSETUP = "cryptsetup"
LUKS2_SLOTS = 32
LUKS1_SLOTS = 8
# open --test-passphrase tries LUKS2 tokens before the key file; restrict it to a token type that cannot
# exist (and load no external token plugin), so a test proves the key itself, never a TPM or keyring.
_NO_TOKENS = ("--disable-external-tokens", "--token-type", "deskguard-key-file-only")
_C_ENV = dict(os.environ, LC_ALL="C", LANG="C")


class LuksError(Exception):
    """One-line message: the device, what went wrong, what to do."""



def _run(args, secret=None):
    """Run cryptsetup with args; secret (bytes) goes to stdin only. Returns (rc, stdout, stderr)."""
    proc = subprocess.run([CRYPTSETUP, *args], input=secret if secret is not None else b"",
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_C_ENV)
    return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")


def _last_line(text):
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _check_key(device, key, what="key"):
    if not isinstance(key, (bytes, bytearray)) or not key:
        raise LuksError("%s: the %s must be non-empty bytes" % (device, what))
    return bytes(key)


# --------------------------------------------------------------------------------------------- reading

def _parse_luks1(text):
    """LUKS1 text dump -> a dict shaped like the LUKS2 JSON where it matters (keyslots by string id)."""
    fields = {}
    slots = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^Key Slot (\d+): (ENABLED|DISABLED)", line)
        if m:
            current = None
            if m.group(2) == "ENABLED":
                current = slots[m.group(1)] = {"type": "luks1", "kdf": {"type": "pbkdf2"}}
            continue
        m = re.match(r"^\s*([A-Za-z ]+?):\s*(.*)$", line)
        if not m:
            continue
        name, value = m.group(1).strip(), m.group(2).strip()
        if current is not None and name == "Iterations":
            current["kdf"]["iterations"] = int(value)
        elif current is None and line[:1] not in (" ", "\t"):
            fields[name] = value
    cipher = "-".join(x for x in (fields.get("Cipher name"), fields.get("Cipher mode")) if x)
    key_bits = int(fields["MK bits"]) if fields.get("MK bits", "").isdigit() else None
    for slot in slots.values():
        slot["kdf"]["hash"] = fields.get("Hash spec")
        if key_bits:
            slot["key_size"] = key_bits // 8
    return {"version": 1, "uuid": fields.get("UUID"), "cipher": cipher or None, "key_bits": key_bits,
            "keyslots": slots, "tokens": {}, "segments": {}, "digests": {}}


def luks_dump(device):
    """Parsed header metadata of device, with "version" (1 or 2) and "device" added.

    LUKS2: the `luksDump --dump-json-metadata` JSON (+ "uuid"). LUKS1: a dict of the same shape for the
    parts callers use (keyslots, cipher, key_bits), parsed from the text dump; callers report it and
    add_key() refuses it. Raises LuksError if the device is missing or not LUKS.
    """
    if not os.path.exists(device):
        raise LuksError("%s: no such device (check the device path)" % device)
    rc, out, err = _run(["luksDump", "--dump-json-metadata", device])
    if rc == 0:
        try:
            dump = json.loads(out)
        except ValueError as exc:
            raise LuksError("%s: unreadable LUKS2 JSON metadata (%s); inspect it with cryptsetup luksDump"
                            % (device, exc))
        rc_uuid, uuid, _ = _run(["luksUUID", device])
        dump.update(version=2, device=device, uuid=uuid.strip() if rc_uuid == 0 else None)
        return dump
    if _run(["isLuks", "--type", "luks1", device])[0] == 0:
        rc, out, err = _run(["luksDump", device])
        if rc != 0:
            raise LuksError("%s: luksDump failed: %s" % (device, _last_line(err)))
        dump = _parse_luks1(out)
        dump["device"] = device
        return dump
    raise LuksError("%s: not a LUKS device (%s)" % (device, _last_line(err)))


def device_info(dump):
    """Summary of a luks_dump(): version, cipher, key_size (bits), keyslots [{slot, type, pbkdf, ...}]."""
    if dump.get("version") == 1:
        cipher, key_bits = dump.get("cipher"), dump.get("key_bits")
    else:
        crypt = [s for _, s in sorted(dump.get("segments", {}).items()) if s.get("type") == "crypt"]
        cipher = crypt[0].get("encryption") if crypt else None
        sizes = [ks.get("key_size") for ks in dump.get("keyslots", {}).values() if ks.get("key_size")]
        key_bits = sizes[0] * 8 if sizes else None
    token_of, clevis_of = {}, {}
    for token in dump.get("tokens", {}).values():
        for slot in token.get("keyslots", []):
            token_of.setdefault(int(slot), []).append(token.get("type"))
            if token.get("type") == "clevis":
                clevis_of[int(slot)] = clevis_pin(token)
    slots = []
    for sid, ks in sorted(dump.get("keyslots", {}).items(), key=lambda kv: int(kv[0])):
        kdf = ks.get("kdf", {})
        entry = {"slot": int(sid), "type": ks.get("type"), "pbkdf": kdf.get("type"),
                 "hash": kdf.get("hash"), "tokens": token_of.get(int(sid), [])}
        for name in ("iterations", "time", "memory", "cpus"):
            if name in kdf:
                entry[name] = kdf[name]
        if "priority" in ks:
            entry["priority"] = ks["priority"]
        if int(sid) in clevis_of:
            entry["clevis"] = clevis_of[int(sid)]
        slots.append(entry)
    return {"device": dump.get("device"), "luks_uuid": dump.get("uuid"), "version": dump.get("version"),
            "cipher": cipher, "key_size": key_bits, "keyslots": slots}


def clevis_pin(token):
    """What a clevis LUKS2 token binds its keyslot to, read from the JWE's protected header (no TPM needed):
    {"pin": "tpm2", "pcr_bank": "sha256", "pcr_ids": [0, 2, 7]} (a tang or sss pin: {"pin": "tang"}), or
    {"pin": None} when the header cannot be read."""
    jwe = token.get("jwe")
    protected = jwe.get("protected") if isinstance(jwe, dict) else (jwe or "").split(".")[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4)))
        clevis = header["clevis"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return {"pin": None}
    pin = clevis.get("pin")
    out = {"pin": pin}
    if pin == "tpm2":
        conf = clevis.get("tpm2") or {}
        ids = str(conf.get("pcr_ids") or "")
        out["pcr_bank"] = conf.get("pcr_bank")
        out["pcr_ids"] = sorted(int(x) for x in ids.split(",") if x.strip().isdigit())
    return out


def free_slot(dump):
    """Lowest unused keyslot number of a luks_dump(), or None when every slot is taken."""
    total = LUKS1_SLOTS if dump.get("version") == 1 else LUKS2_SLOTS
    used = {int(s) for s in dump.get("keyslots", {})}
    return next((n for n in range(total) if n not in used), None)


def classify(device_info, approved_ciphers=("aes-xts-plain64",), min_key_bits=512, weak_pbkdfs=("pbkdf2",),
             exempt_slots=()):
    """(violations, warnings) for a device_info()/discover() entry. Violations make the disk non-compliant
    (LUKS1, cipher, key size, no keyslot); a weak PBKDF is a warning, and none for exempt_slots (escrowed
    recovery keys are random, so a slow KDF adds nothing to them)."""
    dev = device_info.get("device") or device_info.get("luks_uuid") or "LUKS device"
    bad, warn = [], []
    if device_info.get("version") == 1:
        bad.append("%s: LUKS1 header (convert to LUKS2 offline: cryptsetup convert --type luks2)" % dev)
    cipher = device_info.get("cipher")
    if cipher not in approved_ciphers:
        bad.append("%s: cipher %s is not approved (%s)" % (dev, cipher, ", ".join(approved_ciphers)))
    bits = device_info.get("key_size")
    if bits is not None and bits < min_key_bits:
        bad.append("%s: volume key is %d bits, policy needs >= %d" % (dev, bits, min_key_bits))
    slots = device_info.get("keyslots", [])
    if not slots:
        bad.append("%s: no keyslots (erased or unusable header)" % dev)
    for ks in slots:
        if ks.get("pbkdf") in weak_pbkdfs and ks["slot"] not in exempt_slots:
            warn.append("%s: keyslot %d uses weak PBKDF %s (cryptsetup luksConvertKey --pbkdf argon2id)"
                        % (dev, ks["slot"], ks["pbkdf"]))
    return bad, warn


def findings(device_info, approved_ciphers=("aes-xts-plain64",), min_key_bits=512, weak_pbkdfs=("pbkdf2",)):
    """Policy findings (one line each) for a device_info()/discover() entry; [] when compliant."""
    bad, warn = classify(device_info, approved_ciphers, min_key_bits, weak_pbkdfs)
    return bad + warn


def slot_fingerprint(dump, slot):
    """sha256 of the LUKS UUID and one keyslot's JSON metadata, or None if the slot is empty.

    Changing the key of a slot (luksChangeKey, kill + add) draws a new KDF salt, so the print changes: that
    is how `keys verify` notices a key changed behind the kit's back without holding the key.
    """
    ks = dump.get("keyslots", {}).get(str(int(slot)))
    if ks is None:
        return None
    blob = json.dumps({"uuid": dump.get("uuid"), "slot": int(slot), "keyslot": ks}, sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def crypttab_keyfiles(text):
    """[(name, source, keyfile)] for /etc/crypttab lines that name a key file (not none, -, or /dev/*random)."""
    out = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 3:
            continue
        name, source, keyfile = fields[:3]
        if keyfile in ("none", "-") or keyfile.startswith("/dev/") or ":" in keyfile:
            continue
        out.append((name, source, keyfile))
    return out


def keyfiles_for(device, luks_uuid, entries, realpath=os.path.realpath):
    """Key files from crypttab entries (crypttab_keyfiles) that name this device, by UUID= or by path."""
    found = []
    for name, source, keyfile in entries:
        if source.startswith("UUID="):
            match = luks_uuid is not None and source[5:].strip('"') == luks_uuid
        else:
            match = realpath(source) == realpath(device)
        if match:
            found.append(keyfile)
            found.append("/etc/cryptsetup-keys.d/%s.key" % name)
    return found


# ------------------------------------------------------------------------------------------- discovery

_BOOT_MOUNTS = ("/boot", "/boot/efi", "/efi")
_IGNORED_FSTYPES = ("squashfs", "iso9660", "udf")   # read-only images (snaps) and optical media


def _mounts(node):
    points = node.get("mountpoints")
    if points is None:
        points = [node.get("mountpoint")]
    return [p for p in points if p]


def _graph(blockdevices):
    """Flatten lsblk output (tree, or --list with pkname) into {path: node}, {path: set(parent paths)}."""
    nodes, parents, pknames = {}, {}, {}

    def key(node):
        return node.get("path") or "/dev/" + node["name"]

    def walk(node, parent):
        path = key(node)
        seen = nodes.setdefault(path, node)
        if _mounts(node) and not _mounts(seen):
            nodes[path] = node
        parents.setdefault(path, set())
        pknames.setdefault(path, set()).add(node.get("pkname"))
        if parent:
            parents[path].add(parent)
        for child in node.get("children") or ():
            walk(child, path)

    for node in blockdevices:
        walk(node, None)
    by_name = {n["name"]: p for p, n in nodes.items()}
    for path in nodes:
        if not parents[path]:       # --list output: no nesting, parents come from PKNAME
            parents[path].update(by_name[pk] for pk in pknames[path] if pk in by_name)
    return nodes, parents


def discover(lsblk_json=None, dump=None):
    """LUKS devices that back a mounted filesystem or swap (any depth), and what is mounted unencrypted.

    Returns {"luks": [{device, luks_uuid, version, cipher, key_size, keyslots, backs}], "unencrypted":
    [{mountpoint, device, fstype}], "unencrypted_boot": [...]} where a mount counts as encrypted only if
    *every* path from it down to the disks crosses a LUKS container (an LVM group extended onto a plain
    disk is unencrypted). /boot, /boot/efi and /efi are listed apart; zram (RAM), squashfs and optical
    media are ignored. lsblk_json (str or dict) replaces the lsblk call; dump replaces luks_dump (tests).
    """
    if lsblk_json is None:
        proc = subprocess.run(["lsblk", "--json", "-o", "NAME,PATH,TYPE,FSTYPE,MOUNTPOINTS,UUID,PKNAME"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_C_ENV)
        if proc.returncode != 0:
            raise LuksError("lsblk failed: %s" % _last_line(proc.stderr.decode(errors="replace")))
        lsblk_json = proc.stdout.decode()
    data = json.loads(lsblk_json) if isinstance(lsblk_json, (str, bytes)) else lsblk_json
    nodes, parents = _graph(data.get("blockdevices", []))
    dump = dump or luks_dump

    def is_luks(path):
        return nodes[path].get("fstype") == "crypto_LUKS"

    memo = {}

    def covered(path, trail=()):
        """(all paths down cross LUKS, set of LUKS containers crossed)."""
        if path in memo:
            return memo[path]
        if path in trail:
            return False, set()
        result = (False, set())
        ups = parents.get(path, set())
        if ups:
            states = [(True, {up}) if is_luks(up) else covered(up, trail + (path,)) for up in ups]
            result = (all(ok for ok, _ in states), set().union(*(lk for _, lk in states)))
        memo[path] = result
        return result

    backs, unencrypted, boot = {}, [], []
    for path, node in nodes.items():
        points = _mounts(node)
        if not points or is_luks(path):
            continue
        if node.get("fstype") in _IGNORED_FSTYPES or node["name"].startswith("zram"):
            continue
        ok, containers = covered(path)
        if ok:
            for luks in containers:
                backs.setdefault(luks, set()).update(points)
            continue
        for point in points:
            entry = {"mountpoint": point, "device": path, "fstype": node.get("fstype")}
            if containers:
                entry["partly_on"] = sorted(containers)
            (boot if point in _BOOT_MOUNTS else unencrypted).append(entry)
    luks = []
    for path in sorted(backs):
        info = device_info(dump(path))
        info["device"] = path
        info["luks_uuid"] = nodes[path].get("uuid") or info.get("luks_uuid")
        info["backs"] = sorted(backs[path])
        luks.append(info)
    order = lambda e: e["mountpoint"]  # noqa: E731
    return {"luks": luks, "unencrypted": sorted(unencrypted, key=order), "unencrypted_boot": sorted(boot, key=order)}


def test_key(device, key, slot=None):
    """True if key opens device (through slot, when given). Never uses tokens (TPM2, keyring)."""
    key = _check_key(device, key)
    args = ["open", "--test-passphrase", *_NO_TOKENS, "--key-file", "-", "--keyfile-size", str(len(key))]
    if slot is not None:
        args += ["--key-slot", str(int(slot))]
    rc, _, err = _run(args + [device], key)
    if rc == 0:
        return True
    if rc == 2 or (rc == 1 and "keyslot" in err.lower()):
        return False
    raise LuksError("%s: testing a key failed (rc %d): %s" % (device, rc, _last_line(err)))



# ------------------------------------------------------------------------------------------- inventory

_REMOVABLE_MOUNTS = ("/media/", "/run/media/")   # USB sticks: the usb_control role's business, not ENC's


def inventory(lsblk_json=None, dump=None, approved_ciphers=("aes-xts-plain64",), min_key_bits=512,
              exempt=()):
    """discover() plus, per LUKS device, a fingerprint per keyslot and the lowest free slot, and the
    findings: {"devices", "unencrypted", "unencrypted_boot", "violations", "advisories"} ("warnings" is a
    reserved key in module results).

    exempt: "LUKS-UUID:slot" strings of escrowed recovery slots (no weak-PBKDF warning for them). An
    unencrypted root or swap is a violation whose only fix is a reinstall; other unencrypted volumes warn.
    """
    dumps = {}

    def remember(path):
        dumps[path] = (dump or luks_dump)(path)
        return dumps[path]

    found = discover(lsblk_json, remember)
    violations, warnings = [], []
    for info in found["luks"]:
        raw = dumps[info["device"]]
        for ks in info["keyslots"]:
            ks["fingerprint"] = slot_fingerprint(raw, ks["slot"])
        info["free_slot"] = free_slot(raw)
        mine = [int(e.rsplit(":", 1)[1]) for e in exempt if e.rsplit(":", 1)[0] == info["luks_uuid"]]
        bad, warn = classify(info, approved_ciphers, min_key_bits, exempt_slots=mine)
        violations += bad
        warnings += warn
    root_devices = {e["device"] for e in found["unencrypted"] if e["mountpoint"] == "/"}
    for entry in found["unencrypted"]:
        point = entry["mountpoint"]
        if point.startswith(_REMOVABLE_MOUNTS):
            continue
        if point != "/" and entry["device"] in root_devices:
            continue   # a bind mount of the root's own device: the root finding covers it
        if point in ("/", "[SWAP]"):
            violations.append("%s on %s is not encrypted: reinstall with encryption (in-place encryption of a "
                              "running root is not supported)" % ("swap" if point == "[SWAP]" else "root (/)",
                                                                  entry["device"]))
        else:
            warnings.append("%s on %s is not encrypted (a data volume: encrypt it offline, or list it in "
                            "disk_encryption_format_devices)" % (point, entry["device"]))
    # A container's root is an overlay or bind mount that no block device backs: nothing here to encrypt.
    root_seen = any("/" in d["backs"] for d in found["luks"]) or any(
        e["mountpoint"] == "/" for e in found["unencrypted"])
    return {"devices": found["luks"], "unencrypted": found["unencrypted"], "root_on_block_device": root_seen,
            "unencrypted_boot": found["unencrypted_boot"], "violations": violations, "advisories": warnings}
