# -*- coding: utf-8 -*-
"""Action plugin: the deskguard_network_posture module (one call on the laptop, Linux or Windows), then NET-001..003
judged here on the controller against the host's own policy variables, so `deskguard netcheck`, AWX and plain
ansible-playbook see the same verdict. Without the deskguard library on the controller the observation is
returned unjudged."""

from __future__ import annotations

from ansible.plugins.action import ActionBase

STATE_FOR_RUNNER = {"pass": "compliant", "warn": "warning", "fail": "noncompliant", "error": "failed", "waived": "compliant",
                    "not_applicable": "not_applicable",
                    "not_checked": "warning"}   # shown with its evidence, which says what was not checked


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        collected = self._execute_module(module_name="deskguard_network_posture", module_args=self._task.args.copy(),
                                         task_vars=task_vars)
        result.update(collected)
        if collected.get("failed") or collected.get("unreachable") or "network" not in collected:
            return result
        try:
            from deskguard.compliance.network import judge_all
        except ImportError:
            return result
        policy = {k: self._templar.template(v) for k, v in task_vars.items() if k.startswith("network_posture_")}
        results = judge_all(collected["network"], policy)
        result["controls"] = [r.to_dict() for r in results]
        result["deskguard_controls"] = {r.id: {"state": STATE_FOR_RUNNER[r.status], "findings": r.evidence}
                                        for r in results}
        return result
