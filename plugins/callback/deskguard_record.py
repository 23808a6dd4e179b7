# -*- coding: utf-8 -*-
"""Callback plugin: records a compliance run (results of deskguard_comply steps) into the store.

Enabled in ansible.cfg, so a comply run is recorded whoever starts it: `deskguard comply`, AWX, or plain
ansible-playbook. It records only plays that ran deskguard_comply; hosts that were unreachable or whose
collection failed are recorded with that state, never as compliant. The store comes from DESKGUARD_DB_URL
or DESKGUARD_SITE; DESKGUARD_RUN_ID / DESKGUARD_RUN_SOURCE name the run (the CLI sets them). Under AWX job
slicing every slice is a job of one workflow: the run is named after the workflow (`awx_workflow_job_id`,
which AWX gives each job of a workflow as an extra variable), so the slices record into one run.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: deskguard_record
type: aggregate
short_description: Record deskguard compliance runs into the deskguard store
description: Stores every host's control results of a comply play as one run (one transaction).
requirements: [the deskguard library in the controller's Python]
"""

COMPLY_ACTIONS = ("deskguard_comply",)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "deskguard_record"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.hosts = {}
        self.started = None
        self.run_id = None

    def _is_comply(self, result) -> bool:
        return result._task.action.rsplit(".", 1)[-1] in COMPLY_ACTIONS

    def v2_playbook_on_start(self, playbook):
        from deskguard.store.models import utcnow

        self.started = utcnow()

    def v2_playbook_on_play_start(self, play):
        workflow = (play.get_variable_manager().extra_vars or {}).get("awx_workflow_job_id")
        if workflow not in (None, "") and str(workflow).isdigit():
            self.run_id = f"awx-workflow-{workflow}"

    def v2_runner_on_ok(self, result):
        from deskguard.store.models import utcnow

        data = result._result.get("deskguard_compliance")
        if self._is_comply(result) and data:
            from deskguard.compliance.runs import HostRecord

            at = data.get("evidence_at")
            self.hosts[result._host.get_name()] = HostRecord(
                "stale" if data.get("stale") else "ok", data["results"], data["summary"], message=data.get("message"),
                device_uuid=data.get("device_uuid"), source=data.get("source") or "live",
                evidence_at=dt.datetime.fromisoformat(at.rstrip("Z")) if at else utcnow())

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if self._is_comply(result):
            from deskguard.compliance.runs import HostRecord

            self.hosts[result._host.get_name()] = HostRecord("failed", message=str(result._result.get("msg"))[:2000])

    def v2_runner_on_unreachable(self, result):
        if self._is_comply(result):
            from deskguard.compliance.runs import HostRecord

            self.hosts[result._host.get_name()] = HostRecord("unreachable",
                                                             message=str(result._result.get("msg"))[:2000])

    def v2_playbook_on_stats(self, stats):
        try:
            # Hosts `deskguard comply` judged from fresh check-ins before the play (check-in first): same run.
            from deskguard.compliance.checkin_first import PREJUDGED_ENV, read_prejudged

            self.hosts = {**read_prejudged(os.environ.get(PREJUDGED_ENV)), **self.hosts}
        except Exception as exc:  # noqa: BLE001  recorded without them would be a run that lies by omission
            self._display.error(f"deskguard: the compliance run was NOT recorded: {exc}")
            return
        if not self.hosts:
            return
        try:
            from deskguard.compliance.runs import record
            from deskguard.site import site_dir
            from deskguard.store import Store

            with Store.open(site_dir(os.environ.get("DESKGUARD_SITE"))) as store:
                record(store, os.environ.get("DESKGUARD_RUN_ID") or self.run_id or str(uuid.uuid4()), self.started,
                       os.environ.get("DESKGUARD_RUN_SOURCE", "ansible"), self.hosts)
        except Exception as exc:  # the play's own result must still show; say loudly that nothing was kept
            self._display.error(f"deskguard: the compliance run was NOT recorded: {exc}")
