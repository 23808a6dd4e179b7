"""The store's VPN part: tunnel addresses from a pool, one per device, and the peers' public keys.

Mixed into ``Store``. Uniqueness is the database's job (partial unique indexes on active rows, migration
0004): SQLite writers are serialised by BEGIN IMMEDIATE, and on PostgreSQL a second admin who picked the
same free address gets an IntegrityError and simply tries the next one.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import DeskguardError, UsageError
from .models import Device, VpnPeer, utcnow

# How often an allocation retries after losing a race for an address (PostgreSQL only; SQLite never races).
_RACE_RETRIES = 20


class VpnPoolExhausted(DeskguardError):
    """Every address of the pool is taken: exit 4 with the pool's size and what to do."""


class VpnPeersMixin:
    def allocate_vpn_address(self, device_uuid: str, pool: str, *, reserved: Iterable[str] = (),
                             actor: str | None = None) -> VpnPeer:
        """The device's active peer in ``pool`` if it has one (idempotent), else a new one with the lowest free
        host address. A peer in another pool (the policy's pool changed) is revoked and replaced."""
        net = ipaddress.ip_network(pool, strict=True)
        skip = {str(ipaddress.ip_address(a)) for a in reserved}
        with self._session(write=True) as s:
            device = s.get(Device, device_uuid)
            if device is None or device.state == "removed":
                raise UsageError(f"no live device with uuid {device_uuid!r} in the store")
            current = _active(s, device_uuid)
            if current is not None and current.pool == str(net):
                return current
            if current is not None:
                self._revoke(s, current, device, actor, reason=f"pool changed to {net}")
            for _ in range(_RACE_RETRIES):
                address = _lowest_free(s, net, skip)
                peer = VpnPeer(device_uuid=device_uuid, pool=str(net), address=address, state="active",
                               created_at=utcnow())
                try:
                    # Added inside the savepoint, so losing the race to another admin (PostgreSQL: the unique
                    # index refuses the address) rolls back only this row and the session stays usable.
                    with s.begin_nested():
                        s.add(peer)
                        s.flush()
                except IntegrityError:
                    continue
                self._append_audit(s, actor, "vpn.allocate", device.hostname,
                                   {"uuid": device_uuid, "peer_id": peer.id, "pool": str(net), "address": address})
                return peer
            raise DeskguardError(f"could not allocate an address in {net}: other admins kept taking the free "
                                 "ones; try again")

    def set_vpn_public_key(self, peer_id: int, public_key: str, *, actor: str | None = None,
                           reason: str = "enrol") -> VpnPeer:
        """Record the key the laptop reported (audited when it changes; a public key is not a secret)."""
        with self._session(write=True) as s:
            peer = s.get(VpnPeer, peer_id)
            if peer is None or peer.state != "active":
                raise UsageError(f"no active VPN peer #{peer_id} in the store")
            if peer.public_key != public_key:
                old = peer.public_key
                peer.public_key = public_key
                peer.key_changed_at = utcnow()
                s.flush()
                device = s.get(Device, peer.device_uuid)
                self._append_audit(s, actor, "vpn.key", device.hostname,
                                   {"uuid": peer.device_uuid, "peer_id": peer.id, "reason": reason,
                                    "old_public_key": old, "public_key": public_key})
            return peer

    def vpn_peer(self, device_uuid: str) -> VpnPeer | None:
        """The device's active peer, if any."""
        if ahead := self._ahead_for(device_uuid):
            return ahead.peers.get(device_uuid)
        with self._session(write=False) as s:
            return _active(s, device_uuid)

    def list_vpn_peers(self, *, pool: str | None = None, include_revoked: bool = False) -> list[tuple[VpnPeer, Device]]:
        """Peers with their devices, by address order within each pool."""
        with self._session(write=False) as s:
            q = select(VpnPeer, Device).join(Device, Device.uuid == VpnPeer.device_uuid)
            if pool is not None:
                q = q.where(VpnPeer.pool == str(ipaddress.ip_network(pool, strict=True)))
            if not include_revoked:
                q = q.where(VpnPeer.state == "active")
            rows = [(p, d) for p, d in s.execute(q)]
        return sorted(rows, key=lambda r: (r[0].pool, ipaddress.ip_address(r[0].address).packed, r[0].id))

    def revoke_vpn_peer(self, device_uuid: str, *, reason: str, actor: str | None = None) -> VpnPeer | None:
        with self._session(write=True) as s:
            peer = _active(s, device_uuid)
            if peer is not None:
                self._revoke(s, peer, s.get(Device, device_uuid), actor, reason=reason)
            return peer

    def _revoke(self, s: Session, peer: VpnPeer, device: Device, actor: str | None, *, reason: str) -> None:
        peer.state = "revoked"
        peer.revoked_at = utcnow()
        s.flush()
        self._append_audit(s, actor, "vpn.revoke", device.hostname,
                           {"uuid": peer.device_uuid, "peer_id": peer.id, "address": peer.address,
                            "public_key": peer.public_key, "reason": reason})


def _active(s: Session, device_uuid: str) -> VpnPeer | None:
    return s.scalars(select(VpnPeer).where(VpnPeer.device_uuid == device_uuid, VpnPeer.state == "active")).first()


def _lowest_free(s: Session, net, skip: set[str]) -> str:
    taken = set(s.scalars(select(VpnPeer.address).where(VpnPeer.pool == str(net), VpnPeer.state == "active")))
    taken |= skip
    usable = 0
    for host in net.hosts():
        usable += 1
        if str(host) not in taken:
            return str(host)
    raise VpnPoolExhausted(f"VPN pool {net} is exhausted: all {usable} host addresses are taken "
                           f"({usable - len(skip & taken)} by devices, the rest reserved for the gateway); widen "
                           "vpn_pool in the policy or remove devices that are gone (`deskguard devices remove`)")
