#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: the check-in agent's files, its device key (made here) and its timer, in one round trip."""

from __future__ import annotations

DOCUMENTATION = r"""
module: deskguard_agent_install
short_description: Install the deskguard agent, make the device key on the laptop, enable its timer
description:
  - Converges the agent's files (code, launcher, units, configuration) like C(deskguard_files) - compared,
    replaced atomically, C(systemctl daemon-reload) after a change.
  - Makes the device key pair (ECDSA P-256) if it does not exist yet, 0600 root; only the public key is returned.
  - Enables and starts C(deskguard-agent.timer) last, once the key exists.
  - Driven by the controller-side action C(deskguard_agent), which registers the public key; see docs/agent.md.
options:
  files:
    description: Files to converge (path, content, mode).
    type: list
    elements: dict
    required: true
  device_key: {description: Path of the device's private key., type: path, required: true}
  bytecode_dir:
    description:
      - The agent's code folder. Its bytecode is written here once, by C(/usr/bin/python3) (the launcher's
        interpreter), as checked-hash C(.pyc) files that Python uses only while they match their source.
    type: path
author: deskguard
"""

EXAMPLES = r"""
# Normally driven by the action deskguard_agent (roles/endpoint_agent), which also registers the public key.
- name: AGT-001 | PATCH | Agent files, device key and timer
  deskguard_agent_install:
    files:
      - {path: /usr/lib/deskguard-agent/deskguard-agent, mode: "0755", content: "#!/usr/bin/python3\n..."}
    device_key: /etc/deskguard-agent/device.key
"""

RETURN = r"""
public_key: {description: The device's public key (PEM)., type: str, returned: success and not check mode}
files: {description: Files that differed., type: list, returned: always}
key_created: {description: Whether the key pair was made in this run., type: bool, returned: always}
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible.module_utils import deskguard_bytecode
from ansible.module_utils.deskguard_agent import make_key
from ansible.module_utils.deskguard_files import FilesError, apply

TIMER = "deskguard-agent.timer"


def main():
    module = AnsibleModule(
        argument_spec=dict(
            files=dict(type="list", elements="dict", required=True, options=dict(
                path=dict(type="path", required=True), content=dict(type="str", default=""),
                mode=dict(type="str", default="0644"), owner=dict(type="str", default="root"),
                group=dict(type="str", default="root"),
                state=dict(type="str", choices=["present", "absent"], default="present"),
                validate=dict(type="list", elements="str"))),
            device_key=dict(type="path", required=True),
            bytecode_dir=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    key_missing = not os.path.exists(p["device_key"])
    try:
        result = apply(p["files"], [["systemctl", "daemon-reload"]], module.check_mode)
        if module.check_mode:
            module.exit_json(changed=result["changed"] or key_missing, files=result["files"],
                             key_created=key_missing)
        if p["bytecode_dir"]:
            written, why_not = deskguard_bytecode.write(p["bytecode_dir"])
            if why_not:
                module.warn("the agent's bytecode was not written (%s): its code is compiled on every run" % why_not)
            if written:
                result["changed"] = True
                result["files"].append({"path": os.path.join(p["bytecode_dir"], "__pycache__"),
                                        "reason": "bytecode written: %s" % ", ".join(written)})
        result["public_key"] = make_key(p["device_key"])
        enabled = apply([], [], False, enable_units=[TIMER])
    except (FilesError, OSError) as exc:
        module.fail_json(msg=str(exc))
    except ImportError as exc:
        module.fail_json(msg="python3-cryptography is missing on the laptop (%s); install it or let the role "
                             "manage packages" % exc)
    module.exit_json(changed=result["changed"] or key_missing or enabled["changed"], files=result["files"],
                     units=enabled["units"], key_created=key_missing, public_key=result["public_key"])


if __name__ == "__main__":
    main()
