# -*- coding: utf-8 -*-
"""Target-side TPM binding of a LUKS root (ENC-004): clevis's TPM2 pin, and the initramfs key file it replaces.

Why clevis (and not systemd-cryptenroll) is in docs/disk-encryption.md: Debian's initramfs-tools opens the
root with cryptsetup's own scripts, which know no LUKS2 token; clevis-initramfs answers their passphrase
prompt with the key the TPM releases, and when the TPM refuses, the prompt stays for the escrowed recovery key.

Fail-safe rules (on top of deskguard_luks's):
- A binding is proven before anything else changes: the key `clevis luks pass` gets back from the TPM must
  open the new keyslot (token unlocking disabled for the test).
- The key file goes last: crypttab and the initramfs settings first, the initramfs rebuilt (restored on
  failure), then its keyslot is removed only while the TPM's key opens another slot, then the file itself.
- Unlock keys reach clevis on stdin (`-k -`) or as the key file's own path; never in argv.
The TPM is /dev/tpmrm0, or what TPM2TOOLS_TCTI names (the unit tests' swtpm). Reading the bindings and key files
(what the nightly run collects) is deskguard_tpm_inspect, imported here.
"""

from __future__ import annotations

import json
import os

try:  # inside a module (Ansiballz) the kit's module_utils live under ansible.module_utils
    from ansible.module_utils import deskguard_luks as dl
    from ansible.module_utils.deskguard_tpm_inspect import (  # noqa: F401  (callers use them as this module's)
        _ENV, CLEVIS, CONF_HOOK, _PATTERN, _read_text, _run, add_facts, bindings, crypttab_keyfiles_of, facts,
        keyfile_facts, keyfile_pattern, tpm_key, tpm_present, unseals)
except ImportError:  # unit tests: plain modules on sys.path
    import deskguard_luks as dl
    from deskguard_tpm_inspect import (  # noqa: F401
        _ENV, CLEVIS, CONF_HOOK, _PATTERN, _read_text, _run, add_facts, bindings, crypttab_keyfiles_of, facts,
        keyfile_facts, keyfile_pattern, tpm_key, tpm_present, unseals)

UPDATE_INITRAMFS = ("update-initramfs", "-u", "-k", "all")
DEFAULT_PCRS = (0, 2, 7)


# ----------------------------------------------------------------------------------- initramfs key file

def _write_text(path, text):
    tmp = path + ".deskguard-tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)

def _crypttab_without_keyfiles(text, keyfiles):
    """crypttab text with the key field of lines naming one of keyfiles set to none (comments kept)."""
    out = []
    for line in text.splitlines(True):
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 3 and fields[2] in keyfiles:
            fields[2] = "none"
            line = " ".join(fields) + "\n"
        out.append(line)
    return "".join(out)


def _hook_without_pattern(text):
    return "".join(("#" + line) if _PATTERN.match(line) else line for line in text.splitlines(True))


def drop_keyfile(device, luks_uuid, tpm_slot, etc="/etc", check_mode=False):
    """Take the key file out of the boot path once the TPM binding in tpm_slot is proven: crypttab's key field
    -> none, KEYFILE_PATTERN off, initramfs rebuilt (both files restored if that fails), the key file's keyslot
    removed (only while the TPM's key opens the binding's slot), the file overwritten and removed.
    Returns what was done, [] when nothing was left to do."""
    crypttab_path, hook_path = os.path.join(etc, "crypttab"), os.path.join(etc, CONF_HOOK)
    crypttab = _read_text(crypttab_path) or ""
    hook = _read_text(hook_path)
    files = crypttab_keyfiles_of(device, luks_uuid, crypttab)
    pattern = keyfile_pattern(etc)
    done = []
    if not files and not pattern:
        return done
    if check_mode:
        return ["would take the key file out of the initramfs"]
    tpm = tpm_key(device, tpm_slot)
    if tpm is None or not dl.test_key(device, tpm, tpm_slot):
        raise dl.LuksError("%s: the TPM does not release the key of keyslot %d; the key file stays (nothing "
                           "changed)" % (device, tpm_slot))
    new_crypttab = _crypttab_without_keyfiles(crypttab, files)
    new_hook = _hook_without_pattern(hook) if hook is not None else None
    if new_crypttab != crypttab:
        _write_text(crypttab_path, new_crypttab)
        done.append("crypttab: key field none")
    if new_hook is not None and new_hook != hook:
        _write_text(hook_path, new_hook)
        done.append("KEYFILE_PATTERN off")
    rc, _, err = _run(UPDATE_INITRAMFS)
    if rc != 0:
        _write_text(crypttab_path, crypttab)
        if hook is not None:
            _write_text(hook_path, hook)
        raise dl.LuksError("%s: %s failed (rc %d): %s; crypttab and conf-hook restored, the key file stays"
                           % (device, " ".join(UPDATE_INITRAMFS), rc, dl._last_line(err.decode(errors="replace"))))
    done.append("initramfs rebuilt")
    for path in files:
        key = _read_bytes(path)
        if key:
            dump = dl.luks_dump(device)
            slot = dl._opening_slot(device, dump, key, exclude=(tpm_slot,))
            if slot is not None and dl.remove_slot(device, slot, tpm, _remaining_slot=tpm_slot):
                done.append("key file keyslot %d removed" % slot)
        if os.path.exists(path):
            _shred(path)
            done.append("key file removed")
    return done


def _read_bytes(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _shred(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.write(b"\0" * size)
        fh.flush()
        os.fsync(fh.fileno())
    os.unlink(path)


# -------------------------------------------------------------------------------------------------- bind

def _config(pcr_ids, pcr_bank):
    return json.dumps({"pcr_bank": pcr_bank, "pcr_ids": ",".join(str(int(i)) for i in sorted(pcr_ids))},
                      separators=(",", ":"))


def _unlock_candidates(device, luks_uuid, unlock_key, crypttab_text, stale):
    """(bytes key or None, key file path or None) pairs to unlock with, in order: the key the controller gave,
    the crypttab key files, the key a stale binding still gets from the TPM."""
    out = []
    if unlock_key:
        out.append((unlock_key, None))
    for path in crypttab_keyfiles_of(device, luks_uuid, crypttab_text):
        if os.path.isfile(path):
            out.append((_read_bytes(path), path))
    for entry in stale:
        if entry.get("slot") is not None:
            key = tpm_key(device, entry["slot"])
            if key:
                out.append((key, None))
    return out


def bind(device, luks_uuid, pcr_ids=DEFAULT_PCRS, pcr_bank="sha256", unlock_key=None, drop=True, etc="/etc",
         crypttab_text=None, check_mode=False):
    """Bind device to this machine's TPM on pcr_ids (clevis tpm2 pin), prove it, remove stale clevis TPM2
    bindings, then (drop) take the key file out of the initramfs. Idempotent: a binding on exactly pcr_ids that
    the TPM unseals now is kept. Returns {changed, slot, token, done: [what was done]}."""
    pcr_ids = sorted(int(i) for i in pcr_ids)
    if not tpm_present():
        raise dl.LuksError("%s: no TPM 2.0 on this laptop (/dev/tpmrm0 missing): turn the TPM on in the firmware, "
                           "or set disk_encryption_linux_unlock: passphrase; nothing changed" % device)
    if crypttab_text is None:
        crypttab_text = _read_text(os.path.join(etc, "crypttab")) or ""
    dump = dl._expect(device, luks_uuid)
    dl._require_luks2(dump, device, "binding to the TPM")
    tpm2 = [b for b in bindings(dump) if b.get("pin") == "tpm2" and b["slot"] is not None]
    good = next((b for b in tpm2 if b.get("pcr_ids") == pcr_ids and b.get("pcr_bank") == pcr_bank
                 and unseals(device, b["slot"])), None)
    done = []
    if good is None:
        if check_mode:
            return dict(changed=True, done=["would bind to the TPM on PCRs %s" % ",".join(map(str, pcr_ids))])
        stale = tpm2
        unlock = next(((k, f) for k, f in _unlock_candidates(device, luks_uuid, unlock_key, crypttab_text, stale)
                       if k and dl._opening_slot(device, dump, k) is not None), None)
        if unlock is None:
            raise dl.LuksError("%s: no key to unlock it for the TPM binding (no crypttab key file, the TPM releases "
                               "no old binding's key): run with the escrow officer's key; nothing changed" % device)
        key, path = unlock
        before = {b["token"] for b in bindings(dump)}
        argv = [CLEVIS, "luks", "bind", "-y", "-d", device, "-k", path or "-", "tpm2", _config(pcr_ids, pcr_bank)]
        rc, _, err = _run(argv, b"" if path else key)
        after = dl.luks_dump(device)
        new = [b for b in bindings(after) if b["token"] not in before and b.get("pin") == "tpm2"]
        if rc != 0 or len(new) != 1 or new[0]["slot"] is None:
            raise dl.LuksError("%s: clevis luks bind failed (rc %d): %s; the old keys are untouched"
                               % (device, rc, dl._last_line(err.decode(errors="replace"))))
        good = new[0]
        if not unseals(device, good["slot"]):
            raise dl.LuksError("%s: the new TPM binding (keyslot %d) does not give back a key that opens it; remove "
                               "it (clevis luks unbind -d %s -s %d) and retry" % (device, good["slot"], device,
                                                                                   good["slot"]))
        done.append("bound to the TPM on PCRs %s (keyslot %d)" % (",".join(map(str, pcr_ids)), good["slot"]))
        tpm = tpm_key(device, good["slot"])
        for old in stale:
            done += unbind_one(device, old, tpm, keep_slot=good["slot"])
    if drop:
        done += drop_keyfile(device, luks_uuid, good["slot"], etc=etc, check_mode=check_mode)
    return dict(changed=bool(done), slot=good["slot"], token=good["token"], done=done)


def unbind_one(device, entry, remaining_key, keep_slot=None):
    """Remove one clevis binding: its keyslot (only while remaining_key opens another slot), then its token."""
    done = []
    if entry.get("slot") is not None and dl.remove_slot(device, entry["slot"], remaining_key,
                                                        _remaining_slot=keep_slot):
        done.append("old TPM binding's keyslot %d removed" % entry["slot"])
    if str(entry["token"]) in dl.luks_dump(device).get("tokens", {}):
        rc, _, err = dl._run(["token", "remove", "--token-id", str(entry["token"]), device])
        if rc != 0:
            raise dl.LuksError("%s: removing token %d failed: %s" % (device, entry["token"], dl._last_line(err)))
        done.append("token %d removed" % entry["token"])
    return done


# ------------------------------------------------------------------------------------------- the module
def act(p, check_mode=False, crypttab_text=None, lsblk_json=None, etc="/etc"):
    """deskguard_luks's states, plus state=bind (this file); inventory carries ENC-004's facts."""
    state = p.get("state") or "inventory"
    if state == "bind":
        return bind(p["device"], p.get("luks_uuid"), p.get("pcr_ids") or DEFAULT_PCRS, p.get("pcr_bank") or "sha256",
                    unlock_key=p["unlock_key"].encode() if p.get("unlock_key") else None,
                    drop=p.get("drop_keyfile", True), etc=etc, crypttab_text=crypttab_text, check_mode=check_mode)
    given = {"enroll": "unlock_key", "remove": "remaining_key"}.get(state)
    if given and not p.get(given) and not check_mode:
        # No key file any more (the TPM replaced it): the key this machine's TPM releases unlocks instead.
        key = _bound_key(p["device"], exclude=(p.get("slot"),) if state == "remove" else ())
        if key is not None:
            p = dict(p, **{given: key.decode()})
    result = dl.act(p, check_mode=check_mode, crypttab_text=crypttab_text, lsblk_json=lsblk_json, etc=etc)
    if state == "inventory":
        add_facts(result, etc, crypttab_text)
    return result


def _bound_key(device, exclude=()):
    """The key a TPM2 binding of device releases now (not one in exclude), or None."""
    if not tpm_present() or not os.path.exists(device):
        return None
    try:
        found = bindings(dl.luks_dump(device))
    except dl.LuksError:
        return None
    for entry in found:
        if entry.get("pin") == "tpm2" and entry["slot"] is not None and entry["slot"] not in exclude:
            key = tpm_key(device, entry["slot"])
            if key is not None and dl.test_key(device, key, entry["slot"]):
                return key
    return None
