# -*- coding: utf-8 -*-
"""Action plugin: one compliance check of one laptop. One module call (deskguard_posture) collects the
posture; the judging happens here, on the controller, against the host's own policy variables, so the
same play scores the same way from the CLI, from AWX and from plain ansible-playbook.

The result carries `deskguard_compliance` (every control's status, observed, expected, evidence), which the
deskguard_record callback stores as a run, and `deskguard_controls` for the CLI's live summary. A failing
control is not a failed task: the task fails only when the posture cannot be collected or judged.
"""

from __future__ import annotations

import contextlib
import os

from ansible.errors import AnsibleActionFail, AnsibleConnectionFailure
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

# Imported here, not in run(): Ansible imports this class in ansible-playbook's main process before it forks
# a worker per laptop, so the workers inherit the compliance code and the roles' defaults instead of each
# loading them again (deskguard/compliance/preload.py; docs/compliance.md, "Performance").
try:
    from deskguard.compliance import collector, evidence
    from deskguard.compliance import policy as dgpolicy
    from deskguard.compliance.evaluate import PolicyError, host_summary
    from deskguard.compliance.judge import judge
    from deskguard.compliance.preload import preload
    from deskguard.errors import DeskguardError
    from deskguard.site import site_dir
    from deskguard.store import Store

    IMPORT_ERROR = None
except ImportError as exc:
    IMPORT_ERROR = exc
else:
    try:
        preload()
    except Exception:  # noqa: BLE001  only a speed-up: what failed here fails again in run(), with its message
        pass

STATE_FOR_RUNNER = {"pass": "compliant", "warn": "warning", "fail": "noncompliant", "error": "failed", "waived": "compliant",
                    "not_applicable": "not_applicable",
                    "not_checked": "warning"}   # shown with its evidence, which says what was not checked


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset()

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        hostname = task_vars.get("inventory_hostname")
        if IMPORT_ERROR is not None:
            raise AnsibleActionFail(f"the deskguard library is not importable here ({IMPORT_ERROR})")

        policy = dgpolicy.host_policy(task_vars, self._templar.template)
        uuid = task_vars.get("deskguard_device_uuid")
        # A PowerShell connection: a Windows laptop, read by the .ps1 module and judged as Windows.
        windows = ".ps1" in self._connection.module_implementation_preferences
        try:
            params = dgpolicy.posture_params(policy)
        except PolicyError as exc:
            raise AnsibleActionFail(f"the policy's compliance settings are unusable: {exc}") from None
        # One store per host (none for an unregistered host, e.g. check mode before onboarding): its latest
        # check-in, its enrolled VPN key and its escrow records are what the laptop is compared with.
        try:
            with Store.open(site_dir(os.environ.get("DESKGUARD_SITE"))) if uuid else contextlib.nullcontext() as store:
                checkin = None
                if store is not None and self._checkin_first(policy):
                    # The policy says a fresh check-in is enough: the laptop is not contacted at all.
                    checkin = evidence.latest_checkin(store, uuid, policy)
                    if checkin is not None and checkin.stale:
                        checkin = None
                calls, how = 0, {}
                if checkin is None:
                    try:
                        got = self._collect(params, policy, task_vars, onboarded=bool(uuid), windows=windows)
                    except AnsibleConnectionFailure as exc:
                        collected = {"unreachable": True, "msg": str(exc)}
                    else:
                        collected, calls = got.result, got.module_calls
                        how = {"collector": got.collector, **({"why_shipped": got.why_shipped} if got.why_shipped else {})}
                        agent_facts = (collected.get("posture") or {}).get("agent")
                        if got.agent_code_differs and isinstance(agent_facts, dict):
                            agent_facts["code_differs"] = got.why_shipped   # AGT-001 fails with it
                    contacted = True
                else:
                    collected, contacted = {"posture": checkin.posture, "errors": checkin.errors}, False
                if collected.get("unreachable"):
                    # A laptop that is off tonight is judged from its agent's latest check-in, marked as such.
                    checkin = evidence.latest_checkin(store, uuid, policy) if store is not None else None
                    if checkin is None:
                        result.update(unreachable=True, msg=collected.get("msg", "unreachable"))
                        return result
                    if checkin.stale:
                        result.update(changed=False, module_calls=0, deskguard_compliance={
                            "hostname": hostname, "device_uuid": uuid, "stale": True, **self._origin(checkin, True),
                            "summary": {"score": None, "compliant": False}, "results": []})
                        return result
                    collected = {"posture": checkin.posture, "errors": checkin.errors}
                elif collected.get("failed"):
                    raise AnsibleActionFail(f"collecting the posture failed: {collected.get('msg', 'no message')}")
                origin = self._origin(checkin, contacted)
                results = judge(store, hostname, uuid, policy, collected, windows)
        except PolicyError as exc:
            raise AnsibleActionFail(f"the policy's compliance settings are unusable: {exc}") from None
        except DeskguardError as exc:   # the store could not be opened or read, an escrow record is unusable
            raise AnsibleActionFail(str(exc)) from None
        summary = host_summary(results)
        result.update(
            # A check-in cost no round trip to the laptop.
            changed=False, module_calls=0 if checkin else calls, timings=collected.get("timings"),
            deskguard_compliance={"hostname": hostname, "device_uuid": uuid, "summary": summary,
                                  "results": [r.to_dict() for r in results], **origin, **how},
            deskguard_controls={r.id: {"state": STATE_FOR_RUNNER[r.status], "findings": r.evidence} for r in results})
        return result

    def _collect(self, params: dict, policy: dict, task_vars: dict, onboarded: bool, windows: bool):
        """The posture from the agent's installed collector where onboarding installed the agent (the policy
        says so and the laptop has a device id) on a Linux laptop and its code is this kit's, else from the
        shipped module (deskguard.compliance.collector)."""

        def shipped():
            return self._execute_module(module_name="deskguard_posture", module_args={"params": params},
                                        task_vars=task_vars)

        def installed(command, stdin):
            return self._low_level_execute_command(command, sudoable=True, in_data=stdin)

        use = onboarded and not windows and boolean(policy.get("endpoint_agent_enabled"), strict=False)
        return collector.collect(params, installed if use else None, shipped)

    @staticmethod
    def _checkin_first(policy: dict) -> bool:
        # `deskguard comply` judges the check-in-first hosts itself and runs this play live for the rest only.
        return os.environ.get("DESKGUARD_COMPLY_EVIDENCE") != "live" and evidence.checkin_first(policy)

    @staticmethod
    def _origin(checkin, contacted: bool) -> dict:
        if checkin is None:
            return {"source": "live", "evidence_at": None, "message": None}
        return {"source": "checkin", "evidence_at": checkin.collected_at.isoformat() + "Z",
                "message": checkin.describe(contacted)}
