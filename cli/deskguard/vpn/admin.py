"""Controller-side VPN operations the CLI runs: key rotation through its playbook."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError


def rotate(site: Path, hostname: str, progress=None):
    """Run playbooks/vpn_rotate.yml for one laptop; returns (PlaybookResult, summary row)."""
    from ..site import inventory
    from ..runner import run_playbook
    from ..store import Store
    from .gateway import limit_with_gateways

    if hostname not in inventory.list_hosts(site):
        raise UsageError(f"{hostname} is not in the inventory (see `deskguard devices list`)")
    with Store.open(site) as store:
        device = store.require_device(hostname)
        before = store.vpn_peer(device.uuid)
    if before is None or not before.public_key:
        raise UsageError(f"{hostname} has no enrolled VPN key to rotate; onboard it with vpn_enabled: true first")
    result = run_playbook(site, "vpn_rotate.yml", [inventory.hosts_file(site)], limit=limit_with_gateways(site, hostname),
                          extravars={"deskguard_hosts": hostname}, progress=progress)
    with Store.open(site) as store:
        after = store.vpn_peer(device.uuid)
    outcome = result.hosts.get(hostname)
    rotated = after is not None and after.public_key != before.public_key
    state = "unreachable" if outcome and outcome.unreachable else ("rotated" if rotated else "not rotated")
    return result, {"host": hostname, "state": state, "address": after.address if after else None,
                    "public_key": after.public_key if after else None,
                    "messages": list(outcome.messages) if outcome else []}


def gateway_hosts(site: Path) -> list[str]:
    """The inventory's VPN gateways (the group may be absent: none)."""
    from ..site import inventory
    from .gateway import GATEWAY_GROUP

    inventory.require_site(site)
    return inventory.match_hosts(site, GATEWAY_GROUP) if inventory.has_group(site, GATEWAY_GROUP) else []


def push_gateways(site: Path, progress=None):
    """Run playbooks/vpn_gateway.yml: every gateway in the inventory group carries exactly the enrolled laptops
    (after a device removal, its peer is dropped here)."""
    from ..site import inventory
    from ..runner import run_playbook
    from .gateway import GATEWAY_GROUP

    return run_playbook(site, "vpn_gateway.yml", [inventory.hosts_file(site)], limit=GATEWAY_GROUP, progress=progress)
