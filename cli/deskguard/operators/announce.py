"""`deskguard announce`: IT's announcements to the operators, signed like orders and published like them.

One signed envelope per laptop (plugins/module_utils/deskguard_announcement.py, the site's order key), written
as a static file ``<site>/.deskguard/announcements/devices/<device uuid>/<announcement id>`` beside an index
entry ``.../index/<announcement id>.json`` (what was said, to whom, until when, by whom). No store table: the
files are the record (as orders are files a server publishes), the issue is audited in the store, and who has
seen an announcement comes back in the laptops' signed check-ins (posture section ``announcements``: the
operators whose `deskguard-status` showed it), read by `status`. `deskguard serve` gives a laptop its envelopes
(cli/deskguard/orders/announcements_route.py). See docs/operators.md."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..fsutil import atomic_write, atomic_write_json
from ..site import module_utils
from ..store import Store, state_dir

SUBDIR = "announcements"
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def announcements_dir(site: Path) -> Path:
    return state_dir(site) / SUBDIR


def device_dir(site: Path, device_uuid: str) -> Path:
    return announcements_dir(site) / "devices" / device_uuid


@dataclass(frozen=True)
class Announced:
    announcement_id: str
    hosts: list[str]          # the laptops it was published for
    skipped: list[str]        # hosts the pattern matched that are not onboarded laptops (no device in the store)
    expires_at: str


def parse_until(text: str | None, now: dt.datetime) -> dt.datetime | None:
    """--until: a date (YYYY-MM-DD: shown until the end of that day, UTC) or a UTC time (YYYY-MM-DDTHH:MM[:SS]Z)."""
    if not text:
        return None
    for fmt, end_of_day in (("%Y-%m-%d", True), ("%Y-%m-%dT%H:%MZ", False), ("%Y-%m-%dT%H:%M:%SZ", False)):
        try:
            t = dt.datetime.strptime(text, fmt).replace(tzinfo=dt.timezone.utc)
        except ValueError:
            continue
        t = t + dt.timedelta(days=1, seconds=-1) if end_of_day else t
        if t <= now:
            raise UsageError(f"--until {text} is already past")
        if t > now + dt.timedelta(days=365):
            raise UsageError(f"--until {text} is more than a year away")
        return t
    raise UsageError(f"--until {text[:40]!r} is not a date (YYYY-MM-DD) or a UTC time (YYYY-MM-DDTHH:MMZ)")


def parse_languages(text: str | None) -> list[str]:
    """--lang ja,en: the operators (by their language) it is for; empty: all of them."""
    languages = module_utils("deskguard_operator_words").LANGUAGES
    wanted = [part.strip() for part in (text or "").split(",") if part.strip()]
    unknown = [w for w in wanted if w not in languages]
    if unknown:
        raise UsageError(f"--lang {unknown[0][:20]!r}: one of {', '.join(languages)} (comma-separated)")
    return sorted(set(wanted))


def announce(site: Path, store: Store, text: str, to: str, *, until: str | None = None, lang: str | None = None,
             actor: str | None = None, now: dt.datetime | None = None) -> Announced:
    """Sign and publish ``text`` for every onboarded laptop the inventory pattern ``to`` names (all, a group, a
    host); audited. Every check runs before anything is signed or written."""
    from ..recovery.keys import load_order_signing_key
    from ..site.inventory import match_hosts

    ann, proto = module_utils("deskguard_announcement"), module_utils("deskguard_protocol")
    now = now or dt.datetime.now(dt.timezone.utc)
    text = text.strip()
    expires = parse_until(until, now)
    languages = parse_languages(lang)
    if not text or len(text) > ann.MAX_TEXT:
        raise UsageError(f"the announcement must be 1 to {ann.MAX_TEXT} characters")
    if not _plain(text):
        raise UsageError("the announcement must not contain control characters (a newline is fine)")
    hosts = match_hosts(site, to)
    if not hosts:
        raise UsageError(f"--to {to[:60]!r} names no laptop in the inventory (all, a group or a host)")
    devices = {h: store.get_device(h) for h in hosts}
    targets = {h: d for h, d in devices.items() if d is not None}
    if not targets:
        raise UsageError(f"--to {to[:60]!r} names no onboarded laptop (onboard them first)")
    key = load_order_signing_key(site)
    announcement_id = _new_id()
    expires_at = None
    for hostname, device in sorted(targets.items()):
        payload = ann.build(device.uuid, text, languages, until=expires, now=now, announcement_id=announcement_id)
        expires_at = payload["expires_at"]
        atomic_write(device_dir(site, device.uuid) / announcement_id, proto.sign(payload, key), mode=0o644)
    entry = {"id": announcement_id, "text": text, "to": to, "languages": languages,
             "issued_at": proto.format_time(now), "expires_at": expires_at, "by": actor,
             "devices": {d.uuid: h for h, d in sorted(targets.items())}}
    atomic_write_json(announcements_dir(site) / "index" / f"{announcement_id}.json", entry, mode=0o644)
    store.audit(actor, "announce", to, {"id": announcement_id, "laptops": len(targets),
                                        "expires_at": expires_at, "languages": languages, "chars": len(text)})
    return Announced(announcement_id, sorted(targets), sorted(set(hosts) - set(targets)), expires_at)


def _plain(text: str) -> bool:
    return not any((ord(c) < 32 and c != "\n") or ord(c) == 127 for c in text)


def _new_id() -> str:
    import uuid

    return str(uuid.uuid4())


def index(site: Path) -> list[dict]:
    """Every announcement's index entry, newest first."""
    folder = announcements_dir(site) / "index"
    entries = [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.is_dir() else []
    return sorted(entries, key=lambda e: (e["issued_at"], e["id"]), reverse=True)


def find(site: Path, prefix: str) -> dict:
    matches = [e for e in index(site) if e["id"].startswith(prefix.lower())] if prefix else []
    if len(matches) != 1:
        raise UsageError(f"no announcement {prefix[:40]!r}" if not matches
                         else f"{prefix!r} names {len(matches)} announcements: give more of the id")
    return matches[0]


def seen_by(store: Store, entry: dict) -> dict[str, list[dict]]:
    """{hostname: [{user, at}]} of the operators whose laptop reported that they saw ``entry``, from each
    laptop's latest signed check-in (the agent reports every receipt until the announcement expires)."""
    uuids = list(entry["devices"])
    out = {entry["devices"][u]: [] for u in uuids}
    for uuid, checkin in store.latest_checkins(uuids).items():
        section = ((checkin.payload_obj.get("posture") or {}).get("posture") or {}).get("announcements") or {}
        for receipt in section.get("seen") or []:
            if isinstance(receipt, dict) and receipt.get("id") == entry["id"]:
                out[entry["devices"][uuid]].append({"user": str(receipt.get("user"))[:64],
                                                    "at": str(receipt.get("at"))[:20]})
    return out


def envelopes_for(site: Path, device_uuid: str, now: dt.datetime) -> list[str]:
    """The device's published envelopes that have not expired (what `deskguard serve` hands its agent)."""
    proto = module_utils("deskguard_protocol")
    folder = device_dir(site, device_uuid)
    out = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not _ID.match(path.name):
            continue
        body = path.read_bytes()
        try:
            expires = proto.parse_time(proto.parse_envelope(body, 8 * 1024).unverified_payload()["expires_at"])
        except (proto.ProtocolError, KeyError, ValueError, TypeError):
            continue
        if expires >= now:
            out.append(body.decode("ascii"))
    return out
