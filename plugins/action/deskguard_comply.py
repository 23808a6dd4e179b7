# -*- coding: utf-8 -*-
"""Action plugin: one compliance check of one laptop. One module call (deskguard_posture) collects the
posture; the judging happens here, on the controller, against the host's own policy variables, so the
same play scores the same way from the CLI, from AWX and from plain ansible-playbook.

The result carries `deskguard_compliance` (every control's status, observed, expected, evidence), which the
deskguard_record callback stores as a run, and `deskguard_controls` for the CLI's live summary. A failing
control is not a failed task: the task fails only when the posture cannot be collected or judged.
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

# Policy variables the evaluation reads (templated per host, like the roles see them).
POLICY_PREFIXES = ("screen_lock_", "firewall_", "auto_update_", "disk_encryption_", "usb_control_", "vpn_",
                   "network_posture_", "deskguard_waivers")
STATE_FOR_RUNNER = {"pass": "compliant", "fail": "noncompliant", "error": "failed", "waived": "compliant",
                    "not_applicable": "not_applicable"}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset()

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        hostname = task_vars.get("inventory_hostname")
        try:
            from deskguard import escrow
            from deskguard.compliance.evaluate import PolicyError, evaluate, host_summary
            from deskguard.errors import DeskguardError
            from deskguard.site import site_dir
            from deskguard.store import Store
        except ImportError as exc:
            raise AnsibleActionFail(f"the deskguard library is not importable here ({exc})") from None

        collected = self._execute_module(module_name="deskguard_posture", module_args={}, task_vars=task_vars)
        if collected.get("failed") or collected.get("unreachable"):
            raise AnsibleActionFail(f"collecting the posture failed: {collected.get('msg', 'no message')}")
        posture, errors = collected.get("posture") or {}, collected.get("errors") or {}
        policy = {k: self._templar.template(v) for k, v in task_vars.items() if k.startswith(POLICY_PREFIXES)}
        uuid = task_vars.get("deskguard_device_uuid")
        try:
            outcome = None
            if "disk" in posture:
                req = escrow.Request(device_uuid=uuid or "unregistered", hostname=hostname, mode="verify",
                                     approved_ciphers=tuple(policy.get("disk_encryption_approved_ciphers")
                                                            or ("aes-xts-plain64",)),
                                     min_key_bits=int(policy.get("disk_encryption_min_key_bits") or 512))
                # The disk inventory was collected with the posture: the verification needs no second call.
                remote = lambda module, args: posture["disk"]  # noqa: E731
                if uuid:
                    with Store.open(site_dir(os.environ.get("DESKGUARD_SITE"))) as store:
                        outcome = escrow.run_luks(store, None, remote, req)
                else:
                    outcome = escrow.run_luks(None, None, remote, req)
                outcome.module_calls = 0
            results = evaluate(hostname, posture, errors, policy, outcome)
        except PolicyError as exc:
            raise AnsibleActionFail(f"the policy's compliance settings are unusable: {exc}") from None
        except DeskguardError as exc:
            raise AnsibleActionFail(str(exc)) from None
        summary = host_summary(results)
        result.update(
            changed=False, module_calls=1, timings=collected.get("timings"),
            deskguard_compliance={"hostname": hostname, "device_uuid": uuid, "summary": summary,
                                  "results": [r.to_dict() for r in results]},
            deskguard_controls={r.id: {"state": STATE_FOR_RUNNER[r.status], "findings": r.evidence} for r in results})
        return result
