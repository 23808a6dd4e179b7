"""Recovery-key escrow, on the controller: the order of steps that keeps every disk openable.

For each encrypted volume: generate a random recovery key -> seal it to the escrow public key -> store it
*pending* (committed) -> put it on the device, which proves it opens -> mark it *active* -> only then remove
the key it replaces. Interrupted anywhere (kill -9 of the controller or of the device step), the device is
left with a key the store holds: pending or active, never neither. See docs/disk-encryption.md.

The steps talk to the device through ``remote(module, args) -> dict`` (the action plugin's module call; a
local call in the tests), so this file knows nothing of Ansible.
"""

from __future__ import annotations

import secrets as random
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Callable

from ..errors import DeskguardError
from . import tpm_binding
from .keys import escrow_key_id, seal, unseal

KIND_LUKS = "luks-recovery"
LIVE = ("pending", "active", "mismatch")

Remote = Callable[[str, dict], dict]


class RemoteFailed(DeskguardError):
    """A step on the device failed; its message says what and that nothing unsafe was done."""

    exit_code = 1


def new_recovery_key() -> str:
    """48 random digits in 8 groups (about 159 bits): easy to read out over the phone, typed at the LUKS
    prompt as is."""
    return "-".join(f"{random.randbelow(10 ** 6):06d}" for _ in range(8))


def luks_key_id(luks_uuid: str, slot: int) -> str:
    return f"luks:{luks_uuid}:{int(slot)}"


def parse_luks_key_id(key_id: str) -> tuple[str, int]:
    kind, luks_uuid, slot = key_id.split(":")
    if kind != "luks":
        raise ValueError(key_id)
    return luks_uuid, int(slot)


@dataclass
class Outcome:
    """What one escrow run did and found; `controls` feeds the runner's per-control summary."""

    changed: bool = False
    module_calls: int = 0
    enc001: list[str] = field(default_factory=list)      # violations
    enc001_warnings: list[str] = field(default_factory=list)
    enc002: list[str] = field(default_factory=list)      # what is wrong with escrow (non-compliant)
    enc003: list[str] = field(default_factory=list)      # keyslots outside the baseline and the escrow
    enc003_done: list[str] = field(default_factory=list)  # such keyslots removed by this run
    notes: list[str] = field(default_factory=list)       # what was done, and other findings
    volumes: list[dict] = field(default_factory=list)
    failed: str | None = None
    not_applicable: str | None = None
    enc004: list[str] = field(default_factory=list)       # why the root is not bound to this machine's TPM
    enc004_done: list[str] = field(default_factory=list)  # what this run did to bind it
    enc004_na: str | None = "the policy unlocks the disk with a passphrase (disk_encryption_linux_unlock)"

    def controls(self, *, escrow_applied: bool) -> dict:
        if self.not_applicable:
            return {cid: {"state": "not_applicable", "findings": [self.not_applicable]}
                    for cid in ("ENC-001", "ENC-002", "ENC-003", "ENC-004")}
        enc1 = {"state": "noncompliant" if self.enc001 else "compliant", "findings": self.enc001 + self.enc001_warnings}
        if self.failed:
            enc2_state = "failed"
        elif self.enc002:
            enc2_state = "noncompliant"
        else:
            enc2_state = "applied" if escrow_applied else "compliant"
        enc2 = {"state": enc2_state, "findings": ([self.failed] if self.failed else []) + self.enc002 + self.notes}
        enc3_state = ("failed" if self.failed else "noncompliant" if self.enc003
                      else "applied" if self.enc003_done else "compliant")
        enc3 = {"state": enc3_state, "findings": self.enc003 + self.enc003_done}
        if self.enc004_na:
            enc4 = {"state": "not_applicable", "findings": [self.enc004_na]}
        else:
            enc4 = {"state": "noncompliant" if self.enc004 else "applied" if self.enc004_done else "compliant",
                    "findings": self.enc004 + self.enc004_done}
        return {"ENC-001": enc1, "ENC-002": enc2, "ENC-003": enc3, "ENC-004": enc4}


@dataclass
class Request:
    """mode: apply (escrow where missing), rotate (new key everywhere), verify (read-only), check (dry run)."""

    device_uuid: str
    hostname: str
    mode: str = "apply"
    unlock_key: str | None = None            # installer passphrase or the escrowed key, used once, never stored
    officer_key: object | None = None        # X25519PrivateKey: verify tests keys for real; rotate unlocks with them
    approved_ciphers: tuple = ("aes-xts-plain64",)
    min_key_bits: int = 512
    format_devices: tuple = ()               # unencrypted data volumes the policy allows to encrypt (erase)
    remove_unknown_slots: bool = True        # ENC-003: remove keyslots outside the baseline (else report them)
    linux_unlock: str = "passphrase"         # ENC-004: tpm2 binds the root to this machine's TPM
    tpm_pcr_ids: tuple = (0, 2, 7)           # the PCRs that binding is sealed to
    retire_installer_key: bool = False       # issue 22: remove unlock_key's (the installer passphrase's) keyslots
    hook: Callable[[str], None] | None = None  # test hook: called with "pending", "added", "activated", "removed"


class _Escrow:
    """What both backends share: the store, the escrow public key, the device module and the test hook."""

    module = ""

    def __init__(self, store, public_key, remote: Remote, req: Request):
        self.store, self.public_key, self.req = store, public_key, req
        self._remote = remote
        self.out = Outcome()

    def call(self, args: dict) -> dict:
        self.out.module_calls += 1
        return self._remote(self.module, args)

    def step(self, name: str) -> None:
        if self.req.hook:
            self.req.hook(name)


class LuksEscrow(_Escrow):
    """One device's LUKS volumes against its escrowed secrets in the store."""

    module = "deskguard_luks"

    def run(self) -> Outcome:
        # Check mode may run before the device is registered: then nothing is escrowed yet.
        live = self.store.live_secrets(self.req.device_uuid, KIND_LUKS) if self.store else []
        # None: no store (check mode before registration), so no keyslot can be judged against a baseline.
        self.baselines = self.store.keyslot_baselines(self.req.device_uuid) if self.store else None
        self.changes: dict[str, dict] = {}
        self.fresh: dict[str, str] = {}      # LUKS UUID -> the recovery key this run escrowed (known in clear now)
        if self.req.linux_unlock == "tpm2":
            self.out.enc004_na = None
        exempt = [s.key_id.split(":", 1)[1] for s in live]
        inv = self.call({"state": "inventory", "approved_ciphers": list(self.req.approved_ciphers),
                         "min_key_bits": self.req.min_key_bits, "exempt_slots": exempt,
                         "format_devices": list(self.req.format_devices)})
        self.out.enc001 = list(inv.get("violations") or [])
        # An inventory collected without the exempt list (the compliance posture) warns about escrow slots too.
        by_uuid = {v["luks_uuid"]: v["device"] for v in inv.get("devices") or []}
        escrow_slots = tuple(f"{by_uuid.get(e.rsplit(':', 1)[0])}: keyslot {e.rsplit(':', 1)[1]} uses weak PBKDF"
                             for e in exempt)
        self.out.enc001_warnings = [w for w in inv.get("advisories") or [] if not w.startswith(escrow_slots)]
        if not inv.get("devices") and not inv.get("root_on_block_device", True):
            self.out.not_applicable = "the root file system is on no block device (a container): nothing to encrypt"
            return self.out
        if not inv.get("devices"):
            self.out.enc002.append("no encrypted volume to escrow a recovery key for")
        for volume in inv.get("devices") or []:
            mine = [s for s in live if s.key_id.startswith(f"luks:{volume['luks_uuid']}:")]
            try:
                self.volume(volume, mine)
                self.keyslots(volume, mine)
                tpm_binding.bind_root(self, volume, mine)
                self.retire_installer(volume, mine)
            except RemoteFailed as exc:
                self.out.failed = str(exc)
                return self.out
        for cand in inv.get("format_candidates") or []:
            try:
                self.format(cand, live)
            except RemoteFailed as exc:
                self.out.failed = str(exc)
                break
        return self.out

    def format(self, cand: dict, live: list) -> None:
        """An unencrypted data volume the policy lists: encrypt it (erasing it) with an escrowed key."""
        dev = cand["device"]
        if not cand["exists"]:
            self.out.enc002.append(f"{dev}: listed in disk_encryption_format_devices but not present")
            return
        if cand["luks_uuid"]:
            if not any(s.key_id.startswith(f"luks:{cand['luks_uuid']}:") for s in live):
                self.out.notes.append(f"{dev}: already LUKS but no key escrowed for it; open and mount it (crypttab, "
                                      "fstab) so that it is inventoried and escrowed like any volume")
            return
        if cand["mounts"]:
            self.out.enc002.append(f"{dev}: mounted at {', '.join(cand['mounts'])}; not encrypted (that would "
                                   "erase it): unmount it, or take it out of disk_encryption_format_devices")
            return
        if self.req.mode != "apply":
            if self.req.mode == "check":
                self.out.changed = True
                self.out.notes.append(f"{dev}: would encrypt it (erasing its data)")
            return
        luks_uuid = str(uuidlib.uuid4())   # chosen here so that the key id is bound before the key is stored
        key, key_id = new_recovery_key(), luks_key_id(luks_uuid, 0)
        sec = self.store.add_secret(self.req.device_uuid, KIND_LUKS, key_id,
                                    seal(self.public_key, key.encode(), self.req.device_uuid, KIND_LUKS, key_id),
                                    escrow_key_id=escrow_key_id(self.public_key), state="pending")
        self.step("pending")
        res = self.call({"state": "format", "device": dev, "luks_uuid": luks_uuid, "new_key": key,
                         "name": f"dg-{luks_uuid[:8]}"})
        self.store.set_secret_state(sec.id, "active", fingerprint=res["fingerprint"], verified=True,
                                    detail={"slot": 0, "device": dev, "formatted": True})
        self.out.changed = True
        self.out.notes.append(f"{dev}: encrypted (its old data erased) as /dev/mapper/{res.get('mapping')}, "
                              f"recovery key escrowed (secret #{sec.id})")

    # -- one volume --------------------------------------------------------------------------------------

    def volume(self, vol: dict, secrets: list) -> None:
        dev, uuid = vol["device"], vol["luks_uuid"]
        prints = {ks["slot"]: ks.get("fingerprint") for ks in vol.get("keyslots", [])}
        good = []
        for sec in secrets:
            _, slot = parse_luks_key_id(sec.key_id)
            if sec.state == "pending":
                self.pending(sec, slot, prints, dev)
            elif prints.get(slot) is not None and prints.get(slot) == sec.fingerprint:
                good.append(sec)
            elif sec.state == "active":
                # When writing, a fresh key is escrowed below, so the mismatch is a note; otherwise a finding.
                (self.out.notes if self.writes else self.out.enc002).append(
                    f"{dev}: the escrowed key of keyslot {slot} no longer matches the disk (changed outside "
                    f"deskguard){'; a new key is escrowed' if self.writes else '; run onboard or keys rotate'}")
                if self.writes or self.req.mode == "verify":
                    self.store.set_secret_state(sec.id, "mismatch", detail={"slot": slot, "device": dev})
        if self.req.officer_key is not None and self.req.mode == "verify":
            good = [s for s in good if self.tested(s, dev, uuid)]
        for sec in good:
            if self.req.mode == "verify":
                self.store.mark_secret_verified(sec.id)
        if self.req.mode == "verify":
            if not good and not any(f.startswith(dev) for f in self.out.enc002):
                self.out.enc002.append(f"{dev}: no recovery key escrowed")
            self.out.volumes.append({"device": dev, "luks_uuid": uuid, "escrowed": [s.id for s in good]})
            return
        if good and self.req.mode != "rotate":
            self.out.volumes.append({"device": dev, "luks_uuid": uuid, "escrowed": [s.id for s in good]})
            return
        self.enroll(vol, good)

    @property
    def writes(self) -> bool:
        return self.req.mode in ("apply", "rotate")

    def pending(self, sec, slot: int, prints: dict, dev: str) -> None:
        """A pending secret is left from an interrupted run: if its slot was never written it opens nothing
        (abandoned); if the slot exists it may be the only way in, so it is kept and reported."""
        if prints.get(slot) is None:
            if self.writes:
                self.store.set_secret_state(sec.id, "abandoned", detail={"why": "keyslot never written"})
            return
        self.out.notes.append(f"{dev}: keyslot {slot} holds a key from an interrupted escrow (secret #{sec.id}); "
                              "it stays escrowed: confirm it with `deskguard keys verify --escrow-key`")

    def tested(self, sec, dev: str, uuid: str) -> bool:
        _, slot = parse_luks_key_id(sec.key_id)
        key = unseal(self.req.officer_key, sec.ciphertext, sec.device_uuid, sec.kind, sec.key_id).decode()
        res = self.call({"state": "test", "device": dev, "luks_uuid": uuid, "slot": slot, "key": key})
        if res.get("opens"):
            return True
        self.out.enc002.append(f"{dev}: the escrowed key of keyslot {slot} does not open it")
        self.store.set_secret_state(sec.id, "mismatch", detail={"slot": slot, "device": dev, "tested": True})
        return False

    def enroll(self, vol: dict, replaced: list) -> None:
        dev, uuid = vol["device"], vol["luks_uuid"]
        if vol.get("version") != 2:
            self.out.enc002.append(f"{dev}: LUKS{vol.get('version')} header: escrow needs LUKS2 "
                                   "(cryptsetup convert --type luks2, offline)")
            return
        slot = vol.get("free_slot")
        if slot is None:
            raise RemoteFailed(f"{dev}: no free keyslot; remove an obsolete one (cryptsetup luksKillSlot) and "
                               "run again; nothing changed")
        what = "rotate the recovery key" if replaced else "escrow a recovery key"
        if self.req.mode == "check":
            self.out.changed = True
            self.out.notes.append(f"{dev}: would {what} (keyslot {slot})")
            return
        key = new_recovery_key()
        key_id = luks_key_id(uuid, slot)
        blob = seal(self.public_key, key.encode(), self.req.device_uuid, KIND_LUKS, key_id)
        # Committed before the device sees the key: a key on a disk is always a key in the store.
        sec = self.store.add_secret(self.req.device_uuid, KIND_LUKS, key_id, blob,
                                    escrow_key_id=escrow_key_id(self.public_key), state="pending")
        self.step("pending")
        self.fresh[uuid] = key
        res = self.call({"state": "enroll", "device": dev, "luks_uuid": uuid, "slot": slot, "new_key": key,
                         "unlock_key": self.unlock_key(replaced, dev, uuid)})
        self.step("added")
        if res.get("slot") != slot:
            raise RemoteFailed(f"{dev}: the new key landed in keyslot {res.get('slot')}, not {slot}; it stays "
                               "escrowed as pending, nothing removed")
        self.store.set_secret_state(sec.id, "active", fingerprint=res["fingerprint"], verified=True,
                                    detail={"slot": slot, "device": dev})
        change = self.changes.setdefault(uuid, {"added": set(), "removed": set()})
        change["added"].add(res["fingerprint"])
        self.out.changed = True
        self.step("activated")
        for old in replaced:
            _, old_slot = parse_luks_key_id(old.key_id)
            self.call({"state": "remove", "device": dev, "luks_uuid": uuid, "slot": old_slot,
                       "fingerprint": old.fingerprint, "remaining_key": key})
            self.store.set_secret_state(old.id, "retired", detail={"slot": old_slot, "replaced_by": sec.id})
            change["removed"].add(old.fingerprint)
            self.step("removed")
        self.out.notes.append(f"{dev}: recovery key {'rotated' if replaced else 'escrowed'} "
                              f"(keyslot {slot}, secret #{sec.id})")
        self.out.volumes.append({"device": dev, "luks_uuid": uuid, "escrowed": [sec.id]})

    # -- the installer passphrase, replaced by the escrowed key (issue 22) -------------------------------------

    def retire_installer(self, vol: dict, secrets: list) -> None:
        """Remove the keyslots the installer passphrase (the unlock key the admin gave once) opens, after this
        volume's recovery key is escrowed and proven and after the TPM binding: the device refuses unless the
        escrowed key opens another slot and the disk unlocks at boot without the passphrase (TPM or key file)."""
        if not (self.req.retire_installer_key and self.req.unlock_key) or self.req.mode not in ("apply", "check"):
            return
        dev, uuid = vol["device"], vol["luks_uuid"]
        if self.req.mode == "check":
            self.out.changed = True
            self.out.notes.append(f"{dev}: would remove the installer passphrase's keyslot once the recovery key "
                                  "is escrowed and proven")
            return
        if not any(v["device"] == dev and v.get("escrowed") for v in self.out.volumes) or \
                any(f.startswith(dev) for f in self.out.enc002):
            self.out.notes.append(f"{dev}: the installer passphrase is kept: no recovery key escrowed and proven")
            return
        recovery = self.fresh.get(uuid)
        active = [s for s in secrets if s.state == "active"]
        if recovery is None and self.req.officer_key is not None and active:
            recovery = unseal(self.req.officer_key, active[0].ciphertext, active[0].device_uuid, active[0].kind,
                              active[0].key_id).decode()
        if recovery is None:
            self.out.notes.append(f"{dev}: the installer passphrase is kept: the escrowed key must be at hand to "
                                  "prove the disk opens without it (give the officer's key, --escrow-key)")
            return
        try:
            res = self.call({"state": "retire", "device": dev, "luks_uuid": uuid, "unlock_key": self.req.unlock_key,
                             "remaining_key": recovery})
        except RemoteFailed as exc:
            self.out.notes.append(f"{dev}: the installer passphrase is kept: {exc}")
            return
        if res.get("kept"):
            self.out.notes.append(f"{dev}: the installer passphrase is kept: {res['kept']}")
            return
        if not res.get("retired"):
            return
        self.out.changed = True
        slots = ", ".join(str(s) for s in res["retired"])
        self.out.notes.append(f"{dev}: keyslot {slots} (the installer passphrase) removed: the escrowed recovery "
                              "key replaces it")
        base = self.store.keyslot_baselines(self.req.device_uuid).get(uuid)
        if base is not None:
            self.store.record_keyslot_baseline(self.req.device_uuid, uuid, base - set(res.get("fingerprints") or ()),
                                               reason="installer passphrase retired")

    # -- ENC-003: keyslots nobody escrowed ---------------------------------------------------------------

    def keyslots(self, vol: dict, secrets: list) -> None:
        """Judge the volume's keyslots against its baseline; when writing, remove the unknown ones and keep the
        baseline current. The first escrow records the baseline (the installer's and key-file slots and the
        escrowed one); later, only slots deskguard itself adds or removes change it."""
        if self.baselines is None:
            return
        dev, uuid = vol["device"], vol["luks_uuid"]
        change = self.changes.get(uuid, {"added": set(), "removed": set()})
        slots = {ks["fingerprint"]: ks["slot"] for ks in vol.get("keyslots", []) if ks.get("fingerprint")}
        now = (set(slots) - change["removed"]) | change["added"]
        base = self.baselines.get(uuid)
        if base is None:
            if self.writes:
                self.store.record_keyslot_baseline(self.req.device_uuid, uuid, now, reason="first escrow")
            else:
                self.out.enc003.append(f"{dev}: no keyslot baseline recorded yet (deskguard comply --fix or "
                                       "onboard records it)")
            return
        pending_slots = {parse_luks_key_id(s.key_id)[1] for s in secrets if s.state == "pending"}
        known = base | change["added"] | {s.fingerprint for s in secrets if s.state == "active" and s.fingerprint}
        known |= tpm_binding.own_slots(self.req, vol)   # the kit's own TPM binding (ENC-004) is never "unknown"
        unknown = {fp: slot for fp, slot in slots.items()
                   if fp in now and fp not in known and slot not in pending_slots}
        for fp, slot in sorted(unknown.items(), key=lambda kv: kv[1]):
            what = f"{dev}: keyslot {slot} is neither escrowed nor in the enrolment baseline (added outside deskguard)"
            if self.req.mode == "check" and self.req.remove_unknown_slots:
                self.out.changed = True
                self.out.enc003_done.append(f"{what}: would remove it")
            elif not self.writes or not self.req.remove_unknown_slots:
                self.out.enc003.append(what)
            else:
                try:
                    self.call({"state": "remove", "device": dev, "luks_uuid": uuid, "slot": slot, "fingerprint": fp,
                               "remaining_key": self.remaining_key(secrets)})
                except RemoteFailed as exc:
                    self.out.enc003.append(f"{what}; not removed: {exc}")
                    continue
                now.discard(fp)
                self.out.changed = True
                self.out.enc003_done.append(f"{what}: removed")
        if self.writes:
            self.store.record_keyslot_baseline(self.req.device_uuid, uuid, (base & now) | change["added"],
                                               reason="rotate" if self.req.mode == "rotate" else "escrow")

    def remaining_key(self, secrets: list) -> str | None:
        """The key that proves the disk still opens once an unknown slot is gone: the installer passphrase, or
        with the officer key the active escrowed key; None lets the device use its crypttab key file."""
        if self.req.unlock_key:
            return self.req.unlock_key
        active = [s for s in secrets if s.state == "active"]
        if self.req.officer_key is not None and active:
            return unseal(self.req.officer_key, active[0].ciphertext, active[0].device_uuid, active[0].kind,
                          active[0].key_id).decode()
        return None

    def unlock_key(self, replaced: list, dev: str, uuid: str) -> str | None:
        """The installer passphrase if given; else, with the officer key, the escrowed key being replaced;
        else None (the device uses its crypttab key file)."""
        if self.req.unlock_key:
            return self.req.unlock_key
        if self.req.officer_key is not None and replaced:
            old = replaced[0]
            return unseal(self.req.officer_key, old.ciphertext, old.device_uuid, old.kind, old.key_id).decode()
        return None


def run_luks(store, public_key, remote: Remote, req: Request) -> Outcome:
    if req.mode not in ("apply", "rotate", "verify", "check"):
        raise ValueError(req.mode)
    return LuksEscrow(store, public_key, remote, req).run()


# --------------------------------------------------------------------------------------------- BitLocker

KIND_BITLOCKER = "bitlocker-recovery"


def new_bitlocker_password() -> str:
    """A BitLocker recovery password: 8 groups of 6 digits, each group a multiple of 11 below 720896 (the
    format BitLocker accepts: each group encodes 16 bits). 128 random bits."""
    return "-".join(f"{random.randbelow(65536) * 11:06d}" for _ in range(8))


class BitLockerEscrow(_Escrow):
    """The OS volume's recovery password, escrowed and read back *before* encryption may start.

    The protector id (known only once Windows has added the protector) is the secret's fingerprint; the key
    id binds the sealed password to the device, the volume and a random tag chosen before it is stored.
    """

    module = "deskguard_bitlocker"

    def __init__(self, store, public_key, remote: Remote, req: Request, inventory: dict | None = None):
        super().__init__(store, public_key, remote, req)
        self.inventory = inventory

    def controls(self) -> dict:
        """Only ENC-002: ENC-001 (policy, encryption) is the role's own BitLocker tasks."""
        return {"ENC-002": self.out.controls(escrow_applied=self.out.changed)["ENC-002"]}

    def run(self) -> Outcome:
        inv = self.inventory if self.inventory and "volumes" in self.inventory else self.call({"state": "inventory"})
        if not (inv.get("edition") or {}).get("bitlocker_capable", False):
            self.out.enc002.append("this Windows edition cannot use BitLocker: nothing to escrow")
            return self.out
        volume = next((v for v in inv.get("volumes") or [] if v.get("volume_type") == "OperatingSystem"), None)
        mount = (volume or {}).get("mount_point") or "C:"
        present = {p.get("id") for p in (volume or {}).get("protectors") or [] if p.get("type") == "RecoveryPassword"}
        live = self.store.live_secrets(self.req.device_uuid, KIND_BITLOCKER) if self.store else []
        good = []
        for sec in live:
            if sec.state == "pending":
                self.out.notes.append(f"{mount}: a recovery password from an interrupted escrow (secret #{sec.id}) "
                                      "stays escrowed; `deskguard keys show` lists it")
            elif sec.fingerprint in present:
                good.append(sec)
            elif sec.state == "active":
                self.out.enc002.append(f"{mount}: the escrowed recovery password (protector {sec.fingerprint}) is "
                                       "no longer on the volume")
                if self.req.mode in ("apply", "rotate", "verify"):
                    self.store.set_secret_state(sec.id, "mismatch", detail={"protector": sec.fingerprint})
        if self.req.mode == "verify" or (good and self.req.mode != "rotate"):
            for sec in good:
                self.store.mark_secret_verified(sec.id)
            if not good and self.req.mode == "verify":
                self.out.enc002.append(f"{mount}: no recovery password escrowed")
            self.out.volumes.append({"device": mount, "escrowed": [s.id for s in good]})
            return self.out
        try:
            self.enroll(mount, good)
        except RemoteFailed as exc:
            self.out.failed = str(exc)
        return self.out

    def enroll(self, mount: str, replaced: list) -> None:
        if self.req.mode == "check":
            self.out.changed = True
            self.out.notes.append(f"{mount}: would escrow a recovery password before encryption")
            return
        password = new_bitlocker_password()
        key_id = f"bitlocker:{mount}:{random.token_hex(4)}"
        blob = seal(self.public_key, password.encode(), self.req.device_uuid, KIND_BITLOCKER, key_id)
        sec = self.store.add_secret(self.req.device_uuid, KIND_BITLOCKER, key_id, blob,
                                    escrow_key_id=escrow_key_id(self.public_key), state="pending")
        self.step("pending")
        res = self.call({"state": "add_recovery", "mount_point": mount, "recovery_password": password})
        if not res.get("verified") or not res.get("protector_id"):
            raise RemoteFailed(f"{mount}: Windows did not read the new recovery password back; it stays escrowed "
                               "as pending and encryption does not start")
        self.store.set_secret_state(sec.id, "active", fingerprint=res["protector_id"], verified=True,
                                    detail={"protector": res["protector_id"]})
        self.out.changed = True
        self.step("activated")
        for old in replaced:
            self.call({"state": "remove_protector", "mount_point": mount, "protector_id": old.fingerprint})
            self.store.set_secret_state(old.id, "retired", detail={"protector": old.fingerprint,
                                                                  "replaced_by": sec.id})
            self.step("removed")
        self.out.notes.append(f"{mount}: recovery password {'rotated' if replaced else 'escrowed'} "
                              f"(protector {res['protector_id']}, secret #{sec.id})")
        self.out.volumes.append({"device": mount, "escrowed": [sec.id]})


def run_bitlocker(store, public_key, remote: Remote, req: Request, inventory: dict | None = None) -> BitLockerEscrow:
    if req.mode not in ("apply", "rotate", "verify", "check"):
        raise ValueError(req.mode)
    escrow = BitLockerEscrow(store, public_key, remote, req, inventory)
    escrow.run()
    return escrow
