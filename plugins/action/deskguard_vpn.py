# -*- coding: utf-8 -*-
"""Action plugin: enrol or rotate a laptop's WireGuard tunnel (controller side of VPN-001/VPN-003).

The address comes from the store (deskguard.vpn.enrol, which owns the order of steps); the key is made on the
laptop by the deskguard_wireguard module and only its public half comes back. Nothing secret passes here.
The site comes from DESKGUARD_SITE (or DESKGUARD_DB_URL), as for deskguard_escrow.
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

DOCUMENTATION = r"""
action: deskguard_vpn
short_description: Allocate the laptop's VPN address, have it make its key and bring the tunnel up
options:
  policy: {description: The vpn_* policy values (checked here before anything changes)., type: dict, required: true}
  mode: {description: apply (enrol, converge) or rotate (new key pair)., type: str, default: apply}
  rollback_seconds: {description: Rollback delay when the management channel runs through the tunnel., type: int, default: 300}
  captive_ports: {description: Ports the kill switch leaves open for captive-portal sign-in., type: list, elements: str}
  backend: {description: auto, wg-quick or networkmanager., type: str, default: auto}
  implementation: {description: "Linux: auto, kernel or userspace (wireguard-go).", type: str, default: auto}
"""


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("policy", "mode", "rollback_seconds", "captive_ports", "backend",
                             "implementation"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self._task.args
        mode = args.get("mode", "apply")
        if mode not in ("apply", "rotate"):
            raise AnsibleActionFail(f"mode must be apply or rotate, not {mode!r}")
        if self._task.check_mode:
            mode = "check"
        hostname = task_vars.get("inventory_hostname", "?")
        device_uuid = task_vars.get("deskguard_device_uuid")
        if not device_uuid and mode != "check":
            raise AnsibleActionFail(f"{hostname} has no deskguard_device_uuid: it is not in the store; onboard it "
                                    "with `deskguard onboard` (the VPN address is allocated per device)")
        try:
            from deskguard.errors import DeskguardError
            from deskguard.site import site_dir
            from deskguard.store import Store
            from deskguard.vpn import enrol
            from deskguard.vpn.settings import from_policy
        except ImportError as exc:
            raise AnsibleActionFail(f"the deskguard library is not importable here ({exc})") from None

        def remote(module: str, margs: dict) -> dict:
            res = self._execute_module(module_name=module, module_args=margs, task_vars=task_vars)
            if res.get("failed") or res.get("unreachable"):
                raise enrol.VpnRefused(f"{hostname}: {res.get('msg') or module + ' failed'}")
            return res

        try:
            settings = from_policy(dict(args.get("policy") or {}))
            req = enrol.Request(device_uuid=device_uuid or "unregistered", hostname=hostname, settings=settings,
                                mode=mode, management_address=str(task_vars.get("ansible_host") or hostname),
                                rollback_seconds=int(args.get("rollback_seconds", 300)),
                                captive_ports=tuple(args.get("captive_ports") or ()),
                                backend=args.get("backend", "auto"),
                                implementation=args.get("implementation", "auto"))
            if not device_uuid:
                out = enrol.run(None, remote, req)
            else:
                with Store.open(site_dir(os.environ.get("DESKGUARD_SITE"))) as store:
                    known = store.get_device(hostname)
                    if known is None or known.uuid != device_uuid:
                        raise AnsibleActionFail(f"{hostname}: the store has no live device with uuid {device_uuid}")
                    out = enrol.run(store, remote, req)
        except DeskguardError as exc:
            raise AnsibleActionFail(str(exc)) from None
        result.update(changed=out.changed, address=out.address, public_key=out.public_key,
                      implementation=out.implementation,
                      rollback_armed=out.rollback_armed, management_over_vpn=out.management_over_vpn,
                      deskguard_controls=out.controls,
                      msg="; ".join(out.notes) or f"tunnel {settings.interface} at {out.address}")
        return result
