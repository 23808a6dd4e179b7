# -*- coding: utf-8 -*-
"""Action plugin (controller only, no round trip): record the acknowledgement a laptop's agent signed for an
order given to it by playbooks/wipe.yml, exactly as `deskguard serve` would (deskguard.orders.agent.record_ack:
signature by the device's registered key, fields, clock, order state). The play carries the order out only
when this step says `accepted`: acknowledged before acting, online or not.
"""

from __future__ import annotations

import json
import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

DOCUMENTATION = r"""
action: deskguard_order_ack
short_description: Record a laptop's signed acknowledgement of an order in the store
options:
  answer: {description: The agent's `ack` output (JSON with status, reason and the signed ack)., type: str, required: true}
"""


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("answer",))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        hostname = task_vars.get("inventory_hostname", "?")
        device_uuid = task_vars.get("deskguard_device_uuid")
        try:
            answer = json.loads(self._task.args["answer"])
        except (KeyError, TypeError, ValueError):
            raise AnsibleActionFail(f"{hostname}: the agent gave no readable answer to the order") from None
        if answer.get("status") == "cancelled":
            result.update(changed=False, status="cancelled", order_id=answer.get("order_id"))
            return result
        if not answer.get("ack"):
            # Forged or foreign orders get no signed answer: nothing to record, nothing will be done.
            result.update(changed=False, status=answer.get("status"), reason=answer.get("reason"))
            result["failed"] = True
            result["msg"] = f"{hostname} refused the order: {answer.get('reason')}"
            return result
        try:
            from deskguard.orders import agent
            from deskguard.errors import DeskguardError
            from deskguard.site import site_dir
            from deskguard.store import Store
        except ImportError as exc:
            raise AnsibleActionFail(f"the deskguard library is not importable here ({exc})") from None
        try:
            with Store.open(site_dir(os.environ.get("DESKGUARD_SITE"))) as store:
                rec = agent.record_ack(store, device_uuid, answer["ack"])
        except DeskguardError as exc:
            raise AnsibleActionFail(f"{hostname}: {exc}") from None
        result.update(rec)
        if rec["status"] != "accepted":
            result["failed"] = True
            result["msg"] = f"{hostname} refused the order: {rec['reason']}"
        return result
