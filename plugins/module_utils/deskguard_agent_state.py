# -*- coding: utf-8 -*-
"""The on-device agent's memory: one JSON file under /var/lib/deskguard-agent/, replaced atomically.

Pure Python 3.9+ stdlib, deployed to the laptop by the endpoint_agent role and unit-tested on its own. What it
keeps, and why:
- nonces of every order executed, refused or cancelled: a replayed order (same nonce) is refused forever;
- cancelled order ids: a cached copy of a cancelled order served later is refused;
- acknowledged orders (nonce -> order id): an order acknowledged through the management channel
  (playbooks/wipe.yml) may then be executed; no other order is executed without a delivered acknowledgement;
- the last successful check-in (the dead-man switch counts from it);
- refusals not yet reported in a check-in (bounded: a flood of forged orders cannot fill the disk);
- the escrowed keyslot fingerprints the latest signed lock order named (what a dead-man lock keeps).
A missing file is a fresh agent; an unreadable one is an error, never silently "fresh" (that would forget
the nonces and accept a replay).
"""

from __future__ import annotations

import calendar
import fcntl
import json
import os
import tempfile
import time
from contextlib import contextmanager

STATE_FILE = "state.json"
LOCK_FILE = "agent.lock"
MAX_NONCES = 4096          # far above any real order count; oldest dropped first
MAX_REFUSALS = 50          # refusals reported per check-in; older ones are counted, not kept
VERSION = 1


class StateError(Exception):
    """The state file cannot be read or written: the agent acts on nothing until it can."""


def utc(ts=None):
    """Seconds since the epoch -> 'YYYY-MM-DDTHH:MM:SSZ' (the protocol's time format)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if ts is None else ts))


def parse_utc(text):
    """'YYYY-MM-DDTHH:MM:SSZ' -> seconds since the epoch; ValueError otherwise."""
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))


def empty():
    return {"v": VERSION, "nonces": {}, "cancelled": [], "acknowledged": {}, "last_checkin": None,
            "refusals": [], "refusals_dropped": 0, "lock_keep": None}


class State:
    """Load with State.load(directory); mutate through the methods; save() writes it atomically (0600)."""

    def __init__(self, directory, data=None):
        self.directory = directory
        self.data = data if data is not None else empty()

    @classmethod
    def load(cls, directory):
        path = os.path.join(directory, STATE_FILE)
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return cls(directory)
        except OSError as exc:
            raise StateError("cannot read %s: %s" % (path, exc.strerror))
        try:
            data = json.loads(raw.decode("utf-8"))
        except ValueError:
            raise StateError("%s is not valid JSON: refusing to start from a blank memory (restore it, or "
                             "remove it knowingly: replayed orders would then be accepted)" % path)
        if not isinstance(data, dict) or data.get("v") != VERSION:
            raise StateError("%s has an unknown format (v=%r)" % (path, data.get("v") if isinstance(data, dict)
                                                                   else None))
        merged = empty()
        merged.update(data)
        return cls(directory, merged)

    def save(self):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".state-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(json.dumps(self.data, sort_keys=True, indent=1).encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, os.path.join(self.directory, STATE_FILE))
            dirfd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    # -- nonces and order ids ------------------------------------------------------------------------

    def seen(self, nonce, order_id=None):
        """True when an order with this nonce was executed, refused or cancelled before (and, if order_id is
        given, under that very order id: the same order still published, not a replay under a new id)."""
        entry = self.data["nonces"].get(nonce)
        return entry is not None and (order_id is None or entry.get("order_id") == order_id)

    def remember(self, nonce, outcome, now=None, order_id=None):
        """Record a nonce as done ('executed', 'failed', 'refused', 'cancelled') with its order id; the oldest
        go past MAX_NONCES."""
        nonces = self.data["nonces"]
        nonces[nonce] = {"outcome": outcome, "at": utc(now), "order_id": order_id}
        if len(nonces) > MAX_NONCES:
            for old in sorted(nonces, key=lambda n: nonces[n]["at"])[: len(nonces) - MAX_NONCES]:
                del nonces[old]
        self.data["acknowledged"].pop(nonce, None)

    def cancelled(self, order_id):
        return order_id in self.data["cancelled"]

    def cancel(self, order_id, nonce, now=None):
        if order_id not in self.data["cancelled"]:
            self.data["cancelled"] = (self.data["cancelled"] + [order_id])[-MAX_NONCES:]
        self.remember(nonce, "cancelled", now, order_id)

    def acknowledge(self, nonce, order_id):
        self.data["acknowledged"][nonce] = order_id

    def acknowledged(self, nonce, order_id):
        return self.data["acknowledged"].get(nonce) == order_id

    # -- refusals ------------------------------------------------------------------------------------

    def refuse(self, order_id, reason, nonce=None, now=None):
        """Queue a refusal for the next check-in; remember the nonce (when the signature held) so the same
        order is never executed later. A forged order's nonce is *not* remembered: anyone could then block a
        genuine order by sending a forgery carrying its nonce first."""
        entry = {"order_id": order_id, "reason": reason, "at": utc(now)}
        refusals = self.data["refusals"] + [entry]
        if len(refusals) > MAX_REFUSALS:
            self.data["refusals_dropped"] += len(refusals) - MAX_REFUSALS
            refusals = refusals[-MAX_REFUSALS:]
        self.data["refusals"] = refusals
        if nonce is not None:
            self.remember(nonce, "refused", now, order_id)

    def pending_refusals(self):
        return list(self.data["refusals"])

    def refusals_reported(self, count):
        """The server stored a check-in carrying the first `count` refusals: drop them."""
        self.data["refusals"] = self.data["refusals"][count:]
        self.data["refusals_dropped"] = 0

    # -- check-ins and the dead-man switch -------------------------------------------------------------

    def checked_in(self, now=None):
        self.data["last_checkin"] = utc(now)

    def last_checkin(self):
        stamp = self.data.get("last_checkin")
        return parse_utc(stamp) if stamp else None

    def keep_for_lock(self, keep_keyslots, source, now=None):
        """Remember which escrowed keyslots a lock must keep ({luks uuid: [fingerprint, ...]})."""
        self.data["lock_keep"] = {"keep_keyslots": keep_keyslots, "source": source, "at": utc(now)}


def deadman_due(last_checkin, installed_at, now, days):
    """Is a dead-man lock due? Off when days <= 0. Counted from the last successful check-in, or from the
    agent's installation when it never checked in (a laptop stolen before its first check-in locks too)."""
    if not days or days <= 0:
        return False
    start = last_checkin if last_checkin is not None else installed_at
    if start is None:
        return False
    return now - start > days * 86400


@contextmanager
def exclusive(directory):
    """One agent run at a time (the timer and a playbook's `execute` may overlap): a flock on agent.lock."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(directory, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StateError("another deskguard-agent run holds %s for over 120 s"
                                     % os.path.join(directory, LOCK_FILE))
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)
