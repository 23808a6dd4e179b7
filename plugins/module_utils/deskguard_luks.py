# -*- coding: utf-8 -*-
"""Target-side LUKS logic for the disk_encryption role: inspect, discover, add/verify/remove/rotate keys.

The reading half (inspect, discover, test a key, the inventory) is deskguard_luks_inspect, imported here: the
nightly posture collector imports only that half.

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

import json
import os
import subprocess

try:  # inside a module (Ansiballz) the kit's module_utils live under ansible.module_utils
    from ansible.module_utils.deskguard_luks_inspect import (  # noqa: F401  (callers use them as deskguard_luks's)
        _C_ENV, _NO_TOKENS, CRYPTSETUP, LUKS1_SLOTS, LUKS2_SLOTS, LuksError, _check_key, _last_line, _mounts, _run,
        classify, clevis_pin, crypttab_keyfiles, device_info, discover, findings, free_slot, inventory,
        keyfiles_for, luks_dump, slot_fingerprint, test_key)
except ImportError:  # unit tests and the agent import the kit's module_utils as plain modules
    from deskguard_luks_inspect import (  # noqa: F401
        _C_ENV, _NO_TOKENS, CRYPTSETUP, LUKS1_SLOTS, LUKS2_SLOTS, LuksError, _check_key, _last_line, _mounts, _run,
        classify, clevis_pin, crypttab_keyfiles, device_info, discover, findings, free_slot, inventory,
        keyfiles_for, luks_dump, slot_fingerprint, test_key)

# Test hook: called with "added", "verified", "removed" at the steps of rotate(). The interruption tests
# set it in a child process to SIGKILL itself; it is None in production.
_hook = None


def _step(name):
    if _hook is not None:
        _hook(name)


# -------------------------------------------------------------------------------------------- keys

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
