# -*- coding: utf-8 -*-
"""The on-device agent (Linux): fetch the order, verify it, acknowledge it (signed), only then act; check in.

Deployed by the endpoint_agent role to /usr/lib/deskguard-agent/ with the module_utils it imports and run by
deskguard-agent.timer as root. The same functions serve the timer (`run`) and playbooks/wipe.yml (`ack` then
`execute`, the order given on stdin), so an online and an offline wipe go through one verification path.
Envelopes and signatures are deskguard_protocol's (the controller's own code); nothing here re-implements them.
See docs/agent.md and docs/agent-protocol.md.
"""

from __future__ import annotations

import json
import os
import sys
import time

try:  # inside Ansible (the install module imports make_key) / on the laptop and in unit tests
    from ansible.module_utils import deskguard_agent_http as http
    from ansible.module_utils import deskguard_agent_linux as linux
    from ansible.module_utils import deskguard_agent_state as agent_state
except ImportError:
    import deskguard_agent_http as http
    import deskguard_agent_linux as linux
    import deskguard_agent_state as agent_state

AGENT_VERSION = "1"
CONFIG_PATH = "/etc/deskguard-agent/agent.json"
OPERATOR_STATUS_DIR = "/var/lib/deskguard-status"   # deskguard_operator_status.STATUS_DIR (imported only when used)
ORDER_LIMIT = 8 * 1024
ANSWER_LIMIT = 4 * 1024
# A run makes at most three requests (the order, one acknowledgement, the check-in); together they get this
# many times timeout_seconds, so a run's network time is bounded whatever the server does (docs/agent.md).
RUN_REQUESTS = 3
# Reasons for which an authentic order for this laptop is answered with a signed refusal (the server then
# marks the order refused). Forged or foreign orders are only listed in the next check-in.
ACK_REFUSALS = ("expired", "not_yet_valid", "replayed", "foreign_volumes", "unsupported")


class AgentError(Exception):
    """The agent cannot run (configuration, key, state): one line, exit code 2, nothing done."""


def _datetime(epoch):
    import datetime as dt

    return dt.datetime.fromtimestamp(int(epoch), tz=dt.timezone.utc)


def _protocol():
    try:
        from ansible.module_utils import deskguard_protocol
    except ImportError:
        import deskguard_protocol
    return deskguard_protocol


# ---------------------------------------------------------------------------------------------- config

REQUIRED = ("device_uuid", "orders_url", "server_url", "order_public_key", "device_key", "state_dir")


def load_config(path=CONFIG_PATH):
    try:
        with open(path, "rb") as fh:
            cfg = json.loads(fh.read().decode("utf-8"))
    except OSError as exc:
        raise AgentError("cannot read %s: %s (re-run the endpoint_agent role)" % (path, exc.strerror))
    except ValueError:
        raise AgentError("%s is not valid JSON (re-run the endpoint_agent role)" % path)
    missing = [k for k in REQUIRED if not cfg.get(k)]
    if missing:
        raise AgentError("%s lacks %s (re-run the endpoint_agent role)" % (path, ", ".join(missing)))
    cfg.setdefault("timeout_seconds", 15)
    cfg.setdefault("order_fetch", "signed")
    if cfg["order_fetch"] not in ("signed", "static"):
        raise AgentError("%s: order_fetch must be signed or static (re-run the endpoint_agent role)" % path)
    cfg.setdefault("deadman_days", 0)
    cfg.setdefault("escrowed_keyslots", {})
    try:
        cfg["config_mtime"] = os.stat(path).st_mtime
    except OSError:
        cfg["config_mtime"] = None
    return cfg


def make_key(path):
    """The device key pair (ECDSA P-256), made here once, private half 0600 root. Returns the public PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not os.path.exists(path):
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = path + ".new"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    return public_pem(load_private_key(path))


def load_private_key(path):
    from cryptography.hazmat.primitives import serialization

    try:
        with open(path, "rb") as fh:
            return serialization.load_pem_private_key(fh.read(), password=None)
    except OSError as exc:
        raise AgentError("cannot read the device key %s: %s (re-run the endpoint_agent role)" % (path, exc.strerror))
    except ValueError:
        raise AgentError("the device key %s is unreadable (re-run the endpoint_agent role)" % path)


def public_pem(private_key):
    from cryptography.hazmat.primitives import serialization

    return private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo).decode()


# ------------------------------------------------------------------------------------------------ agent

class Agent:
    """One run's context. `volumes` ({luks uuid: device}) and `now` are injectable for tests."""

    def __init__(self, cfg, volumes=None, now=None, actions=linux, transport=http, log=None, posture=None,
                 operator_status_dir=None):
        self.cfg = cfg
        self._posture = posture
        self.last_posture = None
        # Where deskguard-status finds what this run saw (docs/operators.md); None: not kept (unit tests).
        self.operator_status_dir = operator_status_dir
        self.actions = actions
        self.transport = transport
        self.proto = _protocol()
        self.now = time.time() if now is None else now
        self._volumes = volumes
        self.when = _datetime(self.now)
        self.key = load_private_key(cfg["device_key"])
        try:
            self.pinned = self.proto.load_public_key(cfg["order_public_key"])
        except ValueError:
            raise AgentError("the pinned order public key in the configuration is not ECDSA P-256 "
                             "(re-run the endpoint_agent role)")
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.state = agent_state.State.load(cfg["state_dir"])
        self.network_left = RUN_REQUESTS * float(cfg["timeout_seconds"])
        self.failure = None

    @property
    def volumes(self):
        if self._volumes is None:
            self._volumes = linux.local_volumes()
        return self._volumes

    def _url(self, path):
        return self.cfg["server_url"].rstrip("/") + path

    # -- verification: one path for the timer and the playbook ------------------------------------------

    def local_volumes(self):
        """{luks uuid: [fingerprints of its keyslots now]}: what the protocol checks volumes and kept slots
        against."""
        return {uuid: sorted(linux.fingerprints(linux.deskguard_luks.luks_dump(dev)))
                for uuid, dev in self.volumes.items()}

    def check(self, body):
        """Verify an order body with deskguard_protocol. Returns (payload, None) when it may be carried out
        (or is a valid cancel), else (payload or None, reason). Never raises for bad input: a refusal is an
        answer."""
        proto = self.proto
        try:
            volumes = self.local_volumes()
        except (linux.deskguard_luks.LuksError, OSError) as exc:
            self.log("deskguard-agent: cannot read the local volumes: %s" % exc)
            volumes = {}
        decision, payload = proto.evaluate(
            body, self.pinned, self.cfg["device_uuid"], volumes, now=self.when, seen_nonces=self.state.data["nonces"],
            cancelled_orders=self.state.data["cancelled"])
        if decision in (proto.ACCEPT, "cancel"):
            return payload, None
        return payload, decision

    def _sign(self, payload):
        return self.proto.sign(payload, self.key)

    def ack_envelope(self, payload, status, reason=None):
        return self._sign(self.proto.build_ack(payload, status, reason, now=self.when))

    def _refuse(self, payload, reason):
        payload = payload or {}
        authentic = payload is not None and payload.get("device_uuid") == self.cfg["device_uuid"] \
            and reason in ACK_REFUSALS
        # Remember the nonce of an authentic refusal so it is never executed later; not for a replay (known
        # already) nor for not_yet_valid (a laptop clock behind must not turn a genuine order away for good).
        remember = authentic and reason not in ("replayed", "not_yet_valid")
        self.state.refuse(payload.get("order_id") if authentic else None, reason,
                          nonce=payload.get("nonce") if remember else None, now=self.now)
        return self.ack_envelope(payload, "refused", reason) if authentic else None

    # -- the timer's run ---------------------------------------------------------------------------------

    def run(self):
        """One check-in cycle. Returns a summary dict (printed as JSON by the CLI)."""
        out = {"order": None, "acted": None, "checkin": None, "deadman": None}
        # The dead-man switch is decided from the state alone, before any request: a server that stalls (or a
        # thief's) cannot postpone it.
        out["deadman"] = self._deadman()
        if out["deadman"] and out["deadman"].get("acted"):
            self.state.save()
            return out
        order = self._fetch_order()
        out["order"] = order
        if order.get("status") == "accepted":
            out["acted"] = self._ack_then_act(order.pop("payload"))
            if out["acted"].get("acted"):
                self.state.save()
                return out          # powering off / rebooting: no check-in after a wipe or lock
        out["checkin"] = self._checkin()
        self.state.save()
        if self.operator_status_dir:
            out["announcements"] = self._fetch_announcements()
            out["operator_status"] = self._save_operator_status(out["checkin"])
        return out

    @staticmethod
    def _operator(name):
        """deskguard_operator_<name>, imported when the operator side is on (docs/operators.md)."""
        try:
            from ansible.module_utils import deskguard_operator_announcements, deskguard_operator_status
        except ImportError:
            import deskguard_operator_announcements
            import deskguard_operator_status
        return {"announcements": deskguard_operator_announcements, "status": deskguard_operator_status}[name]

    def _fetch_announcements(self):
        """IT's announcements for the operators, verified and kept; never fails the run."""
        box = self._operator("announcements")
        try:
            got = box.fetch_and_keep(self, self.operator_status_dir)
            box.prune_receipts(self.operator_status_dir)
        except (OSError, ValueError) as exc:
            return {"error": "%s: %s" % (type(exc).__name__, str(exc)[:200])}
        if got.get("refused"):
            self.log("deskguard-agent: announcements refused: %s" % ", ".join(
                "%s x%d" % item for item in sorted(got["refused"].items())))
        return got

    def _save_operator_status(self, checkin):
        operator_status = self._operator("status")
        last = self.state.last_checkin()
        return operator_status.save_after_run(self.last_posture, (self.cfg.get("posture_params") or {}).get("usb"),
                                              agent_state.utc(last) if last else None, checkin.get("ok"),
                                              self.operator_status_dir)

    def _fetch_order(self):
        url = self.cfg["orders_url"].rstrip("/") + "/" + self.cfg["device_uuid"]
        try:
            if self.cfg.get("order_fetch") == "static":     # any web server: no proof of who asks
                resp = self._request(self.transport.get, url, limit=ORDER_LIMIT)
            else:                                       # deskguard serve gives the order to this device only
                fetch = self._sign(self.proto.build_fetch(self.cfg["device_uuid"], now=self.when))
                resp = self._request(self.transport.post_json, url, fetch, limit=ORDER_LIMIT)
        except self.transport.HttpFailure as exc:
            if exc.oversized:
                self.state.refuse(None, "oversized", now=self.now)
                return {"status": "refused", "reason": "oversized"}
            return {"status": "unreachable", "detail": str(exc)}
        if resp.status == 404:
            return {"status": "none"}
        if not resp.ok:
            answer = resp.json()
            error = str(answer.get("error"))[:60] if isinstance(answer, dict) and answer.get("error") else None
            # e.g. "HTTP 401 signed_fetch_required": order_fetch is static but the server is deskguard serve.
            return {"status": "unreachable", "detail": "HTTP %d%s" % (resp.status, " " + error if error else "")}
        payload, reason = self.check(resp.body)
        if reason is None and payload.get("type") == "cancel":
            self.state.cancel(payload["order_id"], payload["nonce"], now=self.now)
            return {"status": "cancelled", "order_id": payload["order_id"]}
        if reason is not None:
            if reason == "replayed" and payload is not None and self.state.seen(payload.get("nonce"),
                                                                                payload.get("order_id")):
                # The order we already executed or refused is still published: nothing new to report.
                return {"status": "done_before", "order_id": payload.get("order_id")}
            ack = self._refuse(payload, reason)
            if ack is not None:
                self._post("/v1/ack", ack)
            return {"status": "refused", "reason": reason, "order_id": (payload or {}).get("order_id")}
        return {"status": "accepted", "order_id": payload["order_id"], "action": payload["action"],
                "payload": payload}

    def _request(self, call, *args, **kw):
        """One request, given the smaller of timeout_seconds and what is left of the run's network time. Plain
        http:// only with allow_http (a lab): the posture and a pending order would travel in clear text."""
        if args[0].startswith("http://") and self.cfg.get("allow_http") is not True:
            raise self.transport.HttpFailure("%s is plain HTTP, refused (https:// only; allow_http is for a lab)"
                                             % args[0])
        started = time.monotonic()
        try:
            return call(*args, timeout=min(float(self.cfg["timeout_seconds"]), self.network_left),
                        ca_file=self.cfg.get("ca_file"), **kw)
        finally:
            self.network_left -= time.monotonic() - started

    def _post(self, path, envelope):
        """The Response, or None when there was none (why: self.failure)."""
        try:
            return self._request(self.transport.post_json, self._url(path), envelope, limit=ANSWER_LIMIT)
        except self.transport.HttpFailure as exc:
            self.log("deskguard-agent: %s" % exc)
            self.failure = "unreachable: %s" % exc
            return None

    def _ack_then_act(self, payload):
        resp = self._post("/v1/ack", self.ack_envelope(payload, "accepted"))
        if resp is None or not resp.ok:
            # Not acknowledged, not acted on: retried at the next check-in while the order is valid.
            return {"acted": False, "detail": "acknowledgement not accepted (%s)"
                    % (self.failure if resp is None else "HTTP %d" % resp.status)}
        self.state.acknowledge(payload["nonce"], payload["order_id"])
        return self.act(payload)

    # -- acting ------------------------------------------------------------------------------------------

    def act(self, payload):
        """Carry out an acknowledged, verified order. The nonce is remembered as executed before the power
        action, so a restart never runs it twice."""
        try:
            if payload["action"] == "wipe":
                report = self.actions.wipe(linux.plan_wipe(self.volumes, payload["volumes"]))
                # A lost laptop is powered off even if one volume resisted: the report says which.
                after = "poweroff"
            else:
                self.state.keep_for_lock(payload["keep_keyslots"], "order " + payload["order_id"], now=self.now)
                report = self.actions.lock(linux.plan_lock(self.volumes, payload["keep_keyslots"]))
                after = "reboot"
        except (linux.ActionRefused, linux.deskguard_luks.LuksError, OSError) as exc:
            # Kept slots are never touched, so a lock that failed half-way still opens with the escrowed key.
            report, after = {"error": str(exc)}, None
        self.state.remember(payload["nonce"], "executed" if after else "failed", now=self.now,
                            order_id=payload["order_id"])
        self.state.save()
        report["powered"] = self.actions.power(after) if after else False
        report.update(acted=after is not None, action=payload["action"], order_id=payload["order_id"], then=after)
        return report

    # -- dead-man switch --------------------------------------------------------------------------------

    def lock_keep(self):
        """What a dead-man lock keeps: the newer of the escrowed keyslots the role wrote into the config and
        those the latest signed lock order named."""
        remembered = self.state.data.get("lock_keep")
        cfg_keep, cfg_at = self.cfg.get("escrowed_keyslots") or {}, self.cfg.get("config_mtime") or 0
        if remembered and agent_state.parse_utc(remembered["at"]) >= cfg_at:
            return remembered["keep_keyslots"]
        return cfg_keep

    def _deadman(self):
        days = int(self.cfg.get("deadman_days") or 0)
        data = self.state.data
        locked_at = data.get("deadman_locked_at")
        last = self.state.last_checkin()
        if locked_at and (last is None or agent_state.parse_utc(locked_at) >= last):
            return None             # locked already; armed again by the next successful check-in
        if not agent_state.deadman_due(last, self.cfg.get("installed_at"), self.now, days):
            return None
        try:
            plan = linux.plan_lock(self.volumes, self.lock_keep())
        except linux.ActionRefused as exc:
            # Not a protocol refusal (no order): kept in the state and shown by the AGT-001 facts.
            self.state.data["deadman_refused"] = {"reason": exc.reason, "detail": str(exc),
                                                  "at": agent_state.utc(self.now)}
            return {"acted": False, "refused": exc.reason, "detail": str(exc)}
        report = self.actions.lock(plan)
        data["deadman_locked_at"] = agent_state.utc(self.now)
        self.state.save()
        report["powered"] = self.actions.power("reboot")
        report.update(acted=True, action="lock", then="reboot", reason="no check-in for %d days" % days)
        return report

    # -- check-in ----------------------------------------------------------------------------------------

    def checkin_envelope(self):
        if self._posture is None:
            try:
                from ansible.module_utils import deskguard_posture
            except ImportError:
                import deskguard_posture
            params = self.cfg.get("posture_params") or {}
            self._posture = lambda: deskguard_posture.collect(params=params)
        posture, errors, timings = self._posture()
        self.last_posture = posture
        if self.operator_status_dir:
            # Which operators have seen which of IT's announcements (docs/operators.md); IT reads it from here.
            posture = dict(posture, announcements={"seen": self._operator("announcements").receipts(
                self.operator_status_dir)})
        refused = self.state.pending_refusals()
        # The same shape as the deskguard_posture module's result, so the controller judges both alike.
        payload = self.proto.build_checkin(self.cfg["device_uuid"],
                                           {"posture": posture, "errors": errors, "timings": timings},
                                           AGENT_VERSION, refused, now=self.when)
        return self._sign(payload), len(refused)

    def _checkin(self):
        envelope, count = self.checkin_envelope()
        resp = self._post("/v1/checkin", envelope)
        if resp is None or not resp.ok:
            return {"ok": False, "detail": self.failure if resp is None else "HTTP %d" % resp.status}
        self.state.checked_in(self.now)
        self.state.refusals_reported(count)
        return {"ok": True, "refusals_reported": count}

    # -- the playbook's two steps -------------------------------------------------------------------------

    def ack_from_file(self, body):
        """Step 1 of playbooks/wipe.yml: verify, and answer with a signed acknowledgement (nothing done)."""
        payload, reason = self.check(body)
        if reason is None and payload.get("type") == "cancel":
            self.state.cancel(payload["order_id"], payload["nonce"], now=self.now)
            self.state.save()
            return {"status": "cancelled", "order_id": payload["order_id"]}
        if reason is not None:
            ack = self._refuse(payload, reason)
            self.state.save()
            return {"status": "refused", "reason": reason, "order_id": (payload or {}).get("order_id"),
                    "ack": ack}
        self.state.acknowledge(payload["nonce"], payload["order_id"])
        self.state.save()
        return {"status": "accepted", "order_id": payload["order_id"], "action": payload["action"],
                "ack": self.ack_envelope(payload, "accepted")}

    def execute_from_file(self, body):
        """Step 2: the same verification again, and the order must have been acknowledged in step 1."""
        payload, reason = self.check(body)
        if reason is not None or payload.get("type") != "order":
            return {"acted": False, "status": "refused", "reason": reason or "unsupported"}
        if not self.state.acknowledged(payload["nonce"], payload["order_id"]):
            return {"acted": False, "status": "refused", "reason": "not_acknowledged"}
        return self.act(payload)


# -------------------------------------------------------------------------------------------------- CLI

USAGE = """usage: deskguard-agent run | ack --order FILE|- | execute --order FILE|- | pubkey | status
  run      one check-in (the timer): fetch, verify, acknowledge, act; then check in
  ack      verify an order given as a file (or stdin) and print the signed acknowledgement (nothing done)
  execute  carry out an order acknowledged by `ack` (verified again)
  pubkey   print the device's public key
  status   print the agent's state (no secrets)
  posture  the nightly run's posture, for the controller's request on stdin (deskguard_agent_posture)"""


def _read_order(args):
    if len(args) != 2 or args[0] != "--order":
        raise AgentError("give the order as --order FILE (or - for stdin)")
    if args[1] == "-":
        return sys.stdin.buffer.read(ORDER_LIMIT + 1)
    try:
        with open(args[1], "rb") as fh:
            return fh.read(ORDER_LIMIT + 1)
    except OSError as exc:
        raise AgentError("cannot read the order %s: %s" % (args[1], exc.strerror))


def _text(value):
    """Envelopes are bytes of UTF-8 JSON: printed as their text, so the controller can read them back."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def main(argv=None, config_path=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("run", "ack", "execute", "pubkey", "status"):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        cfg = load_config(config_path or os.environ.get("DESKGUARD_AGENT_CONFIG", CONFIG_PATH))
        if argv[0] == "pubkey":
            print(public_pem(load_private_key(cfg["device_key"])), end="")
            return 0
        if argv[0] == "status":
            data = agent_state.State.load(cfg["state_dir"]).data
            print(json.dumps({k: data[k] for k in ("last_checkin", "refusals", "lock_keep", "acknowledged")
                              if k in data}, indent=1, sort_keys=True))
            return 0
        with agent_state.exclusive(cfg["state_dir"]):
            agent = Agent(cfg, operator_status_dir=os.environ.get("DESKGUARD_OPERATOR_STATUS_DIR",
                                                                  OPERATOR_STATUS_DIR))
            if argv[0] == "run":
                result = agent.run()
            elif argv[0] == "ack":
                result = agent.ack_from_file(_read_order(argv[1:]))
            else:
                result = agent.execute_from_file(_read_order(argv[1:]))
    except (AgentError, agent_state.StateError) as exc:
        print("deskguard-agent: %s" % exc, file=sys.stderr)
        return 2
    print(json.dumps(result, sort_keys=True, default=_text))
    return 0
