"""Evidence from a laptop's latest check-in (deskguard.compliance.evidence): found, aged, stale, or absent."""

from __future__ import annotations

import datetime as dt

import pytest

from deskguard.compliance.evidence import latest_checkin

pytestmark = pytest.mark.unit

SENT = dt.datetime(2026, 11, 29, 1, 0, 0)
POSTURE = {"posture": {"firewall": {"active": True}}, "errors": {"usb": "ValueError: no bus"}, "timings": {}}


def test_a_device_that_never_checked_in_has_no_evidence(store, device):
    assert latest_checkin(store, device.uuid, {}) is None


def test_a_fresh_checkin_is_evidence_with_its_age(store, device):
    store.record_checkin(device.uuid, {"posture": POSTURE}, SENT)
    got = latest_checkin(store, device.uuid, {}, now=SENT + dt.timedelta(hours=3))
    assert got.posture == POSTURE["posture"] and got.errors == POSTURE["errors"]
    assert got.age_hours == 3.0 and not got.stale and "3.0 h ago" in got.describe()


def test_evidence_older_than_the_policy_allows_is_stale(store, device):
    store.record_checkin(device.uuid, {"posture": POSTURE}, SENT)
    got = latest_checkin(store, device.uuid, {"deskguard_checkin_max_age_hours": 12},
                         now=SENT + dt.timedelta(hours=30))
    assert got.stale and "older than the policy's 12 h" in got.describe()
    assert latest_checkin(store, device.uuid, {}, now=SENT + dt.timedelta(hours=25)).stale   # default 24 h


def test_a_checkin_without_a_posture_is_no_evidence(store, device):
    store.record_checkin(device.uuid, {"refused": []}, SENT)
    assert latest_checkin(store, device.uuid, {}) is None
