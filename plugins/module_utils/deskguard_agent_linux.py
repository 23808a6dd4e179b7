# -*- coding: utf-8 -*-
"""What the agent does to a Linux laptop once an order is verified and acknowledged: crypto-erase or lock.

Planning (which volume, which keyslots) is separate from acting, so the plan can be checked in full before
anything changes, and unit-tested on real cryptsetup image files (header operations need no device-mapper).

wipe: lock interactive accounts, erase every LUKS device's keyslots (`cryptsetup erase`) and remove every
      LUKS2 token (`erase` leaves them: a clevis TPM token's JWE would stay), prove from the JSON
      metadata that no keyslot and no token remains, discard the header area where the device supports it, power off (which
      ends every session).
lock: keep only the escrowed keyslots the order names (by fingerprint), remove every other one (the TPM
      binding's included) and every token, delete the volume's crypttab key files, reboot: the laptop boots
      only with the recovery key IT holds; re-onboarding (`unlock`) binds the TPM again. If a
      kept fingerprint is missing, nothing is removed at all (a lock must never leave a disk without the
      escrowed key).
"""

from __future__ import annotations

import os
import pwd
import subprocess

try:  # deployed to the laptop and unit tests: plain modules; inside Ansible: ansible.module_utils
    from ansible.module_utils import deskguard_luks, deskguard_tpm_bind
except ImportError:
    import deskguard_luks
    import deskguard_tpm_bind

_C_ENV = dict(os.environ, LC_ALL="C", LANG="C")
NOLOGIN_SHELLS = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false", "")


class ActionRefused(Exception):
    """The order cannot be carried out safely; `reason` is one of the protocol's refusal reasons."""

    def __init__(self, reason, detail):
        super().__init__(detail)
        self.reason = reason


def _run(argv, timeout=120):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_C_ENV, timeout=timeout)
    return proc.returncode, proc.stdout.decode(errors="replace").strip()


def local_volumes(inventory=None):
    """{luks uuid: device path} of the LUKS devices behind this laptop's mounted filesystems and swap."""
    inv = inventory if inventory is not None else deskguard_luks.inventory()
    return {d["luks_uuid"]: d["device"] for d in inv.get("devices", []) if d.get("luks_uuid")}


def fingerprints(dump):
    """{fingerprint: slot} of every keyslot in a luks_dump()."""
    return {deskguard_luks.slot_fingerprint(dump, int(s)): int(s) for s in dump.get("keyslots", {})}


# ------------------------------------------------------------------------------------------------ plans

def plan_wipe(volumes, order_volumes):
    """[(uuid, device)] to erase: every LUKS volume of the laptop (not only those the order names: the
    order names them to bind itself to this disk; a wipe leaves nothing readable)."""
    missing = [u for u in order_volumes if u not in volumes]
    if missing or not order_volumes:
        raise ActionRefused("foreign_volumes", "volumes not on this laptop: %s" % ", ".join(missing or ["(none)"]))
    return sorted(volumes.items(), key=lambda kv: kv[1])


def plan_lock(volumes, keep_keyslots, dump=None):
    """[(uuid, device, [slots to remove], [slots kept])] or ActionRefused before anything changes.

    Every volume named in keep_keyslots must be on the laptop and carry every kept fingerprint; at least one
    slot is kept per volume."""
    dump = dump or deskguard_luks.luks_dump
    if not keep_keyslots:
        raise ActionRefused("malformed", "a lock names no escrowed keyslot to keep")
    plan = []
    for uuid in sorted(keep_keyslots):
        keep = keep_keyslots[uuid]
        if uuid not in volumes:
            raise ActionRefused("foreign_volumes", "volume %s is not on this laptop" % uuid)
        if not keep:
            raise ActionRefused("foreign_volumes", "no escrowed keyslot named for volume %s" % uuid)
        have = fingerprints(dump(volumes[uuid]))
        missing = [fp for fp in keep if fp not in have]
        if missing:
            raise ActionRefused("foreign_volumes", "volume %s no longer has the escrowed keyslot(s) %s: nothing "
                                "removed" % (uuid, ", ".join(fp[:12] for fp in missing)))
        kept = sorted(have[fp] for fp in keep)
        plan.append((uuid, volumes[uuid], sorted(s for fp, s in have.items() if fp not in keep), kept))
    return plan


# ------------------------------------------------------------------------------------------------- acts

def interactive_users():
    """Accounts a person logs in with (uid >= 1000, a real shell), root excluded."""
    return sorted(p.pw_name for p in pwd.getpwall()
                  if p.pw_uid >= 1000 and p.pw_name != "nobody" and p.pw_shell not in NOLOGIN_SHELLS)


def lock_out_users(users=None, run=_run):
    """Lock the passwords and expire the accounts of interactive users: no new login, by password or by key.
    Sessions are not killed here: one of them may be the management connection carrying this very order (and
    the agent with it); the power-off that follows the erase ends them all. Best effort per user (a wipe does
    not stop because one account is odd); returns [(user, ok)]."""
    done = []
    for user in interactive_users() if users is None else users:
        done.append((user, run(["usermod", "--lock", "--expiredate", "1", user])[0] == 0))
    return done


def erase(device, run=_run, dump=None):
    """cryptsetup erase, then prove from the JSON metadata that no keyslot remains. Returns the slot count
    found afterwards (0), or raises deskguard_luks.LuksError."""
    dump = dump or deskguard_luks.luks_dump
    rc, out = run(["cryptsetup", "erase", "--batch-mode", device])
    left = dump(device).get("keyslots", {})
    if rc != 0 or left:
        raise deskguard_luks.LuksError("%s: cryptsetup erase rc %d, keyslots left %s: %s"
                                       % (device, rc, sorted(left), out[-300:]))
    return 0


def discard_header(device, dump_before, run=_run):
    """Discard the header and keyslot area (the data segment's offset) where the device supports it, so an
    SSD's remapped blocks do not keep the old keyslots. Returns True, or False when unsupported."""
    segments = dump_before.get("segments") or {}
    try:
        offset = min(int(s["offset"]) for s in segments.values())
    except (KeyError, ValueError, TypeError):
        return False
    if offset <= 0 or not device.startswith("/dev/"):
        return False
    rc, _ = run(["blkdiscard", "--force", "--offset", "0", "--length", str(offset), device])
    return rc == 0


def kill_slots(device, slots, run=_run):
    """Remove keyslots in batch mode (no key needed: the kept escrowed slot stays; checked afterwards)."""
    for slot in slots:
        rc, out = run(["cryptsetup", "luksKillSlot", "--batch-mode", device, str(slot)])
        if rc != 0:
            raise deskguard_luks.LuksError("%s: luksKillSlot %d failed (rc %d): %s" % (device, slot, rc, out[-300:]))


def remove_tokens(device, run=_run, dump=None):
    """Remove every LUKS2 token (clevis TPM bindings, keyring tokens) and prove none is left; returns the ids."""
    dump = dump or deskguard_luks.luks_dump
    ids = sorted(dump(device).get("tokens", {}), key=int)
    for tid in ids:
        rc, out = run(["cryptsetup", "token", "remove", "--token-id", str(tid), device])
        if rc != 0:
            raise deskguard_luks.LuksError("%s: removing token %s failed (rc %d): %s" % (device, tid, rc, out[-300:]))
    left = dump(device).get("tokens", {})
    if left:
        raise deskguard_luks.LuksError("%s: tokens left after removing them: %s" % (device, sorted(left)))
    return [int(t) for t in ids]


def remove_keyfiles(device, uuid, etc="/etc"):
    """Delete the key files /etc/crypttab names for this volume (their keyslots are already gone); returns them."""
    crypttab = deskguard_tpm_bind._read_text(os.path.join(etc, "crypttab")) or ""
    gone = []
    for path in deskguard_tpm_bind.crypttab_keyfiles_of(device, uuid, crypttab):
        if os.path.isfile(path):
            deskguard_tpm_bind._shred(path)
            gone.append(path)
    return gone


def wipe(plan, run=_run, dump=None, users=None):
    """Carry out plan_wipe(); returns a report. Every device is attempted even if one fails."""
    dump = dump or deskguard_luks.luks_dump
    report = {"users_locked": lock_out_users(users, run=run), "volumes": []}
    for uuid, device in plan:
        entry = {"uuid": uuid, "device": device}
        try:
            before = dump(device)
            entry["keyslots_left"] = erase(device, run=run, dump=dump)
            entry["tokens_removed"] = remove_tokens(device, run=run, dump=dump)
            entry["discarded"] = discard_header(device, before, run=run)
        except (deskguard_luks.LuksError, OSError, subprocess.SubprocessError) as exc:
            entry["error"] = str(exc)
        report["volumes"].append(entry)
    report["erased"] = all("error" not in v for v in report["volumes"])
    return report


def lock(plan, run=_run, dump=None, etc="/etc"):
    """Carry out plan_lock(); re-checks each volume afterwards: only the kept slots remain, no token."""
    dump = dump or deskguard_luks.luks_dump
    report = {"volumes": []}
    for uuid, device, remove, kept in plan:
        kill_slots(device, remove, run=run)
        left = sorted(int(s) for s in dump(device).get("keyslots", {}))
        if left != kept:
            raise deskguard_luks.LuksError("%s: after the lock the keyslots are %s, expected %s" % (device, left, kept))
        tokens = remove_tokens(device, run=run, dump=dump)
        report["volumes"].append({"uuid": uuid, "device": device, "removed": remove, "kept": kept,
                                  "tokens_removed": tokens, "keyfiles_removed": remove_keyfiles(device, uuid, etc)})
    return report


def power(action, delay_seconds=5, run=_run):
    """Power off or reboot a few seconds from now (a transient timer), so the result can still be reported."""
    verb = {"poweroff": "poweroff", "reboot": "reboot"}[action]
    # A wiped disk has nothing left to save: power off without stopping services one by one. A locked one
    # reboots cleanly (its data is intact).
    force = ["--force"] if verb == "poweroff" else []
    rc, out = run(["systemd-run", "--on-active=%ds" % delay_seconds, "--unit", "deskguard-agent-" + verb,
                   "--timer-property=AccuracySec=1s", "systemctl", verb, *force])
    if rc != 0:
        rc, out = run(["shutdown", "-P" if verb == "poweroff" else "-r", "now"])
    return rc == 0
