"""The store's keyslot baselines (ENC-003): which keyslots each escrowed LUKS volume may have.

Mixed into ``Store``. Recorded by the escrow (deskguard.recovery.escrow) when it first escrows a volume's key and after
each change it makes; never from a read-only check, so a slot added behind the kit's back is never blessed.
"""

from __future__ import annotations

import json
from typing import Iterable

from sqlalchemy import select

from .models import Device, KeyslotBaseline


class KeyslotBaselinesMixin:
    def keyslot_baselines(self, device_uuid: str) -> dict[str, set[str]]:
        """{luks uuid: fingerprints} of the device's volumes."""
        if ahead := self._ahead_for(device_uuid):
            return {luks: set(prints) for luks, prints in ahead.baselines.get(device_uuid, {}).items()}
        with self._session(write=False) as s:
            rows = s.scalars(select(KeyslotBaseline).where(KeyslotBaseline.device_uuid == device_uuid))
            return {r.luks_uuid: r.prints() for r in rows}

    def record_keyslot_baseline(self, device_uuid: str, luks_uuid: str, fingerprints: Iterable[str], *,
                                reason: str, actor: str | None = None) -> None:
        """Replace one volume's baseline (audited with the old and new slot counts and the reason)."""
        prints = sorted(set(fingerprints))
        with self._session(write=True) as s:
            row = s.scalar(select(KeyslotBaseline).where(KeyslotBaseline.device_uuid == device_uuid,
                                                         KeyslotBaseline.luks_uuid == luks_uuid))
            old = None if row is None else sorted(row.prints())
            if old == prints:
                return
            if row is None:
                row = KeyslotBaseline(device_uuid=device_uuid, luks_uuid=luks_uuid)
                s.add(row)
            row.fingerprints = json.dumps(prints)
            s.flush()
            device = s.get(Device, device_uuid)
            self._append_audit(s, actor, "luks.baseline", device.hostname if device else device_uuid,
                               {"uuid": device_uuid, "luks_uuid": luks_uuid, "reason": reason,
                                "slots_before": None if old is None else len(old), "slots": len(prints),
                                "added": [p[:12] for p in prints if p not in (old or ())],
                                "removed": [p[:12] for p in (old or ()) if p not in prints]})
