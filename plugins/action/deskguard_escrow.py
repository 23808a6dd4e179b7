# -*- coding: utf-8 -*-
"""Action plugin: escrow, rotate or verify a laptop's recovery keys (controller side of ENC-001/ENC-002).

The key is generated and sealed here, on the controller, and stored *pending* before the laptop sees it;
the order of the steps is deskguard.recovery.escrow's. The device steps are calls of the deskguard_luks module.
Nothing secret is returned: the result carries slots, secret ids and findings only.

Inputs besides the task's arguments, from the environment `deskguard` sets for the run (or AWX):
  DESKGUARD_SITE               the site (store and escrow public key); DESKGUARD_DB_URL overrides the store,
                               DESKGUARD_ESCROW_PUBLIC_KEY_FILE the escrow public key (AWX credentials)
  DESKGUARD_UNLOCK_KEY_FILE    optional: a file with the installer passphrase (exact bytes), used once; its
                               keyslots are then removed (retire_installer_passphrase)
  DESKGUARD_OFFICER_KEY_FILE + DESKGUARD_OFFICER_PASSPHRASE_FILE   optional: the escrow private key, for a
                               real key test (verify) or to unlock with the escrowed key (rotate)
"""

from __future__ import annotations

import os
from pathlib import Path

from ansible.errors import AnsibleActionFail
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

DOCUMENTATION = r"""
action: deskguard_escrow
short_description: Escrow, rotate or verify recovery keys of encrypted volumes
options:
  backend: {description: Which encryption., type: str, choices: [luks, bitlocker], default: luks}
  inventory: {description: A deskguard_bitlocker inventory result registered just before (saves a round trip)., type: dict}
  mode: {description: apply (escrow where missing), rotate, or verify (read-only)., type: str, default: apply}
  approved_ciphers: {description: Ciphers ENC-001 accepts., type: list, elements: str}
  min_key_bits: {description: Smallest volume key ENC-001 accepts., type: int}
  format_devices: {description: Unencrypted data volumes the policy allows to encrypt (erasing them)., type: list, elements: str}
  linux_unlock: {description: "ENC-004 - passphrase (bind nothing) or tpm2 (bind the root to the TPM)", type: str, default: passphrase}
  tpm_pcr_ids: {description: ENC-004 - the PCRs the TPM binding is sealed to., type: list, elements: int, default: [0, 2, 7]}
  remove_unknown_keyslots: {description: ENC-003 - remove keyslots outside the escrow record (false only reports them)., type: bool, default: true}
  retire_installer_passphrase: {description: "With DESKGUARD_UNLOCK_KEY_FILE (the installer passphrase) - remove its keyslots once the recovery key is escrowed and proven and the disk unlocks at boot without it.", type: bool, default: true}
"""


def _read_file(var: str) -> bytes | None:
    path = os.environ.get(var)
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise AnsibleActionFail(f"{var}={path}: cannot read it ({exc.strerror})") from None


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("backend", "mode", "approved_ciphers", "min_key_bits", "inventory", "format_devices",
                              "remove_unknown_keyslots", "linux_unlock", "tpm_pcr_ids",
                              "retire_installer_passphrase"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self._task.args
        mode = args.get("mode", "apply")
        backend = args.get("backend", "luks")
        if backend not in ("luks", "bitlocker"):
            raise AnsibleActionFail(f"backend must be luks or bitlocker, not {backend!r}")
        if mode not in ("apply", "rotate", "verify"):
            raise AnsibleActionFail(f"mode must be apply, rotate or verify, not {mode!r}")
        try:
            from deskguard.recovery import tpm_binding
        except ImportError as exc:
            raise AnsibleActionFail(f"the deskguard library is not importable here ({exc})") from None
        linux_unlock = args.get("linux_unlock") or "passphrase"
        if linux_unlock == "tpm2_pin":
            raise AnsibleActionFail(tpm_binding.TPM2_PIN_REFUSED)
        if linux_unlock not in tpm_binding.UNLOCK_CHOICES:
            raise AnsibleActionFail(f"linux_unlock must be passphrase or tpm2, not {linux_unlock!r}")
        try:
            pcr_ids = [int(p) for p in args.get("tpm_pcr_ids") or (0, 2, 7)]
        except (TypeError, ValueError):
            raise AnsibleActionFail(f"tpm_pcr_ids must be PCR numbers, not {args.get('tpm_pcr_ids')!r}") from None
        if tpm_binding.pcr_problem(pcr_ids):
            raise AnsibleActionFail(tpm_binding.pcr_problem(pcr_ids))
        if self._task.check_mode and mode != "verify":
            mode = "check"
        device_uuid = task_vars.get("deskguard_device_uuid")
        if not device_uuid and mode != "check":
            raise AnsibleActionFail("this host has no deskguard_device_uuid: it is not in the store; onboard it "
                                    "with `deskguard onboard` (escrow needs a device record)")
        try:
            from deskguard.recovery import escrow
            from deskguard.errors import DeskguardError
            from deskguard.recovery.keys import load_escrow_public_key, load_officer_key
            from deskguard.site import site_dir
            from deskguard.store import Store
        except ImportError as exc:
            raise AnsibleActionFail(f"the deskguard library is not importable here ({exc}); install the kit "
                                    "(pip install deskguard) in this Python") from None

        def remote(module: str, margs: dict) -> dict:
            res = self._execute_module(module_name=module, module_args=margs, task_vars=task_vars)
            if res.get("failed") or res.get("unreachable"):
                raise escrow.RemoteFailed(str(res.get("msg") or f"{module} failed"))
            return res

        try:
            site = site_dir(os.environ.get("DESKGUARD_SITE"))
            unlock = _read_file("DESKGUARD_UNLOCK_KEY_FILE")
            officer = None
            officer_file = os.environ.get("DESKGUARD_OFFICER_KEY_FILE")
            if officer_file:
                # Read as `--passphrase-file` reads it: a trailing line break is not part of the passphrase.
                passphrase = _read_file("DESKGUARD_OFFICER_PASSPHRASE_FILE")
                officer = load_officer_key(Path(officer_file),
                                           passphrase.rstrip(b"\r\n") if passphrase is not None else None)
            req = escrow.Request(
                device_uuid=device_uuid or "unregistered", hostname=task_vars.get("inventory_hostname", "?"), mode=mode,
                unlock_key=unlock.decode("utf-8") if unlock else None, officer_key=officer,
                approved_ciphers=tuple(args.get("approved_ciphers") or ("aes-xts-plain64",)),
                min_key_bits=int(args.get("min_key_bits") or 512),
                format_devices=tuple(args.get("format_devices") or ()),
                remove_unknown_slots=boolean(args.get("remove_unknown_keyslots", True), strict=False),
                linux_unlock=linux_unlock, tpm_pcr_ids=tuple(pcr_ids),
                retire_installer_key=boolean(args.get("retire_installer_passphrase", True), strict=False))
            def run(store):
                if backend == "bitlocker":
                    done = escrow.run_bitlocker(store, load_escrow_public_key(site), remote, req,
                                                args.get("inventory"))
                    return done.out, done.controls()
                out = escrow.run_luks(store, load_escrow_public_key(site), remote, req)
                return out, out.controls(escrow_applied=out.changed)

            if not device_uuid:   # check mode before registration: a dry run that reads only the laptop
                out, controls = run(None)
            else:
                with Store.open(site) as store:
                    known = store.get_device(req.hostname)
                    if known is None or known.uuid != device_uuid:
                        raise AnsibleActionFail(f"{req.hostname}: the store has no live device with uuid "
                                                f"{device_uuid}")
                    out, controls = run(store)
        except UnicodeDecodeError:
            raise AnsibleActionFail("the unlock key file is not UTF-8 text") from None
        except DeskguardError as exc:
            raise AnsibleActionFail(str(exc)) from None
        result.update(changed=out.changed, module_calls=out.module_calls, volumes=out.volumes,
                      deskguard_controls=controls)
        if out.failed:
            result.update(failed=True, msg=out.failed)
        else:
            result["msg"] = "; ".join(out.notes) or "recovery keys escrowed and matching"
        return result
