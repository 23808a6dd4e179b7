"""IT's announcements on the laptop: fetched by the agent (root) after its check-in, verified, kept for the
operators; shown once to each operator by `deskguard-status`; who saw what reported back in the next check-in.

- fetch_and_keep(agent): a signed fetch to `deskguard serve` (POST /v1/announcements/{uuid}); every envelope
  checked by deskguard_announcement (the pinned order key, this laptop's UUID, expiry, nonce never seen before).
  An accepted one is kept as <status dir>/announcements/<id>.json (0644: text, languages, expiry); its nonce goes
  into <state dir>/announcements.json (0600) so the same envelope, served again, is not shown as new, and a
  replay after it was removed is refused. Expired ones are dropped.
- mark_seen / seen: `deskguard-status`, run by the operator, creates <status dir>/seen/<id>.<uid> (the folder is
  1733 like /tmp without read: anyone may add a receipt, nobody may list or remove another's). The receipt's
  owner, not its name, says who saw it.
- receipts(status dir): what the agent adds to its next check-in's posture (section "announcements"), from
  which `deskguard announce status` tells IT who has seen what.
Pure Python 3.9+ stdlib; the agent's half also deskguard_announcement. docs/operators.md.
"""

from __future__ import annotations

import os
import pwd
import re
import time

try:  # inside a module (Ansiballz) the kit's module_utils live under ansible.module_utils
    from ansible.module_utils.deskguard_files import read_json_object, write_json
except ImportError:  # unit tests, the controller and the agent import them as plain modules
    from deskguard_files import read_json_object, write_json

BOX = "announcements"
SPOOL = "seen"
SEEN_NONCES = "announcements.json"
ANSWER_LIMIT = 256 * 1024   # the server's list of envelopes (each at most deskguard_announcement.LIMIT)
MAX_KEPT = 50
MAX_RECEIPTS = 500
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def _ann():
    """deskguard_announcement (and with it deskguard_protocol and python3-cryptography): only the agent's side
    verifies; `deskguard-status`, run by the operator, reads the kept files and needs neither."""
    try:  # inside a module (Ansiballz) the kit's module_utils live under ansible.module_utils
        from ansible.module_utils import deskguard_announcement
    except ImportError:  # unit tests, the controller and the agent import them as plain modules
        import deskguard_announcement
    return deskguard_announcement


def prepare(status_dir):
    """The box (0755) and the receipt spool (1733), made and re-moded each run (the service runs UMask=0077)."""
    for path, mode in ((status_dir, 0o755), (os.path.join(status_dir, BOX), 0o755),
                       (os.path.join(status_dir, SPOOL), 0o1733)):
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)


def fetch_and_keep(agent, status_dir):
    """After the check-in: fetch, verify, keep. Returns {"kept": [...ids], "refused": {reason: n}} or
    {"unreachable": why}. Never raises for what a server sends."""
    if agent.network_left <= 0:
        return {"unreachable": "no network time left in this run"}
    url = agent.cfg["server_url"].rstrip("/") + "/v1/announcements/" + agent.cfg["device_uuid"]
    fetch = agent._sign(agent.proto.build_fetch(agent.cfg["device_uuid"], now=agent.when))
    try:
        resp = agent._request(agent.transport.post_json, url, fetch, limit=ANSWER_LIMIT)
    except agent.transport.HttpFailure as exc:
        return {"unreachable": str(exc)[:200]}
    answer = resp.json() if resp.ok else None
    if not isinstance(answer, dict) or not isinstance(answer.get("announcements"), list):
        return {"unreachable": "HTTP %d" % resp.status if not resp.ok else "not a list of announcements"}
    return keep(answer["announcements"], agent.pinned, agent.cfg["device_uuid"], agent.when,
                agent.cfg["state_dir"], status_dir)


def keep(envelopes, order_public_key, device_uuid, now, state_dir, status_dir):
    """Verify each envelope; keep the accepted ones for the operators. (The fetch's answer is untrusted: only
    what the order key signed for this laptop is ever kept.)"""
    ann = _ann()
    prepare(status_dir)
    nonces_path = os.path.join(state_dir, SEEN_NONCES)
    nonces = (read_json_object(nonces_path) or {}).get("nonces") or {}
    box = os.path.join(status_dir, BOX)
    kept, refused = [], {}
    for item in envelopes[:MAX_KEPT * 2]:
        data = item.encode("utf-8") if isinstance(item, str) else b""
        decision, payload = ann.evaluate(data, order_public_key, device_uuid, now, nonces)
        if decision == "replayed" and os.path.exists(os.path.join(box, payload["announcement_id"] + ".json")):
            continue        # served again while it is still kept: not new, not an attack
        if decision != ann.proto.ACCEPT:
            refused[decision] = refused.get(decision, 0) + 1
            continue
        nonces[payload["nonce"]] = payload["expires_at"]
        write_json(os.path.join(box, payload["announcement_id"] + ".json"),
               {"id": payload["announcement_id"], "text": payload["text"], "languages": payload["languages"],
                "issued_at": payload["issued_at"], "expires_at": payload["expires_at"]}, 0o644)
        kept.append(payload["announcement_id"])
    stamp = ann.proto.format_time(now)
    _drop_expired(box, stamp)
    # Nonces are kept past their announcement's expiry, for as long as the envelope could still verify:
    # a replay after expiry is refused as expired anyway, so they can go then.
    nonces = {n: e for n, e in nonces.items() if e >= stamp}
    write_json(nonces_path, {"nonces": nonces}, 0o600)
    return {"kept": kept, "refused": refused}


def _drop_expired(box, stamp):
    for name in os.listdir(box):
        data = read_json_object(os.path.join(box, name))
        if name.endswith(".json") and (data is None or str(data.get("expires_at")) < stamp):
            os.unlink(os.path.join(box, name))


def kept(status_dir, now=None):
    """The announcements kept on this laptop, not expired, oldest first."""
    box = os.path.join(status_dir, BOX)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now))
    out = []
    for name in sorted(os.listdir(box)) if os.path.isdir(box) else []:
        data = read_json_object(os.path.join(box, name))
        if data and _ID.match(str(data.get("id"))) and str(data.get("expires_at")) >= stamp:
            out.append(data)
    return sorted(out, key=lambda d: (str(d.get("issued_at")), d["id"]))


def _receipt(status_dir, announcement_id, uid):
    return os.path.join(status_dir, SPOOL, "%s.%d" % (announcement_id, uid))


def for_language(item, language):
    """Is this kept announcement for an operator reading ``language``? (empty languages: for everyone)"""
    return not item.get("languages") or language in item["languages"]


def seen(status_dir, announcement_id, uid):
    return os.path.exists(_receipt(status_dir, announcement_id, uid))


def mark_seen(status_dir, announcement_id, uid):
    """The operator's receipt (created by the operator's own process, so owned by them). False if the spool is
    not there (no agent run yet) or not writable."""
    try:
        fd = os.open(_receipt(status_dir, announcement_id, uid), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return True
    except OSError:
        return False
    os.close(fd)
    return True


def receipts(status_dir):
    """[{id, user, at}] for the check-in: every receipt of a kept announcement, by its owner."""
    spool = os.path.join(status_dir, SPOOL)
    ids = {a["id"] for a in kept(status_dir)}
    out = []
    for name in sorted(os.listdir(spool)) if os.path.isdir(spool) else []:
        announcement_id = name.split(".")[0]
        if announcement_id not in ids:
            continue
        try:
            st = os.lstat(os.path.join(spool, name))
            user = pwd.getpwuid(st.st_uid).pw_name
        except (OSError, KeyError):
            continue
        out.append({"id": announcement_id, "user": user,
                    "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.st_mtime))})
        if len(out) >= MAX_RECEIPTS:
            break
    return out


def prune_receipts(status_dir):
    """Receipts of announcements no longer kept (expired) are removed by the agent (root)."""
    spool = os.path.join(status_dir, SPOOL)
    ids = {a["id"] for a in kept(status_dir)}
    for name in os.listdir(spool) if os.path.isdir(spool) else []:
        if name.split(".")[0] not in ids:
            try:
                os.unlink(os.path.join(spool, name))
            except OSError:
                pass
