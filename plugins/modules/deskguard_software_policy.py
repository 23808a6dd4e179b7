#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: the software_policy role's whole Linux step in one round trip (SW-001..003, AV-001)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: deskguard_software_policy
short_description: Denied packages, package sources, managed browser policies and ClamAV in one call
description:
  - Refuses a denylist that names a package the kit needs, before any change.
  - Pins denied packages out (apt preferences, priority -1; dnf exclude=) and purges the installed ones, after
    proving with the package manager's dry run that no protected package goes with them.
  - Reports package sources outside the approved list; disables them only with I(sources_mode=enforce).
  - Writes the managed policy file of every installed browser (Chromium, Google Chrome, Firefox), atomically.
  - Enables ClamAV's daemon and updater when I(av_required); reports the signature age.
  - Check mode computes everything and changes nothing.
options:
  denied_packages: {description: Package names that must not be installed., type: list, elements: str, default: []}
  protected_packages:
    description: Packages the kit needs (never removable, nor taken along by a removal).
    type: list
    elements: str
    default: []
  allowed_sources: {description: Approved source URIs (prefixes)., type: list, elements: str, default: []}
  sources_mode: {description: report or enforce., type: str, choices: [report, enforce], default: report}
  browsers_enabled: {description: Write browser policies., type: bool, default: true}
  browser:
    description: "Browser settings: extension_allowlist, firefox_extension_allowlist, url_blocklist, doh_resolver."
    type: dict
    default: {}
  av_required: {description: Require ClamAV., type: bool, default: false}
  av_max_signature_age_days: {description: Oldest acceptable signatures., type: float, default: 3}
author: deskguard
"""

EXAMPLES = r"""
- name: SW-001 | PATCH | Software policy
  deskguard_software_policy:
    denied_packages: [anydesk, teamviewer]
    browser: {url_blocklist: ["example-games.com"]}
"""

RETURN = r"""
removed: {description: Denied packages that were (or in check mode would be) purged., type: list, returned: always}
files: {description: Files that differed and why., type: list, returned: always}
sources_outside: {description: Sources outside the approved list., type: list, returned: always}
sources_disabled: {description: Source files disabled (enforce mode)., type: list, returned: always}
units: {description: ClamAV units enabled and started., type: list, returned: always}
deskguard_controls: {description: State and findings per control., type: dict, returned: always}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible.module_utils.deskguard_software import PolicyError
from ansible.module_utils.deskguard_software_apply import ApplyError, apply


def main():
    module = AnsibleModule(
        argument_spec=dict(
            denied_packages=dict(type="list", elements="str", default=[]),
            protected_packages=dict(type="list", elements="str", default=[]),
            allowed_sources=dict(type="list", elements="str", default=[]),
            sources_mode=dict(type="str", choices=["report", "enforce"], default="report"),
            browsers_enabled=dict(type="bool", default=True),
            browser=dict(type="dict", default={}),
            av_required=dict(type="bool", default=False),
            av_max_signature_age_days=dict(type="float", default=3),
        ),
        supports_check_mode=True,
    )
    try:
        result = apply(module.params, module.check_mode)
    except (PolicyError, ApplyError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
