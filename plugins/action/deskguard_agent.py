# -*- coding: utf-8 -*-
"""Action plugin: install the check-in agent on a laptop and register its device key (controller side of AGT-001).

The agent's code is the kit's own module_utils, read here from their one source and sent with its units and
configuration (device UUID, pinned order-signing public key, escrowed keyslot fingerprints from the store) in
one module call (deskguard_agent_install, or deskguard_agent_install_windows). The device key pair is made on
the laptop; only the public half comes back, and it is registered in the store. Nothing secret passes here. The site comes from DESKGUARD_SITE
(or DESKGUARD_DB_URL), as for deskguard_escrow and deskguard_vpn.
"""

from __future__ import annotations

import ntpath
import os
import posixpath
from pathlib import Path

from ansible.errors import AnsibleActionFail
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

DOCUMENTATION = r"""
action: deskguard_agent
short_description: Install the check-in agent, have the laptop make its device key, register the public key
options:
  orders_url: {description: Base URL of the published orders., type: str, required: true}
  server_url: {description: Base URL of deskguard serve., type: str, required: true}
  ca_file: {description: CA bundle on the laptop (empty = system trust store)., type: str, default: ""}
  order_fetch: {description: "signed (deskguard serve) or static (any web server).", type: str, default: signed}
  allow_http: {description: "LAB ONLY: accept plain http:// URLs.", type: bool, default: false}
  timeout_seconds: {description: Seconds per request., type: int, default: 15}
  deadman_days: {description: Dead-man lock after N days without check-in (0 off)., type: int, default: 0}
  interval_minutes: {description: Minutes between runs (recorded in the configuration)., type: int, default: 15}
  modules: {description: "Names of the kit module_utils the agent is made of (.py files; .psm1 on Windows).", type: list, elements: str, required: true}
  module_utils_dir: {description: Where those files are on the controller., type: path, required: true}
  code_dir: {description: "Where they go on the laptop (default /usr/lib/deskguard-agent).", type: str}
  files: {description: Launcher and units (path, content, mode)., type: list, elements: dict, required: true}
  config_path: {description: Where the agent's configuration goes (Windows differs)., type: str}
  device_key: {description: The device key's file (Linux) or CNG key name (Windows)., type: str}
  state_dir: {description: The agent's state folder., type: str}
  windows_task: {description: "Windows: the scheduled task's settings (agent_path, interval_minutes, boot_delay_seconds, jitter_seconds).", type: dict}
"""

LIB_DIR = "/usr/lib/deskguard-agent"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("orders_url", "server_url", "ca_file", "order_fetch", "allow_http", "timeout_seconds", "deadman_days",
                             "interval_minutes", "modules", "module_utils_dir", "code_dir", "files", "config_path",
                             "device_key", "state_dir", "windows_task"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        args = self._task.args
        hostname = task_vars.get("inventory_hostname", "?")
        device_uuid = task_vars.get("deskguard_device_uuid")
        if not device_uuid:
            raise AnsibleActionFail(f"{hostname} has no deskguard_device_uuid: onboard it with `deskguard onboard` "
                                    "(the agent is pinned to its device UUID)")
        try:
            from deskguard.orders import agent
            from deskguard.compliance import policy as dgpolicy
            from deskguard.errors import DeskguardError
            from deskguard.site import site_dir
            from deskguard.store import Store
        except ImportError as exc:
            raise AnsibleActionFail(f"the deskguard library is not importable here ({exc})") from None

        # Two module names, not one name with .py and .ps1: Ansible resolves such a pair by directory order on a
        # Linux connection (its '' suffix takes the first file os.listdir returns).
        windows = ".ps1" in self._connection.module_implementation_preferences
        # The agent's code: the kit's module_utils from their one source, Python on Linux, PowerShell on Windows.
        suffix, join = (".psm1", ntpath.join) if windows else (".py", posixpath.join)
        code = []
        base = Path(args["module_utils_dir"])
        for name in args["modules"]:
            try:
                code.append({"path": join(args.get("code_dir") or LIB_DIR, name + suffix),
                             "content": (base / (name + suffix)).read_text()})
            except OSError as exc:
                raise AnsibleActionFail(f"cannot read the agent's code {base / name}{suffix}: {exc.strerror}") from None
        site = site_dir(os.environ.get("DESKGUARD_SITE"))
        device_key = args.get("device_key") or agent.DEVICE_KEY
        try:
            with Store.open(site) as store:
                device = store.get_device(hostname)
                if device is None or device.uuid != device_uuid:
                    raise AnsibleActionFail(f"{hostname}: the store has no live device with uuid {device_uuid}")
                text = agent.config(
                    device_uuid=device_uuid, installed_at=device.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    orders_url=args["orders_url"], server_url=args["server_url"],
                    order_public_key=agent.order_public_pem(site), escrowed=agent.escrowed_keyslots(store, device_uuid),
                    ca_file=args.get("ca_file") or "", order_fetch=args.get("order_fetch") or "signed",
                    allow_http=boolean(args.get("allow_http", False), strict=False),
                    timeout_seconds=int(args.get("timeout_seconds", 15)),
                    deadman_days=int(args.get("deadman_days", 0)), interval_minutes=int(args.get("interval_minutes", 15)),
                    device_key=device_key, state_dir=args.get("state_dir") or agent.STATE_DIR,
                    posture_params=dgpolicy.posture_params(dgpolicy.host_policy(task_vars, self._templar.template)))
                files = list(args["files"]) + code + [{"path": args.get("config_path") or agent.CONFIG_PATH,
                                                       "content": text, "mode": "0600"}]
                margs = {"files": files, "device_key": device_key}
                if not windows:
                    margs["bytecode_dir"] = args.get("code_dir") or LIB_DIR
                if args.get("windows_task"):
                    margs["windows_task"] = dict(args["windows_task"])
                res = self._execute_module(module_name="deskguard_agent_install_windows" if windows
                                           else "deskguard_agent_install", module_args=margs, task_vars=task_vars)
                if res.get("failed") or res.get("unreachable"):
                    result.update(res)
                    return result
                if not self._task.check_mode:
                    pem = agent.check_device_public_key(res.get("public_key"))
                    registered = agent.register_public_key(store, device_uuid, pem)
                    res["changed"] = bool(res.get("changed")) or registered
        except (DeskguardError, ValueError) as exc:   # ValueError: an unusable policy value (compliance PolicyError)
            raise AnsibleActionFail(str(exc)) from None
        result.update({k: v for k, v in res.items() if k != "invocation"})
        return result
