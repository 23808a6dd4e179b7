"""Deliver a published order at once when the laptop answers now: `playbooks/wipe.yml` with the order file.

The agent on the laptop checks the order exactly as it would at a check-in (the playbook hands it the file), so
both paths run the same checks. A laptop that does not answer gets the order at its next check-in.
"""

from __future__ import annotations

from pathlib import Path

from ..onboarding.preflight import Unreachable, tcp_reach
from ..runner import playbook_dir

WIPE_PLAYBOOK = "wipe.yml"
REACH_TIMEOUT = 3.0  # seconds: a laptop at home either answers at once or is off, asleep or offline


def playbook_available(site: Path) -> bool:
    return (playbook_dir(site, WIPE_PLAYBOOK) / WIPE_PLAYBOOK).exists()


def reachable(address: str, port: int, timeout: float = REACH_TIMEOUT) -> str | None:
    """None if the management port answers, else why not (one line)."""
    try:
        tcp_reach(address, port, timeout)
    except Unreachable as exc:
        return str(exc)
    return None


def run_now(site: Path, hostname: str, order_file: Path, progress=None):
    """Run wipe.yml on this one host with the order file; returns the PlaybookResult."""
    from ..site import inventory
    from ..runner import run_playbook

    return run_playbook(site, WIPE_PLAYBOOK, [inventory.hosts_file(site)], limit=hostname,
                        extravars={"deskguard_hosts": hostname, "deskguard_order_file": str(order_file)},
                        progress=progress)
