"""Evidence for a laptop the nightly run cannot reach: its agent's latest check-in (docs/agent-protocol.md).

Home-office laptops are shut at night. A check-in carries the same posture the deskguard_posture module
collects (the agent runs the same module_utils), so it is judged by the same evaluation; what differs is its
age. Evidence older than the policy's `deskguard_checkin_max_age_hours` (default 24) is *stale*: the host is
reported as such, never as compliant.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

DEFAULT_MAX_AGE_HOURS = 24.0


@dataclass
class Checkin:
    posture: dict
    errors: dict
    collected_at: dt.datetime     # the laptop's clock (the server refuses more than 300 s of skew)
    age_hours: float
    max_age_hours: float

    @property
    def stale(self) -> bool:
        return self.age_hours > self.max_age_hours

    def describe(self) -> str:
        when = self.collected_at.strftime("%Y-%m-%d %H:%M UTC")
        return (f"unreachable now; latest check-in {when} ({self.age_hours:.1f} h ago"
                + (f", older than the policy's {self.max_age_hours:g} h)" if self.stale else ")"))


def latest_checkin(store, device_uuid: str, policy: dict, now: dt.datetime | None = None) -> Checkin | None:
    """The device's latest check-in as evidence, or None if it never checked in (or sent no posture)."""
    row = store.latest_checkins([device_uuid]).get(device_uuid)
    if row is None:
        return None
    sent = row.payload_obj.get("posture")
    if not isinstance(sent, dict) or not isinstance(sent.get("posture"), dict):
        return None
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    age = max(0.0, (now - row.sent_at).total_seconds() / 3600)
    max_age = float(policy.get("deskguard_checkin_max_age_hours") or DEFAULT_MAX_AGE_HOURS)
    return Checkin(sent["posture"], dict(sent.get("errors") or {}), row.sent_at, age, max_age)
