#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: a Linux laptop's OS facts and the packages onboarding still has to install (read-only)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: deskguard_os_facts
short_description: OS facts and missing packages of a Linux laptop, in one round trip
description:
  - Sets the facts onboarding's roles use (C(os_family), C(distribution), C(distribution_version),
    C(distribution_major_version), C(pkg_mgr)), named as Ansible's C(setup) names them, from
    C(/etc/os-release) through the C(distro) library Ansible ships.
  - Lists which of the packages given for the laptop's OS family are not installed (dpkg or rpm database).
  - Fails in one line on a Linux family the kit has no tasks for. Never changes anything.
options:
  packages:
    description: Package names per OS family (C(Debian), C(RedHat)); only the laptop's family's are checked.
    type: dict
    default: {}
author: deskguard
"""

EXAMPLES = r"""
- name: BASE | AUDIT | Operating system, and the packages still missing
  deskguard_os_facts:
    packages: {Debian: [ufw, usbguard], RedHat: [firewalld, usbguard]}
  register: __onboard_os
"""

RETURN = r"""
ansible_facts: {description: "os_family, distribution, distribution_version, distribution_major_version, pkg_mgr.", type: dict, returned: success}
missing_packages: {description: "The laptop's family's packages that are not installed, in the order given.", type: list, returned: success}
"""

from ansible.module_utils import distro
from ansible.module_utils.basic import AnsibleModule

from ansible.module_utils.deskguard_os_facts import UnsupportedOS, missing_packages, os_facts


def main():
    module = AnsibleModule(argument_spec=dict(packages=dict(type="dict", default={})), supports_check_mode=True)
    try:
        facts = os_facts(distro.id(), distro.like(), distro.version(best=True), distro.name(pretty=True))
    except UnsupportedOS as exc:
        module.fail_json(msg=str(exc))
    wanted = module.params["packages"].get(facts["os_family"]) or []
    if not isinstance(wanted, list) or not all(isinstance(n, str) for n in wanted):
        module.fail_json(msg="packages.%s must be a list of package names" % facts["os_family"])
    missing = missing_packages(facts["os_family"], wanted, lambda argv: module.run_command(argv))
    module.exit_json(changed=False, ansible_facts=facts, missing_packages=missing)


if __name__ == "__main__":
    main()
