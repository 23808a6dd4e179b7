#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: the laptop's network environment now (tethering, Wi-Fi security, VPN, call system), read-only."""

from __future__ import annotations

DOCUMENTATION = r"""
module: deskguard_network_posture
short_description: Read the laptop's network environment and probe the call system, changing nothing
description:
  - Classifies the link that carries the default route (wired, Wi-Fi, a phone's USB or Bluetooth tethering,
    mobile broadband) from sysfs, NetworkManager and DHCP leases; reads the Wi-Fi network's SSID and security;
    checks that the VPN is up and carries the call system's routes; resolves the call system's names, times a
    TCP connect to each of its ports, and takes short RTT / jitter / loss samples (TCP handshakes).
  - Finishes within I(time_limit) seconds (plus at most one probe timeout). What it cannot determine is listed
    in C(network.unknown) and never reported as good. The controller judges the result (NET-001..003).
  - Never changes anything, in check mode or not.
options:
  targets:
    description: "The call system's hosts and TCP ports, e.g. C([{host: cti.example.com, ports: [5061, 443]}])."
    type: list
    elements: dict
    default: []
  vpn_interface: {description: The VPN's interface (empty to skip the VPN check)., type: str, default: wg0}
  time_limit: {description: Overall limit in seconds., type: float, default: 10}
  probe_timeout:
    description: Limit for one probe (a command, a DNS lookup, a TCP connect) in seconds.
    type: float
    default: 2
  samples: {description: RTT samples (TCP connects) to the first open call-system port., type: int, default: 10}
  sample_timeout: {description: A sample unanswered after this many seconds counts as lost., type: float, default: 0.9}
author: deskguard
"""

EXAMPLES = r"""
- name: NET-003 | AUDIT | Network environment and call system
  deskguard_network_posture:
    targets: [{host: cti.example.com, ports: [5061, 443]}]
    vpn_interface: wg0
"""

RETURN = r"""
network: {description: The observed network environment (see docs/netcheck.md)., type: dict, returned: always}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible.module_utils.deskguard_network import gather


def main():
    module = AnsibleModule(
        argument_spec=dict(targets=dict(type="list", elements="dict", default=[]),
                           vpn_interface=dict(type="str", default="wg0"),
                           time_limit=dict(type="float", default=10.0), probe_timeout=dict(type="float", default=2.0),
                           samples=dict(type="int", default=10), sample_timeout=dict(type="float", default=0.9)),
        supports_check_mode=True,
    )
    p = module.params
    for t in p["targets"]:
        if not isinstance(t.get("host"), str) or not t["host"] or \
                not all(str(port).isdigit() and 0 < int(port) < 65536 for port in t.get("ports") or []):
            module.fail_json(msg="each target needs a host name and TCP ports 1-65535, got %r" % (t,))
    if not 0 < p["time_limit"] <= 120 or not 0 < p["probe_timeout"] <= p["time_limit"]:
        module.fail_json(msg="time_limit must be in (0, 120] s and probe_timeout in (0, time_limit]")
    module.exit_json(changed=False, network=gather(
        p["targets"], p["vpn_interface"], p["time_limit"], p["probe_timeout"], max(0, min(p["samples"], 50)),
        p["sample_timeout"]))


if __name__ == "__main__":
    main()
