"""Issue and cancel wipe/lock orders: build the payload from the store, sign it with the site's order key,
record it and publish it as ``{orders_dir}/{device_uuid}``, all or nothing.

Every check that can fail runs before anything is signed, stored or published: the reason, the device and its
state, its check-in agent (without one no order can ever be acknowledged, so none is issued), the order key, the
orders directory, the volumes the order can name. The store row (audited) and the
published file then change together: the file is replaced inside the store transaction, and put back as it was
if the commit fails.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import DeskguardError, UsageError
from ..fsutil import atomic_write
from ..site import module_utils
from ..store import Order, OrderStateError, Store, volume_of
from ..store.orders import WIPED_STATES
from .settings import OrderSettings

RECOVERY_KINDS = ("luks-recovery", "bitlocker-recovery")
MAX_REASON = 1000


class OrdersDirError(DeskguardError):
    """The orders directory cannot be written: exit 4, nothing signed or stored."""


@dataclass(frozen=True)
class Issued:
    order: Order
    payload: dict
    path: Path


def order_path(settings: OrderSettings, device_uuid: str) -> Path:
    return settings.orders_dir / device_uuid


def order_targets(store: Store, device_uuid: str, action: str) -> tuple[list[str], dict | None]:
    """(volumes, keep_keyslots) for an order: the volumes of the device's live escrowed recovery secrets, and for
    a lock the fingerprints of its *active* ones per volume (the escrowed slots the lock must keep)."""
    live = [s for s in store.live_secrets(device_uuid) if s.kind in RECOVERY_KINDS]
    volumes = sorted({v for v in (volume_of(s.key_id) for s in live) if v})
    if not volumes:
        raise UsageError("no escrowed recovery key is on record for this device, so an order cannot name its "
                         "volumes (was it onboarded? see `deskguard devices show`)")
    if action != "lock":
        return volumes, None
    keep: dict[str, list[str]] = {}
    for s in live:
        if s.state == "active" and s.fingerprint:
            keep.setdefault(volume_of(s.key_id), []).append(s.fingerprint)
    bare = [v for v in volumes if v not in keep]
    if bare:
        raise UsageError(f"a lock would leave volume {bare[0]} without a verified escrowed key (none is active); "
                         "run `deskguard keys verify` first, or wipe instead")
    return volumes, keep


def require_agent(store: Store, device) -> None:
    """Refuse an order no laptop could ever carry out: only the device's enrolled agent can acknowledge one (its
    key verifies the ack), and nothing acts before an accepted ack."""
    if store.get_agent_public_key(device.uuid) is None:
        raise UsageError(f"{device.hostname} has no check-in agent (no agent key in the store): no order can ever "
                         f"be acknowledged or carried out there, so nothing was signed; install it first: "
                         f"endpoint_agent_enabled: true and its URLs in the policy, then `deskguard onboard "
                         f"{device.hostname} …` again (docs/agent.md)")


def check_orders_dir(path: Path) -> None:
    """Create the directory if needed and prove a file can be written there, before anything is signed."""
    try:
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OrdersDirError(f"the orders directory {path} is not writable ({exc.strerror or exc}); nothing was "
                             "signed or published (set deskguard_orders_dir in the policy, see docs/wipe.md)") from None


def issue(site: Path, store: Store, settings: OrderSettings, hostname: str, *, action: str, reason: str,
          ticket: str | None = None, actor: str | None = None) -> Issued:
    """Sign, record (queued, audited) and publish a wipe or lock order for ``hostname``."""
    from ..recovery.keys import load_order_signing_key

    proto = module_utils("deskguard_protocol")
    if action not in proto.ACTIONS:
        raise UsageError(f"unknown mode {action!r} (wipe or lock)")
    if not reason or not reason.strip():
        raise UsageError("a wipe or lock needs a --reason (it goes into the audit log and the order record)")
    reason = " ".join(reason.split())
    if len(reason) > MAX_REASON:
        raise UsageError(f"the reason is longer than {MAX_REASON} characters")
    device = store.require_device(hostname)
    if device.state in WIPED_STATES:
        raise OrderStateError(f"{hostname} is already {device.state}: nothing left to {action}")
    current = store.open_order(device.uuid)
    if current is not None:
        raise OrderStateError(f"{hostname} already has {current.state} {current.action} order {current.id}"
                              + ("; cancel it first with `deskguard orders cancel`" if current.state == "queued"
                                 else ": the laptop is carrying it out"))
    require_agent(store, device)
    key = load_order_signing_key(site)
    check_orders_dir(settings.orders_dir)
    volumes, keep = order_targets(store, device.uuid, action)
    payload = proto.build_order(device.uuid, action, volumes, keep_keyslots=keep, ttl_days=settings.ttl_days)
    envelope = proto.sign(payload, key)
    path = order_path(settings, device.uuid)
    with _published(path, envelope):
        with store.transaction():
            order = store.create_order(device.uuid, payload, envelope.decode("ascii"), reason=reason,
                                       ticket=ticket, actor=actor)
            atomic_write(path, envelope, mode=0o644)
    return Issued(order, payload, path)


def cancel(site: Path, store: Store, settings: OrderSettings, order_id: str, *,
           actor: str | None = None) -> tuple[Order, Path]:
    """Replace a queued order's published file with a signed cancel, and mark it cancelled (audited)."""
    from ..recovery.keys import load_order_signing_key

    proto = module_utils("deskguard_protocol")
    order = store.get_order(order_id)
    if order.state != "queued":
        raise OrderStateError(f"order {order.id} is {order.state}: only a queued order can be cancelled"
                              + (" (the laptop acknowledged it and has started)" if order.state == "acknowledged"
                                 else ""))
    key = load_order_signing_key(site)
    check_orders_dir(settings.orders_dir)
    envelope = proto.sign(proto.build_cancel(order.id, order.device_uuid), key)
    path = order_path(settings, order.device_uuid)
    with _published(path, envelope):
        with store.transaction():
            order = store.cancel_order(order.id, envelope.decode("ascii"), actor=actor)
            atomic_write(path, envelope, mode=0o644)
    return order, path


class _published:
    """Puts the previously published file back if the block fails after the new one replaced it (the store
    commit failed): a published order always has its store row."""

    def __init__(self, path: Path, new: bytes):
        self.path, self.new = path, new
        self.old = path.read_bytes() if path.exists() else None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            return False
        try:
            if self.path.exists() and self.path.read_bytes() == self.new:
                if self.old is None:
                    self.path.unlink()
                else:
                    atomic_write(self.path, self.old, mode=0o644)
        except OSError:
            pass  # the original error is the one to report
        return False
