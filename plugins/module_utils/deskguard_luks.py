# -*- coding: utf-8 -*-
"""Target-side LUKS logic for the disk_encryption role: inspect, discover, add/verify/remove/rotate keys.

Pure Python 3.9+ stdlib, runs on the laptop, unit-tested against real cryptsetup on image files
(header operations need no device-mapper). The module wrapper, the escrow action plugin and the role
build on this file; see docs/luks.md.

Fail-safe rules, enforced here and not left to callers:
- Secrets never appear in argv: every key goes to cryptsetup on stdin (``--key-file -`` with an exact
  ``--keyfile-size``), so nothing is written to disk and nothing is left behind even after SIGKILL.
- ``open --test-passphrase`` runs with token unlocking disabled: otherwise a LUKS2 token (TPM2, a
  passphrase in the kernel keyring) unlocks the header and *any* key file "works" (proven in the tests).
- A key is added, then verified on its own slot, and only then is an old slot removed, unlocking with a
  key that opens a *different* slot; so after any interruption at least one known key opens the disk.
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

# Test hook: called with "added", "verified", "removed" at the steps of rotate(). The interruption tests
# set it in a child process to SIGKILL itself; it is None in production.
_hook = None


class LuksError(Exception):
    """One-line message: the device, what went wrong, what to do."""


def _step(name):
    if _hook is not None:
        _hook(name)


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


# -------------------------------------------------------------------------------------------- keys

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


def first_opening_key(device, dump, keys, exclude=()):
    """The first of keys that opens some slot of device (not in exclude), or None (one PBKDF run per slot and
    key tried)."""
    return next((k for k in keys
                 if k and _opening_slot(device, dump, _check_key(device, k), exclude=exclude) is not None), None)


def _opening_slot(device, dump, key, exclude=(), prefer=None):
    """A slot (not in exclude) that key opens, or None. One PBKDF run per slot tried."""
    slots = sorted(int(s) for s in dump.get("keyslots", {}) if int(s) not in set(exclude))
    if prefer is not None and prefer in slots:
        slots.remove(prefer)
        slots.insert(0, prefer)
    return next((s for s in slots if test_key(device, key, s)), None)


def _require_luks2(dump, device, action):
    if dump.get("version") != 2:
        raise LuksError("%s: LUKS%s header, %s needs LUKS2 (convert offline: cryptsetup convert --type luks2)"
                        % (device, dump.get("version"), action))


def add_key(device, unlock_key, new_key, slot=None, pbkdf_args=()):
    """Add new_key to a free slot (or slot), unlocking with any slot unlock_key opens; verify; return it.

    Idempotent: if new_key already opens a slot, that slot is returned and nothing is written.
    """
    unlock_key = _check_key(device, unlock_key, "unlock key")
    new_key = _check_key(device, new_key, "new key")
    dump = luks_dump(device)
    _require_luks2(dump, device, "adding a key")
    have = _opening_slot(device, dump, new_key)
    if have is not None:
        return have
    if _opening_slot(device, dump, unlock_key) is None:
        raise LuksError("%s: the unlock key opens no keyslot; nothing changed (use a key that works, "
                        "e.g. the escrowed recovery key)" % device)
    return _add_verified(device, dump, unlock_key, new_key, slot, pbkdf_args)


def _add_verified(device, dump, unlock_key, new_key, slot, pbkdf_args):
    if slot is None:
        slot = free_slot(dump)
        if slot is None:
            raise LuksError("%s: no free keyslot (all %d used); remove an obsolete slot first"
                            % (device, LUKS2_SLOTS))
    elif not 0 <= int(slot) < LUKS2_SLOTS or str(int(slot)) in dump.get("keyslots", {}):
        raise LuksError("%s: keyslot %s is not free; choose another or let deskguard pick one" % (device, slot))
    slot = int(slot)
    args = ["luksAddKey", "-q", *pbkdf_args, "--key-slot", str(slot),
            "--key-file", "-", "--keyfile-size", str(len(unlock_key)),
            "--new-keyfile-size", str(len(new_key)), device, "-"]
    rc, _, err = _run(args, unlock_key + new_key)
    if rc == 2:
        raise LuksError("%s: the unlock key opens no keyslot; nothing changed (use a key that works, "
                        "e.g. the escrowed recovery key)" % device)
    if rc != 0:
        raise LuksError("%s: luksAddKey into slot %d failed (rc %d): %s" % (device, slot, rc, _last_line(err)))
    _step("added")
    if not test_key(device, new_key, slot):
        raise LuksError("%s: the new key does not open slot %d after luksAddKey; the old keys are untouched, "
                        "remove slot %d and retry" % (device, slot, slot))
    _step("verified")
    return slot


def remove_slot(device, slot, remaining_key, _remaining_slot=None):
    """Kill slot, only if remaining_key opens the device through a different slot; False if already gone."""
    remaining_key = _check_key(device, remaining_key, "remaining key")
    slot = int(slot)
    dump = luks_dump(device)
    if str(slot) not in dump.get("keyslots", {}):
        return False
    keep = _opening_slot(device, dump, remaining_key, exclude=(slot,), prefer=_remaining_slot)
    if keep is None:
        raise LuksError("%s: refusing to remove keyslot %d: the remaining key opens no other slot, the disk "
                        "could be left without a key you hold" % (device, slot))
    rc, _, err = _run(["luksKillSlot", "-q", "--key-file", "-", "--keyfile-size", str(len(remaining_key)),
                       device, str(slot)], remaining_key)
    if rc != 0:
        raise LuksError("%s: luksKillSlot %d failed (rc %d): %s" % (device, slot, rc, _last_line(err)))
    if str(slot) in luks_dump(device).get("keyslots", {}) or not test_key(device, remaining_key, keep):
        raise LuksError("%s: after removing keyslot %d the state is unexpected; check with cryptsetup luksDump "
                        "and the escrowed key before rebooting" % (device, slot))
    return True


def retire_passphrase(device, passphrase, remaining_key, boot_keys=(), check_mode=False):
    """Remove the keyslots the installer passphrase opens, once the escrowed key is proven to open another slot
    and the disk still unlocks at boot without the passphrase (a clevis TPM2 binding, or a crypttab key file
    that opens another slot). Returns {changed, retired: [slots], fingerprints: [...], kept: why or None}.

    The passphrase is the one the admin gave once (`--luks-passphrase-file`): its slots are found by trying it,
    so the kit needs no record of which slot the installer used. Without a way to unlock at boot the slots are
    kept (removing them would leave the operator only the 48-digit recovery key at every start)."""
    passphrase = _check_key(device, passphrase, "installer passphrase")
    remaining_key = _check_key(device, remaining_key, "remaining key")
    dump = luks_dump(device)
    _require_luks2(dump, device, "retire the installer passphrase")
    mine = [int(s) for s in sorted(dump.get("keyslots", {}), key=int) if test_key(device, passphrase, int(s))]
    if not mine:
        return dict(changed=False, retired=[], fingerprints=[], kept=None)
    keep = _opening_slot(device, dump, remaining_key, exclude=mine)
    if keep is None:
        raise LuksError("%s: the escrowed key opens no keyslot but the installer passphrase's; the passphrase "
                        "is kept and nothing removed" % device)
    tpm = [k["slot"] for k in device_info(dump)["keyslots"]
           if (k.get("clevis") or {}).get("pin") == "tpm2" and k["slot"] not in mine]
    keyfile = first_opening_key(device, dump, [k for k in boot_keys if k], exclude=mine)
    if not tpm and keyfile is None:
        return dict(changed=False, retired=[], fingerprints=[],
                    kept="it is how this laptop unlocks at boot (no TPM binding, no crypttab key file opens "
                         "another keyslot); bind the disk to the TPM (disk_encryption_linux_unlock: tpm2) to "
                         "retire it")
    prints = [slot_fingerprint(dump, slot) for slot in mine]
    if check_mode:
        return dict(changed=True, retired=mine, fingerprints=prints, kept=None)
    for slot in mine:
        remove_slot(device, slot, remaining_key, _remaining_slot=keep)
    after = luks_dump(device)
    if any(test_key(device, passphrase, int(s)) for s in after.get("keyslots", {})) or \
            not test_key(device, remaining_key, keep):
        raise LuksError("%s: after removing the installer passphrase the state is unexpected; check with "
                        "cryptsetup luksDump and the escrowed key before rebooting" % device)
    return dict(changed=True, retired=mine, fingerprints=prints, kept=None)


def rotate(device, unlock_key, new_key, old_slot=None, pbkdf_args=()):
    """Replace the slot unlock_key opens (or old_slot) by new_key: add, verify, then remove. Returns the
    new slot. Resumable: re-running after an interruption at any step finishes the job."""
    unlock_key = _check_key(device, unlock_key, "unlock key")
    new_key = _check_key(device, new_key, "new key")
    if unlock_key == new_key:
        raise LuksError("%s: the new key equals the unlock key; nothing to rotate" % device)
    dump = luks_dump(device)
    _require_luks2(dump, device, "rotating a key")
    new_slot = _opening_slot(device, dump, new_key)
    if old_slot is None:
        old_slot = _opening_slot(device, dump, unlock_key, exclude=() if new_slot is None else (new_slot,))
        if old_slot is None:
            if new_slot is not None:
                return new_slot              # an earlier run already removed the old slot
            raise LuksError("%s: the unlock key opens no keyslot; nothing changed (use a key that works, "
                            "e.g. the escrowed recovery key)" % device)
    old_slot = int(old_slot)
    if new_slot is None:
        new_slot = _add_verified(device, dump, unlock_key, new_key, None, pbkdf_args)
    if new_slot == old_slot:
        raise LuksError("%s: the new key lives in slot %d, the one to remove; nothing removed" % (device, old_slot))
    remove_slot(device, old_slot, new_key, _remaining_slot=new_slot)
    _step("removed")
    return new_slot


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


# ------------------------------------------------------------------------------------ module actions

FAST_KDF = ("--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000")


def _read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _expect(device, luks_uuid):
    dump = luks_dump(device)
    if luks_uuid and dump.get("uuid") != luks_uuid:
        raise LuksError("%s: LUKS UUID is now %s, expected %s (the disk changed); nothing done"
                        % (device, dump.get("uuid"), luks_uuid))
    return dump


def _mounted(device, lsblk_json=None):
    """Mount points (and [SWAP]) on device or anything stacked on it."""
    if lsblk_json is None:
        proc = subprocess.run(["lsblk", "--json", "-o", "NAME,PATH,MOUNTPOINTS", device], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=_C_ENV)
        if proc.returncode != 0:
            return []   # not a block device lsblk knows (an image file): nothing can be mounted from it
        lsblk_json = proc.stdout.decode()
    data = json.loads(lsblk_json) if isinstance(lsblk_json, (str, bytes)) else lsblk_json
    found = []

    def walk(node):
        found.extend(_mounts(node))
        for child in node.get("children") or ():
            walk(child)

    for node in data.get("blockdevices", []):
        walk(node)
    return found


def _append_crypttab(etc, line):
    path = os.path.join(etc, "crypttab")
    old = (_read(path) or b"").decode()
    if line in old.splitlines():
        return
    tmp = path + ".deskguard-tmp"
    with open(tmp, "w") as fh:
        fh.write(old + ("" if old.endswith("\n") or not old else "\n") + line + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def candidate(device):
    """What the escrow needs to know about a volume the policy allows to encrypt: {device, exists,
    luks_uuid (when it is LUKS already), mounts}."""
    if not os.path.exists(device):
        return {"device": device, "exists": False, "luks_uuid": None, "mounts": []}
    uuid = None
    if _run(["isLuks", device])[0] == 0:
        rc, out, _ = _run(["luksUUID", device])
        uuid = out.strip() if rc == 0 else None
    return {"device": device, "exists": True, "luks_uuid": uuid, "mounts": _mounted(device)}


def format_volume(device, luks_uuid, new_key, name, check_mode=False, etc="/etc"):
    """Encrypt an unmounted data volume (erasing it): LUKS2 with luks_uuid, new_key (the escrowed recovery key)
    in slot 0, verified; a random key file in slot 1 and a crypttab line so the laptop opens it at boot.
    A volume that is LUKS already is left alone; a mounted one is refused."""
    if not os.path.exists(device):
        raise LuksError("%s: no such device (check disk_encryption_format_devices)" % device)
    if _run(["isLuks", device])[0] == 0:
        return dict(changed=False, already=True, luks_uuid=luks_dump(device).get("uuid"))
    mounts = _mounted(device)
    if mounts:
        raise LuksError("%s: mounted at %s; unmount it first (encrypting erases the volume); nothing changed"
                        % (device, ", ".join(mounts)))
    if check_mode:
        return dict(changed=True, slot=0)
    rc, _, err = _run(["luksFormat", "-q", "--type", "luks2", "--cipher", "aes-xts-plain64", "--key-size", "512",
                       "--uuid", luks_uuid, "--key-slot", "0", *FAST_KDF, "--key-file", "-",
                       "--keyfile-size", str(len(new_key)), device], new_key)
    if rc != 0:
        raise LuksError("%s: luksFormat failed (rc %d): %s" % (device, rc, _last_line(err)))
    if not test_key(device, new_key, 0):
        raise LuksError("%s: the recovery key does not open the new LUKS header; reformat it" % device)
    fingerprint = slot_fingerprint(luks_dump(device), 0)
    keyfile = os.path.join(etc, "cryptsetup-keys.d", name + ".key")
    os.makedirs(os.path.dirname(keyfile), mode=0o700, exist_ok=True)
    fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
    with os.fdopen(fd, "wb") as fh:
        fh.write(os.urandom(64))
    add_key(device, new_key, _read(keyfile), slot=1,
            pbkdf_args=("--pbkdf", "argon2id", "--pbkdf-memory", "65536", "--iter-time", "500"))
    _append_crypttab(etc, "%s UUID=%s %s luks,discard,nofail" % (name, luks_uuid, keyfile.replace(etc, "/etc", 1)))
    return dict(changed=True, slot=0, fingerprint=fingerprint, luks_uuid=luks_uuid, mapping=name)


def act(p, check_mode=False, crypttab_text=None, lsblk_json=None, etc="/etc"):
    """What the deskguard_luks module does for params p (its argument spec); raises LuksError.

    crypttab_text, lsblk_json and etc replace /etc/crypttab, the lsblk call and /etc (tests)."""
    if crypttab_text is None:
        crypttab_text = (_read(os.path.join(etc, "crypttab")) or b"").decode(errors="replace")
    entries = crypttab_keyfiles(crypttab_text)
    state = p.get("state") or "inventory"
    if state == "inventory":
        result = inventory(lsblk_json, approved_ciphers=tuple(p.get("approved_ciphers") or ("aes-xts-plain64",)),
                           min_key_bits=p.get("min_key_bits") or 512, exempt=tuple(p.get("exempt_slots") or ()))
        for dev in result["devices"]:
            dev["keyfile"] = any(os.path.isfile(f) for f in keyfiles_for(dev["device"], dev["luks_uuid"], entries))
        result["format_candidates"] = [candidate(path) for path in p.get("format_devices") or ()]
        return dict(changed=False, **result)
    if state == "format":
        return format_volume(p["device"], p["luks_uuid"], p["new_key"].encode(), p["name"],
                             check_mode=check_mode, etc=etc)
    if state == "retire":
        _expect(p["device"], p.get("luks_uuid"))
        boot_keys = [_read(f) for f in keyfiles_for(p["device"], p.get("luks_uuid"), entries)]
        return retire_passphrase(p["device"], p["unlock_key"].encode(), p["remaining_key"].encode(), boot_keys,
                                 check_mode=check_mode)
    device, slot = p["device"], p["slot"]
    dump = _expect(device, p.get("luks_uuid"))
    if state == "test":
        fingerprint = slot_fingerprint(dump, slot)
        opens = fingerprint is not None and test_key(device, p["key"].encode(), slot)
        return dict(changed=False, opens=opens, fingerprint=fingerprint)
    if state == "remove":
        current = slot_fingerprint(dump, slot)
        if current is None:
            return dict(changed=False)
        if current != p["fingerprint"]:
            raise LuksError("%s: keyslot %d changed since it was escrowed; it is left in place (check who "
                            "changed it)" % (device, slot))
        if check_mode:
            return dict(changed=True)
        remaining = p["remaining_key"].encode() if p.get("remaining_key") else None
        if remaining is None:  # a headless laptop: its crypttab key file is the key that stays
            others = [k for k in (_read(f) for f in keyfiles_for(device, p.get("luks_uuid"), entries)) if k]
            remaining = first_opening_key(device, dump, others, exclude=(slot,))
            if remaining is None:
                raise LuksError("%s: no key that stays to prove the disk still opens after keyslot %d goes (no "
                                "crypttab key file): give the escrow officer's key; nothing removed" % (device, slot))
        return dict(changed=remove_slot(device, slot, remaining))
    if state != "enroll":
        raise LuksError("unknown state %r" % state)
    new_key = p["new_key"].encode()
    have = _opening_slot(device, dump, new_key)
    if have is not None:
        return dict(changed=False, slot=have, fingerprint=slot_fingerprint(dump, have))
    if check_mode:
        return dict(changed=True, slot=slot)
    candidates = [p["unlock_key"].encode()] if p.get("unlock_key") else []
    candidates += [k for k in (_read(f) for f in keyfiles_for(device, p.get("luks_uuid"), entries)) if k]
    unlock = first_opening_key(device, dump, candidates)
    if unlock is None:
        raise LuksError("%s: no key to unlock it (%s); nothing changed" % (
            device, "the given unlock key opens no keyslot" if p.get("unlock_key")
            else "no crypttab key file: give the installer passphrase once, or the escrowed key"))
    slot = add_key(device, unlock, new_key, slot=slot, pbkdf_args=FAST_KDF if p.get("fast_kdf", True) else ())
    return dict(changed=True, slot=slot, fingerprint=slot_fingerprint(luks_dump(device), slot))
