#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Documentation of the PowerShell module deskguard_bitlocker.ps1 (ansible-doc reads it; it never runs)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: deskguard_bitlocker
short_description: BitLocker inventory, recovery password, enable and protector removal on one volume
description:
  - Windows only (Ansible.Basic). One call per step; the controller-side action C(deskguard_escrow) drives
    C(add_recovery) so that the recovery password is escrowed before it is added, and before C(enable).
  - Never returns or logs a recovery password, not even in C(inventory).
  - C(enable) refuses unless the volume already has a recovery-password protector (escrow before enable,
    enforced on the device too). It does not skip the hardware test and does not encrypt used space only.
  - Not yet verified on a real Windows host (see docs/windows.md).
options:
  state:
    description:
      - C(inventory) reads only (edition, TPM, volumes, findings).
      - C(add_recovery) adds O(recovery_password) as a recovery-password protector and reads it back.
      - C(enable) starts encryption of a fully decrypted volume with a TPM or TPM+PIN protector.
      - C(remove_protector) removes O(protector_id); never a TPM protector, the last recovery password or the
        last protector.
    type: str
    choices: [inventory, add_recovery, enable, remove_protector]
    default: inventory
  mount_point:
    description: The volume, e.g. C(C:). Defaults to the system drive.
    type: str
  recovery_password:
    description: For O(state=add_recovery), 48 digits in 8 groups of 6 separated by C(-). Secret.
    type: str
  protector_id:
    description: For O(state=remove_protector), the key protector id (C({GUID})).
    type: str
  encryption_method:
    description: Cipher for O(state=enable); also what C(inventory) compares the volume against.
    type: str
    choices: [Aes128, Aes256, XtsAes128, XtsAes256]
    default: XtsAes256
  protector:
    description: Startup protector for O(state=enable).
    type: str
    choices: [tpm, tpm_pin]
    default: tpm
  pin:
    description: The startup PIN when O(protector=tpm_pin). Secret.
    type: str
notes:
  - Check mode is supported; the changing states then report C(changed=true) without acting.
author: deskguard
"""

EXAMPLES = r"""
- name: ENC-001 | AUDIT | BitLocker inventory
  deskguard_bitlocker:
    state: inventory
  register: __disk_encryption_windows_inventory

- name: ENC-001 | PATCH | Encrypt the OS volume (a recovery password must already be escrowed)
  deskguard_bitlocker:
    state: enable
    protector: tpm_pin
    pin: "{{ disk_encryption_windows_pin }}"
  no_log: true
"""

RETURN = r"""
edition:
  description: C(name) (Home for any Core edition), C(edition_id), C(build), C(bitlocker_capable) (false on Home).
  type: dict
  returned: state=inventory
tpm:
  description: C(present), C(ready) (and C(error) when Get-Tpm failed).
  type: dict
  returned: state=inventory
volumes:
  description:
    - One entry per volume, C(mount_point), C(volume_type), C(protection_status), C(volume_status),
      C(encryption_method), C(encryption_percentage), C(lock_status), C(protectors) (list of C(id), C(type)).
    - Never a recovery password.
  type: list
  elements: dict
  returned: state=inventory
findings:
  description: Plain sentences about the OS volume, e.g. C(OS volume is not encrypted).
  type: list
  elements: str
  returned: state=inventory
protector_id:
  description: The recovery-password protector holding O(recovery_password) (null in check mode).
  type: str
  returned: state=add_recovery
verified:
  description: The password was read back from the volume after adding it (or was already there).
  type: bool
  returned: state=add_recovery
volume_status:
  description: e.g. C(FullyDecrypted), C(EncryptionInProgress), C(FullyEncrypted).
  type: str
  returned: state=enable
encryption_percentage:
  description: Percentage encrypted.
  type: float
  returned: state=enable
hardware_test_pending:
  description: Encryption waits for the hardware test at the next restart (no role reboots on its own).
  type: bool
  returned: state=enable
mount_point:
  description: The volume acted on.
  type: str
  returned: always
"""
