"""Evidence from a laptop's agent's latest check-in (docs/agent-protocol.md): for a laptop the nightly run
cannot reach, and, with the policy's `deskguard_comply_evidence: checkin_first`, for every laptop whose check-in
is fresh enough, without contacting it (docs/compliance.md, "Check-in first").

Home-office laptops are shut at night. A check-in carries the same posture the deskguard_posture module
collects (the agent runs the same module_utils), so it is judged by the same evaluation; what differs is its
age. Evidence older than the policy's `deskguard_checkin_max_age_hours` (default 24) is *stale*: the host is
reported as such, never as compliant.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

DEFAULT_MAX_AGE_HOURS = 24.0
CHECKIN_FIRST = "checkin_first"
CHUNK = 500   # device ids per query: far below SQLite's and PostgreSQL's bound-parameter limits


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

    def describe(self, contacted: bool = True) -> str:
        """Where the evidence came from, for the report. contacted: the run tried the laptop first (it did not
        answer); False: the policy said check-in first and the laptop was not contacted at all."""
        when = self.collected_at.strftime("%Y-%m-%d %H:%M UTC")
        age = f"{self.age_hours:.1f} h ago" + (f", older than the policy's {self.max_age_hours:g} h" if self.stale else "")
        if contacted:
            return f"unreachable now; latest check-in {when} ({age})"
        return f"judged from its check-in of {when} ({age}); not contacted (deskguard_comply_evidence: checkin_first)"


def checkin_first(policy: dict) -> bool:
    """Does this host's policy judge it from a fresh check-in before trying to reach it?"""
    return policy.get("deskguard_comply_evidence") == CHECKIN_FIRST


def latest_checkin(store, device_uuid: str, policy: dict, now: dt.datetime | None = None) -> Checkin | None:
    """The device's latest check-in as evidence, or None if it never checked in (or sent no posture)."""
    return _evidence(store.latest_checkins([device_uuid]).get(device_uuid), policy, now)


def latest_checkins(store, policies: dict[str, dict], now: dt.datetime | None = None) -> dict[str, Checkin]:
    """{device uuid: its latest check-in as evidence} for the devices of ``policies`` ({uuid: host policy}),
    read in a few queries rather than one per laptop; devices without usable evidence are left out."""
    uuids = sorted(policies)
    rows = {}
    for i in range(0, len(uuids), CHUNK):
        rows.update(store.latest_checkins(uuids[i:i + CHUNK]))
    found = {u: _evidence(rows.get(u), policies[u], now) for u in uuids}
    return {u: c for u, c in found.items() if c is not None}


def _evidence(row, policy: dict, now: dt.datetime | None) -> Checkin | None:
    if row is None:
        return None
    sent = row.payload_obj.get("posture")
    if not isinstance(sent, dict) or not isinstance(sent.get("posture"), dict):
        return None
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    age = max(0.0, (now - row.sent_at).total_seconds() / 3600)
    max_age = float(policy.get("deskguard_checkin_max_age_hours") or DEFAULT_MAX_AGE_HOURS)
    return Checkin(sent["posture"], dict(sent.get("errors") or {}), row.sent_at, age, max_age)
