# -*- coding: utf-8 -*-
"""Action plugin: the accounts policy checked on the controller (deskguard.site.accounts_policy), then, unless only
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
            from deskguard.site import accounts_policy
        except ImportError as exc:
            raise AnsibleActionFail(f"the deskguard library is not importable here ({exc})") from None
        policy = dict(args.get("policy") or {})
        refused = accounts_policy.refusals(policy)
        if refused:
            raise AnsibleActionFail("accounts policy refused, nothing changed: " + "; ".join(refused))
        warned = accounts_policy.warnings(policy)
        if args.get("preflight_only"):
            result.update(changed=False, msg="accounts policy accepted", warnings=warned, module_calls=0)
            return result
        margs = dict(args.get("module_args") or {}, operator=accounts_policy.operator_name(policy),
                     management_user=accounts_policy.management_name(policy))
        out = self._execute_module(module_name="deskguard_accounts", module_args=margs, task_vars=task_vars)
        out["warnings"] = list(out.get("warnings") or []) + warned
        result.update(out, module_calls=1)
        if not out.get("failed"):
            result["deskguard_controls"] = controls_changed(out)
        return result


# Which control each changed file belongs to (by the words in its path), for the onboarding summary.
PATH_CONTROLS = (("pwquality", "ACC-002"), ("pwhistory", "ACC-002"), ("faillock", "ACC-003"),
                 ("lightdm", "ACC-004"), ("gdm", "ACC-004"), ("ssh", "ACC-005"), ("sudoers", "ACC-005"))


def controls_changed(out: dict) -> dict:
    touched = {cid for f in out.get("files") or [] for word, cid in PATH_CONTROLS if word in f.get("path", "")}
    if out.get("groups_removed"):
        touched.add("ACC-001")
    if out.get("pam_updated"):
        touched.update(("ACC-002", "ACC-003"))
    neutralised = [f"neutralised in {f['path']}: {'; '.join(f['lines'])}"
                   + (f" (original kept as {f['backup']})" if f.get("backup") else "")
                   for f in out.get("sshd_neutralised") or []]
    if neutralised:
        touched.add("ACC-005")
    return {cid: {"state": "applied" if cid in touched else "compliant",
                  "findings": neutralised if cid == "ACC-005" else []}
            for cid in ("ACC-001", "ACC-002", "ACC-003", "ACC-004", "ACC-005")}
