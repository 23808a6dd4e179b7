#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: a Linux WireGuard gateway carries exactly the enrolled laptops (wg syncconf, others kept)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: deskguard_wg_gateway
short_description: Sync the enrolled laptops' peers into a running WireGuard interface without dropping others
description:
  - C(wg syncconf) with the kit's peers plus every peer the kit did not add; established sessions stay up.
  - Peers the kit added earlier and the list no longer has (removed devices, rotated keys) are dropped.
  - Never reads or returns the gateway's private key.
options:
  interface: {description: The gateway's WireGuard interface., type: str, default: wg0}
  peers: {description: "The `peers` of `deskguard vpn gateway-config --format json`.", type: list, elements: dict, required: true}
  state_file: {description: Which peers are the kit's., type: path, default: /var/lib/deskguard/vpn-gateway.json}
  persist_file: {description: Peers file for boot (PostUp wg addconf); empty to skip., type: path, default: /etc/wireguard/deskguard-peers.conf}
author: deskguard
"""

EXAMPLES = r"""
# What playbooks/vpn_gateway.yml does with the output of `deskguard vpn gateway-config --format json`:
- name: VPN-001 | PATCH | Gateway carries exactly the enrolled laptops
  deskguard_wg_gateway:
    interface: wg0
    peers: "{{ (lookup('ansible.builtin.file', 'gw-peers.json') | from_json).peers }}"
"""

RETURN = r"""
added: {description: Public keys added., type: list, returned: always}
removed: {description: "Public keys dropped (the kit's, no longer enrolled).", type: list, returned: always}
kept_foreign: {description: How many peers the kit did not add and kept., type: int, returned: always}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible.module_utils.deskguard_wg_gateway import GatewayError, sync


def main():
    module = AnsibleModule(
        argument_spec=dict(interface=dict(type="str", default="wg0"),
                           peers=dict(type="list", elements="dict", required=True),
                           state_file=dict(type="path", default="/var/lib/deskguard/vpn-gateway.json"),
                           persist_file=dict(type="path", default="/etc/wireguard/deskguard-peers.conf")),
        supports_check_mode=True,
    )
    p = module.params
    try:
        result = sync(p["interface"], p["peers"], p["state_file"], p["persist_file"], check_mode=module.check_mode)
    except (GatewayError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
