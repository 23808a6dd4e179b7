#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: inventory LUKS devices and put escrowed recovery keys into keyslots, safely."""

from __future__ import annotations

DOCUMENTATION = r"""
module: deskguard_luks
short_description: Inventory LUKS devices; add, test and remove escrowed recovery keys
description:
  - C(state=inventory) (read-only) finds every LUKS device that backs a mounted file system or swap (from
    C(lsblk --json) and C(cryptsetup luksDump --dump-json-metadata)), with its keyslots and a fingerprint per
    slot, what is mounted unencrypted, and whether a crypttab key file can unlock it.
  - C(state=enroll) adds O(new_key) into O(slot), unlocking with O(unlock_key) or a crypttab key file of the
    device, then proves the new key opens that slot. The controller (action plugin C(deskguard_escrow)) has
    already stored the key, sealed, before it calls this.
  - C(state=remove) removes O(slot) only if its fingerprint is still O(fingerprint) and O(remaining_key) opens
    another slot. C(state=test) says whether O(key) opens O(slot).
  - C(state=format) encrypts an unmounted data volume (erasing it) with O(new_key) in slot 0 and O(luks_uuid),
    adds a random key file in slot 1 and a crypttab line; refused when the volume is mounted; a volume that is
    LUKS already is left alone. Only for volumes the policy lists in C(disk_encryption_format_devices).
  - C(state=bind) binds O(device) to this machine's TPM 2.0 on O(pcr_ids) (clevis TPM2 pin, proven by
    unsealing), removes stale TPM bindings, then (O(drop_keyfile)) takes the crypttab key file out of the
    initramfs (the crypttab key field becomes none, KEYFILE_PATTERN is turned off, the initramfs is rebuilt,
    then the key file's keyslot and the file are removed) (ENC-004).
  - C(state=retire) removes the keyslots O(unlock_key) (the installer passphrase, given once) opens, only once
    O(remaining_key) (the escrowed recovery key) opens another slot and the disk unlocks at boot without it (a
    clevis TPM2 binding, or a crypttab key file that opens another slot); otherwise it keeps them and says why.
  - Keys travel to cryptsetup on stdin only; token unlocking (TPM2, keyring) is disabled for every test.
  - Used through the C(deskguard_escrow) action plugin; see docs/luks.md.
options:
  state: {description: What to do., type: str, choices: [inventory, enroll, remove, test, format, bind, retire], default: inventory}
  pcr_ids: {description: "The PCRs the TPM binding is sealed to (bind).", type: list, elements: int, default: [0, 2, 7]}
  pcr_bank: {description: "The PCR bank (bind).", type: str, default: sha256}
  drop_keyfile: {description: "After binding, take the crypttab key file out of the initramfs (bind).", type: bool, default: true}
  name: {description: The crypttab mapping name of a volume to encrypt (format)., type: str}
  device: {description: "The LUKS device (enroll, remove, test).", type: str}
  luks_uuid: {description: The LUKS UUID the caller expects at O(device); a mismatch stops the step., type: str}
  slot: {description: "The keyslot to write (enroll), remove or test.", type: int}
  new_key: {description: The recovery key to add (enroll)., type: str, no_log: true}
  unlock_key: {description: "A key that opens the device now (installer passphrase, the escrowed key); retire: the installer passphrase to remove.", type: str, no_log: true}
  remaining_key: {description: "The key that must still open another slot before O(slot) is removed; without it, the volume's crypttab key file.", type: str, no_log: true}
  key: {description: The key to test., type: str, no_log: true}
  fingerprint: {description: The fingerprint O(slot) must still have to be removed (remove)., type: str}
  approved_ciphers: {description: Ciphers the policy accepts (inventory)., type: list, elements: str, default: [aes-xts-plain64]}
  min_key_bits: {description: "Smallest volume key the policy accepts, in bits (inventory).", type: int, default: 512}
  exempt_slots: {description: "C(LUKS-UUID:slot) of escrowed recovery slots: no weak-PBKDF warning (inventory).", type: list, elements: str, default: []}
  format_devices: {description: "Volumes the policy allows to encrypt; inventory reports whether each exists, is LUKS, is mounted.", type: list, elements: str, default: []}
  fast_kdf:
    description:
      - Use PBKDF2 with 1000 iterations for the new slot. Recovery keys are 159-bit random numbers, so a slow,
        memory-hard KDF protects nothing there, and it costs seconds per test on every verification.
    type: bool
    default: true
author: deskguard
"""

EXAMPLES = r"""
- name: ENC-001 | AUDIT | LUKS devices and keyslots
  deskguard_luks:
    state: inventory
"""

RETURN = r"""
devices: {description: "LUKS devices backing mounts, each with keyslots (slot, pbkdf, fingerprint) and free_slot.", type: list, returned: inventory}
unencrypted: {description: Mounts not on LUKS (boot partitions apart)., type: list, returned: inventory}
violations: {description: "Reasons the laptop is not compliant (root or swap unencrypted, LUKS1, cipher).", type: list, returned: inventory}
advisories: {description: "Weaker points that do not make it non-compliant (PBKDF, unencrypted data volumes).", type: list, returned: inventory}
slot: {description: The keyslot the new key is in (enroll)., type: int, returned: enroll}
done: {description: "What the TPM binding step did (bind).", type: list, returned: bind}
fingerprint: {description: "The slot's fingerprint after the step (enroll, test).", type: str, returned: "enroll, test"}
opens: {description: Whether the key opens the slot (test)., type: bool, returned: test}
retired: {description: "The keyslots the installer passphrase opened, now removed (retire).", type: list, returned: retire}
fingerprints: {description: "Their fingerprints before removal (retire).", type: list, returned: retire}
kept: {description: "Why the installer passphrase was kept, or null (retire).", type: str, returned: retire}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible.module_utils import deskguard_luks as dl
from ansible.module_utils import deskguard_tpm_bind as tpm_bind


REQUIRED = {"enroll": ("device", "slot", "new_key"), "remove": ("device", "slot", "fingerprint"),
            "test": ("device", "slot", "key"), "format": ("device", "luks_uuid", "new_key", "name"), "bind": ("device",),
            "retire": ("device", "unlock_key", "remaining_key")}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["inventory", "enroll", "remove", "test", "format", "bind", "retire"],
                       default="inventory"),
            pcr_ids=dict(type="list", elements="int", default=[0, 2, 7]), pcr_bank=dict(type="str", default="sha256"),
            drop_keyfile=dict(type="bool", default=True),
            device=dict(type="str"), luks_uuid=dict(type="str"), slot=dict(type="int"),
            new_key=dict(type="str", no_log=True), unlock_key=dict(type="str", no_log=True),
            remaining_key=dict(type="str", no_log=True), key=dict(type="str", no_log=True),
            fingerprint=dict(type="str"), fast_kdf=dict(type="bool", default=True), name=dict(type="str"),
            approved_ciphers=dict(type="list", elements="str", default=["aes-xts-plain64"]),
            min_key_bits=dict(type="int", default=512),
            exempt_slots=dict(type="list", elements="str", default=[]),
            format_devices=dict(type="list", elements="str", default=[])),
        supports_check_mode=True)
    p = module.params
    missing = [name for name in REQUIRED.get(p["state"], ()) if p[name] in (None, "")]
    if missing:
        module.fail_json(msg="state=%s needs %s" % (p["state"], ", ".join(missing)))
    try:
        result = tpm_bind.act(p, module.check_mode)
    except dl.LuksError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
