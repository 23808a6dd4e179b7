# -*- coding: utf-8 -*-
"""Action plugin: the accounts policy checked on the controller (deskguard.accounts_policy), then, unless only
the check was asked for, the deskguard_accounts module on the laptop: one round trip for the whole role.

A refusal fails the task before the module runs, so nothing on the laptop changes; password and lockout
values below the kit's minimums are applied but come back as Ansible warnings.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

DOCUMENTATION = r"""
action: deskguard_accounts
short_description: Refuse an accounts policy that would cost the management channel, then apply it
options:
  policy: {description: "The accounts_* values, deskguard_operator and ansible_user.", type: dict, required: true}
  preflight_only: {description: Check the policy and stop (no module call)., type: bool, default: false}
  module_args: {description: Arguments of the deskguard_accounts module., type: dict, default: {}}
"""


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("policy", "preflight_only", "module_args"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        try:
            from deskguard import accounts_policy
        except ImportError as exc:
            raise AnsibleActionFail(f"the deskguard library is not importable here ({exc})") from None
        policy = dict(args.get("policy") or {})
        refused = accounts_policy.refusals(policy)
        if refused:
            raise AnsibleActionFail("accounts policy refused, nothing changed: " + "; ".join(refused))
        warned = accounts_policy.warnings(policy)
        if args.get("preflight_only"):
            result.update(changed=False, msg="accounts policy accepted", warnings=warned)
            return result
        margs = dict(args.get("module_args") or {}, operator=accounts_policy.operator_name(policy),
                     management_user=accounts_policy.management_name(policy))
        out = self._execute_module(module_name="deskguard_accounts", module_args=margs, task_vars=task_vars)
        out["warnings"] = list(out.get("warnings") or []) + warned
        result.update(out)
        return result
