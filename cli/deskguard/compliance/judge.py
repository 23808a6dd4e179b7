"""One laptop's collected posture (live, or from a check-in) judged against its policy: the one place that does
it, for the action plugin (a laptop in the play) and for the check-in-first pre-judging (a laptop the play never
contacts), so both score exactly alike."""

from __future__ import annotations

from . import disk, windows
from .evaluate import evaluate


def judge(store, hostname: str, uuid: str | None, policy: dict, collected: dict, windows_host: bool) -> list:
    """The control results. store: the open site store (None for a host without a device id); windows_host:
    the host is reached over a PowerShell connection (its posture is judged as Windows even when the laptop
    could not say its family)."""
    posture, errors = collected.get("posture") or {}, collected.get("errors") or {}
    posture = windows.known_family(posture, windows_host)
    if store is not None and policy.get("vpn_enabled"):
        peer = store.vpn_peer(uuid)
        policy = {**policy, "vpn_enrolled_public_key": peer.public_key if peer else None}
    # The disk inventory was collected with the posture: the verification needs no second call.
    outcome = disk.verify(store, uuid, hostname, posture, policy) if "disk" in posture else None
    return evaluate(hostname, posture, errors, policy, outcome)
