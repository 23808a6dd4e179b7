#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: the laptop's WireGuard key and tunnel in one round trip (VPN-001, VPN-003)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: deskguard_wireguard
short_description: Make the laptop's WireGuard key here, write its tunnel config and kill switch, bring it up
description:
  - The private key is generated on the laptop (C(wg genkey)), stored 0600 root, and never returned, logged or
    put in a wg-quick config (PostUp loads it). Only the public key is returned.
  - wg-quick where NetworkManager does not manage the network, else a NetworkManager keyfile.
  - New files are validated (C(wg-quick strip), C(nft -c)) before they replace the old ones; a tunnel that does
    not come up is put back as it was. With O(rollback_seconds) a timer restores the previous tunnel unless the
    play confirms the management channel (C(systemctl stop deskguard-vpn-rollback.timer)).
  - Returns the VPN-001..003 facts after the change (one round trip for apply and check).
  - Driven by the controller-side action C(deskguard_vpn), which allocates the address; see docs/vpn.md.
options:
  interface: {description: Tunnel interface name., type: str, default: wg0}
  address: {description: The laptop's tunnel address (from the store's pool)., type: str, required: true}
  gateway_public_key: {description: The gateway's public key., type: str, required: true}
  endpoint: {description: The gateway's host:port., type: str, required: true}
  allowed_ips: {description: Networks routed into the tunnel., type: list, elements: str, required: true}
  dns: {description: Resolvers and search domains for the tunnel., type: list, elements: str, default: []}
  mtu: {description: Tunnel MTU., type: int, default: 1420}
  keepalive: {description: PersistentKeepalive seconds (0 off)., type: int, default: 25}
  kill_switch: {description: Block traffic outside the tunnel (VPN-003)., type: bool, default: false}
  kill_switch_captive_ports: {description: Ports left open for captive-portal sign-in ("53/udp")., type: list, elements: str, default: []}
  management_networks: {description: Networks IT manages the laptop from outside the tunnel (always reachable)., type: list, elements: str, default: []}
  rotate: {description: Make a new key pair (the old one is kept for the rollback only)., type: bool, default: false}
  rollback_seconds: {description: Arm the rollback timer (when the management channel runs over this tunnel); 0 off., type: int, default: 0}
  backend: {description: "auto (NetworkManager if it runs), wg-quick or networkmanager.", type: str, default: auto}
  implementation:
    description:
      - "kernel (the WireGuard module), userspace (wireguard-go through wg-quick, for kernels without the module,
        e.g. containers) or auto (kernel if the kernel has it, else userspace). A choice the laptop cannot honour
        fails and changes nothing; the choice is returned."
    type: str
    default: auto
  handshake_max_age: {description: VPN-002 threshold in seconds., type: int, default: 180}
author: deskguard
"""

EXAMPLES = r"""
# Normally called by the deskguard_vpn action, which allocates the address in the store first.
- name: VPN-001 | PATCH | Tunnel to the company gateway, key made on the laptop
  deskguard_wireguard:
    address: 10.77.0.12
    gateway_public_key: "{{ vpn_gateway_public_key }}"
    endpoint: vpn.example.com:51820
    allowed_ips: [10.77.0.0/24, 10.20.0.0/16]
    kill_switch: true
    kill_switch_captive_ports: ["53/udp", "80/tcp", "443/tcp"]
    management_networks: [10.8.0.0/16]
"""

RETURN = r"""
public_key: {description: The laptop's public key., type: str, returned: always}
backend: {description: wg-quick or networkmanager., type: str, returned: always}
implementation: {description: kernel or userspace (wireguard-go)., type: str, returned: always}
implementation_reason: {description: Why that implementation., type: str, returned: always}
files: {description: Files that differed (would change in check mode)., type: list, returned: always}
rollback_armed: {description: Whether the rollback timer was armed., type: bool, returned: always}
controls: {description: VPN-001..003 after the run (see deskguard_vpn_facts)., type: dict, returned: always}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible.module_utils.deskguard_vpn_facts import evaluate, gather
from ansible.module_utils.deskguard_wireguard import KILL_SWITCH_TABLE, Paths, WireGuardError
from ansible.module_utils.deskguard_wireguard_apply import converge


def main():
    module = AnsibleModule(
        argument_spec=dict(
            interface=dict(type="str", default="wg0"), address=dict(type="str", required=True),
            gateway_public_key=dict(type="str", required=True), endpoint=dict(type="str", required=True),
            allowed_ips=dict(type="list", elements="str", required=True),
            dns=dict(type="list", elements="str", default=[]), mtu=dict(type="int", default=1420),
            keepalive=dict(type="int", default=25), kill_switch=dict(type="bool", default=False),
            kill_switch_captive_ports=dict(type="list", elements="str", default=[]),
            management_networks=dict(type="list", elements="str", default=[]),
            rotate=dict(type="bool", default=False), rollback_seconds=dict(type="int", default=0),
            backend=dict(type="str", default="auto", choices=["auto", "wg-quick", "networkmanager"]),
            implementation=dict(type="str", default="auto", choices=["auto", "kernel", "userspace"]),
            handshake_max_age=dict(type="int", default=180),
        ),
        supports_check_mode=True,
    )
    p = module.params
    paths = Paths(p["interface"])
    try:
        result = converge(p, paths, check_mode=module.check_mode,
                          backend=None if p["backend"] == "auto" else p["backend"])
    except (WireGuardError, OSError) as exc:
        module.fail_json(msg=str(exc))
    facts = gather(p["interface"], paths.key, [paths.conf, paths.nm], KILL_SWITCH_TABLE)
    result["controls"] = evaluate(facts, {"gateway_public_key": p["gateway_public_key"],
                                          "kill_switch": p["kill_switch"],
                                          "handshake_max_age": p["handshake_max_age"]})
    module.exit_json(**result)


if __name__ == "__main__":
    main()
