#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: read-only VPN facts and the VPN-001..003 verdicts (logic in module_utils/deskguard_vpn_facts)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: deskguard_vpn_facts
short_description: Read the laptop's tunnel state and judge VPN-001 (configured), VPN-002 (recent handshake), VPN-003 (kill switch)
description:
  - Reads only; never changes anything, in check mode or not. The private key is never read into the result.
options:
  interface: {description: Tunnel interface., type: str, default: wg0}
  gateway_public_key: {description: The gateway's public key (the peer VPN-001/002 look for)., type: str, required: true}
  public_key: {description: The key the store enrolled (a different key on the laptop fails VPN-001)., type: str}
  kill_switch: {description: Whether the policy asks for the kill switch., type: bool, default: false}
  handshake_max_age: {description: VPN-002 threshold in seconds., type: int, default: 180}
author: deskguard
"""

EXAMPLES = r"""
# Normally called by the deskguard_vpn action (role vpn, `deskguard comply`); on its own:
- name: VPN-001 | AUDIT | Tunnel state of the laptop
  deskguard_vpn_facts:
    interface: wg0
    gateway_public_key: "{{ vpn_gateway_public_key }}"
    kill_switch: "{{ vpn_kill_switch }}"
    handshake_max_age: 180
  register: vpn_state
"""

RETURN = r"""
facts: {description: "What was observed (interface, peers with handshake ages, key file mode, kill switch).", type: dict, returned: always}
controls: {description: "Per control state, findings, observed and expected.", type: dict, returned: always}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible.module_utils.deskguard_vpn_facts import evaluate, gather
from ansible.module_utils.deskguard_wireguard import KILL_SWITCH_TABLE, Paths


def main():
    module = AnsibleModule(
        argument_spec=dict(interface=dict(type="str", default="wg0"),
                           gateway_public_key=dict(type="str", required=True), public_key=dict(type="str"),
                           kill_switch=dict(type="bool", default=False), handshake_max_age=dict(type="int", default=180)),
        supports_check_mode=True,
    )
    p = module.params
    paths = Paths(p["interface"])
    facts = gather(p["interface"], paths.key, [paths.conf, paths.nm], KILL_SWITCH_TABLE)
    module.exit_json(changed=False, facts=facts, controls=evaluate(facts, p))


if __name__ == "__main__":
    main()
