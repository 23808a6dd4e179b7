#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: converge several whole files in one round trip (see module_utils/deskguard_files.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: deskguard_files
short_description: Converge several whole files, validated and atomic, in one round trip
description:
  - Compares each file with its desired content, owner, group and mode; writes only those that differ,
    each validated before it replaces the old one and replaced atomically; then runs follow-up commands
    (for example C(dconf update)) only if something changed.
  - In check mode it reports what would change and changes nothing.
options:
  files:
    description: Files to converge.
    type: list
    elements: dict
    required: true
    suboptions:
      path: {description: Absolute path., type: path, required: true}
      content: {description: Whole desired content., type: str, default: ""}
      mode: {description: Octal mode as a string., type: str, default: "0644"}
      owner: {description: Owner., type: str, default: root}
      group: {description: Group., type: str, default: root}
      state: {description: C(present) or C(absent)., type: str, choices: [present, absent], default: present}
      validate:
        description: Command (argv list) run on the new file before it replaces the old; C(%s) is its path.
        type: list
        elements: str
  commands_if_changed:
    description: Commands (argv lists) run in order after a file changed; a failure fails the task.
    type: list
    elements: list
    default: []
  enable_units:
    description: systemd units that must be enabled and active (enabled with C(--now) if not).
    type: list
    elements: str
    default: []
author: deskguard
"""

EXAMPLES = r"""
- name: LCK-001 | PATCH | Idle lock policy
  deskguard_files:
    files:
      - path: /etc/dconf/db/local.d/00-deskguard-screenlock
        content: "{{ lookup('template', 'screenlock.dconf.j2') }}"
    commands_if_changed: [[dconf, update]]
"""

RETURN = r"""
files:
  description: The files that differed and why (create, content, attributes, remove).
  type: list
  returned: always
units:
  description: Units that were (or in check mode would be) enabled and started.
  type: list
  returned: always
commands:
  description: Follow-up commands run, with rc and output.
  type: list
  returned: changed
"""

from ansible.module_utils.basic import AnsibleModule

from ansible.module_utils.deskguard_files import FilesError, apply


def main():
    module = AnsibleModule(
        argument_spec=dict(
            files=dict(type="list", elements="dict", required=True, options=dict(
                path=dict(type="path", required=True),
                content=dict(type="str", default=""),
                mode=dict(type="str", default="0644"),
                owner=dict(type="str", default="root"),
                group=dict(type="str", default="root"),
                state=dict(type="str", choices=["present", "absent"], default="present"),
                validate=dict(type="list", elements="str"),
            )),
            commands_if_changed=dict(type="list", elements="list", default=[]),
            enable_units=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    try:
        result = apply(module.params["files"], module.params["commands_if_changed"], module.check_mode,
                       module.params["enable_units"])
    except (FilesError, OSError, KeyError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
