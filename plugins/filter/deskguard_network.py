# -*- coding: utf-8 -*-
"""Controller-side filter for network values of the policy: what is not an address or a CIDR network, as
Python's ipaddress reads it (a regex lets 10.8.0.0/33 or 999.1.1.1 through). Used by the firewall role's first
assert, which `deskguard` also evaluates on the controller before any command runs."""

from __future__ import annotations

import ipaddress


def invalid_networks(entries):
    """The entries of `entries` that are not an IPv4/IPv6 address or network (host bits may be set)."""
    bad = []
    for entry in entries or []:
        try:
            ipaddress.ip_network(str(entry).strip(), strict=False)
        except ValueError:
            bad.append(entry)
    return bad


class FilterModule:
    def filters(self):
        return {"deskguard_invalid_networks": invalid_networks}
