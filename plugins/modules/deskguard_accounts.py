#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: ACC-001..005 on a Linux laptop in one round trip (see module_utils/deskguard_accounts_apply.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: deskguard_accounts
short_description: Operator as a standard user, password and lockout rules, key-only management login
description:
  - Refuses, before any change, an operator account that does not exist and a management account without an
    authorized SSH key.
  - Removes the operator from the privileged groups, converges the password quality, history and lockout files,
    the login screen, the sshd drop-in (validated with C(sshd -t)) and the sudoers drop-in (validated with
    C(visudo -cf)), enables the PAM profiles and reloads sshd.
  - Comments out, in other sshd drop-ins, the settings of keywords the kit's drop-in sets that would beat it
    (in a file that sorts before it, or in a Match block), after keeping a copy of the file in
    C(/var/lib/deskguard/accounts-backup); C(sshd -T) then shows the kit's values.
  - Arms a rollback timer (C(deskguard-accounts-rollback.timer)) that restores the login files unless the play
    confirms the management channel with a new connection and stops it.
  - In check mode it reports what would change and changes nothing.
options:
  operator: {description: The operator's account., type: str, required: true}
  management_user: {description: The account Ansible connects as., type: str, required: true}
  privileged_groups: {description: Groups the operator is removed from., type: list, elements: str, required: true}
  standard_users: {description: Other accounts also removed from the privileged groups., type: list, elements: str, default: []}
  allow_groups: {description: sshd AllowGroups; the management account must be in one., type: list, elements: str, default: []}
  files:
    description: Whole files to converge (as for deskguard_files; C(validate) runs on the new file; a file with
      C(when_dir) is written only where that folder exists).
    type: list
    elements: dict
    required: true
  gdm_conf: {description: GDM's configuration file; edited only if it exists., type: str}
  gdm_settings: {description: "Keys set in its [daemon] section.", type: dict, default: {}}
  pam_profiles: {description: pam-auth-update profiles to enable., type: list, elements: str, default: []}
  pam_markers: {description: "PAM file name -> modules it must carry after the update.", type: dict, default: {}}
  pam_files: {description: PAM files saved for the rollback., type: list, elements: str, default: []}
  sshd_dropin: {description: The sshd drop-in among C(files) (reload sshd when it changed)., type: str}
  sshd_service: {description: sshd's systemd unit., type: str, default: ssh}
  rollback_seconds: {description: Rollback delay; 0 arms none., type: int, default: 300}
author: deskguard
"""

EXAMPLES = r"""
- name: ACC-001 | PATCH | Accounts, passwords, lockout and the management channel
  deskguard_accounts:
    operator: tanaka
    management_user: dgadmin
    privileged_groups: [sudo, admin, wheel]
    files: []
"""

RETURN = r"""
files: {description: Files that differed and why., type: list, returned: always}
sshd_neutralised: {description: "Foreign drop-ins changed (or that would be): path, lines, backup.", type: list, returned: always}
groups_removed: {description: Privileged groups the operator was (or would be) removed from., type: list, returned: always}
pam_updated: {description: Whether pam-auth-update ran (or would run)., type: bool, returned: always}
sshd_reloaded: {description: Whether sshd was reloaded., type: bool, returned: always}
rollback_armed: {description: Whether the rollback timer was armed (the play must stop it)., type: bool, returned: always}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible.module_utils.deskguard_accounts_apply import AccountsError, apply
from ansible.module_utils.deskguard_files import FilesError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            operator=dict(type="str", required=True),
            management_user=dict(type="str", required=True),
            privileged_groups=dict(type="list", elements="str", required=True),
            standard_users=dict(type="list", elements="str", default=[]),
            allow_groups=dict(type="list", elements="str", default=[]),
            files=dict(type="list", elements="dict", required=True),
            gdm_conf=dict(type="str"),
            gdm_settings=dict(type="dict", default={}),
            pam_profiles=dict(type="list", elements="str", default=[]),
            pam_markers=dict(type="dict", default={}),
            pam_files=dict(type="list", elements="str", default=[]),
            sshd_dropin=dict(type="str"),
            sshd_service=dict(type="str", default="ssh"),
            rollback_seconds=dict(type="int", default=300),
        ),
        supports_check_mode=True,
    )
    try:
        result = apply(module.params, module.check_mode)
    except (AccountsError, FilesError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
