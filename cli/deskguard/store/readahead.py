"""Judging thousands of laptops in one process (the check-in-first nightly run, docs/compliance.md): what the
judges read per laptop (its live escrow secrets, keyslot baselines and VPN peer) is read ahead in a few
queries, and the `verified_at` stamps the verification writes are kept and written in one transaction at
the end, instead of three queries and a write transaction per laptop."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from sqlalchemy import select, update

from .models import KeyslotBaseline, Secret, VpnPeer, utcnow

LIVE_STATES = ("pending", "active", "mismatch")   # Store.live_secrets: may still open the device
CHUNK = 500


@dataclass
class ReadAhead:
    uuids: set[str]
    secrets: dict[str, list] = field(default_factory=dict)
    baselines: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    peers: dict[str, object] = field(default_factory=dict)
    verified: list[int] = field(default_factory=list)

    def covers(self, device_uuid: str) -> bool:
        return device_uuid in self.uuids


class ReadAheadMixin:
    _read_ahead: ReadAhead | None = None

    @contextlib.contextmanager
    def reading_ahead(self, device_uuids: Iterable[str]) -> Iterator[None]:
        """Within: live_secrets, keyslot_baselines and vpn_peer of these devices answer from memory and
        mark_secret_verified is deferred; on a clean exit the stamps are written (one transaction)."""
        uuids = sorted(set(device_uuids))
        ahead = ReadAhead(set(uuids))
        with self._session(write=False) as s:
            for i in range(0, len(uuids), CHUNK):
                chunk = uuids[i:i + CHUNK]
                for sec in s.scalars(select(Secret).where(Secret.device_uuid.in_(chunk),
                                                          Secret.state.in_(LIVE_STATES)).order_by(Secret.id)):
                    ahead.secrets.setdefault(sec.device_uuid, []).append(sec)
                for row in s.scalars(select(KeyslotBaseline).where(KeyslotBaseline.device_uuid.in_(chunk))):
                    ahead.baselines.setdefault(row.device_uuid, {})[row.luks_uuid] = row.prints()
                for peer in s.scalars(select(VpnPeer).where(VpnPeer.device_uuid.in_(chunk),
                                                            VpnPeer.state == "active").order_by(VpnPeer.id)):
                    ahead.peers.setdefault(peer.device_uuid, peer)
        self._read_ahead = ahead
        try:
            yield
        finally:
            self._read_ahead = None
        if ahead.verified:
            now = utcnow()
            with self._session(write=True) as s:
                for i in range(0, len(ahead.verified), CHUNK):
                    s.execute(update(Secret).where(Secret.id.in_(ahead.verified[i:i + CHUNK])).values(verified_at=now))

    def _ahead_for(self, device_uuid: str) -> ReadAhead | None:
        ahead = self._read_ahead
        return ahead if ahead is not None and ahead.covers(device_uuid) else None
