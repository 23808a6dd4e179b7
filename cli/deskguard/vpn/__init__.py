"""WireGuard enrolment on the controller: policy checks, address allocation order, gateway peer lists.

See docs/vpn.md. The laptop side (key generation, tunnel config, facts) is plugins/module_utils/deskguard_wireguard.py.
"""
