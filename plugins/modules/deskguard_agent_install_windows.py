#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Documentation only: the module is deskguard_agent_install_windows.ps1 (Ansible reads a PowerShell module's
documentation from a .py file of the same name)."""

DOCUMENTATION = r"""
module: deskguard_agent_install_windows
short_description: Install the deskguard agent on Windows, make the device key in CNG, register its scheduled task
description:
  - The Windows twin of C(deskguard_agent_install) - the agent's files (readable by SYSTEM and Administrators
    only), the device key made in the machine's CNG key store (not exportable), and the scheduled task that runs
    the agent as SYSTEM. Returns the public key only.
  - Driven by the controller-side action C(deskguard_agent); see docs/agent.md.
  - Not verified on a real Windows host (checked by the syntax gate and the WinRM responder only).
options:
  files:
    description:
      - Files to converge (path, content, mode; public - its folder, when made, is readable by Users, for the
        operator's toasts; otherwise SYSTEM and Administrators only).
    type: list
    elements: dict
    required: true
  device_key: {description: Name of the device key in the CNG key store., type: str, required: true}
  windows_task:
    description:
      - "The agent's scheduled task (agent_path, interval_minutes, boot_delay_seconds, jitter_seconds), and with
        notify_path the operator's task deskguard-notify: that script at each logon as the user (group Users,
        interactive), for toasts in their session; the Application log source deskguard-agent."
    type: dict
    default: {}
author: deskguard
"""

EXAMPLES = r"""
- name: AGT-001 | PATCH | Agent files, device key and scheduled task
  deskguard_agent_install_windows:
    files:
      - {path: 'C:\\ProgramData\\deskguard\\agent\\deskguard-agent.ps1', content: "..."}
    device_key: deskguard-device
    windows_task: {name: deskguard-agent, interval_minutes: 15}
"""

RETURN = r"""
public_key: {description: The device's public key (PEM)., type: str, returned: success and not check mode}
files: {description: Files that differed., type: list, returned: always}
key_created: {description: Whether the key pair was made in this run., type: bool, returned: always}
"""
