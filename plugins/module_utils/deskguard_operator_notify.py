"""`deskguard-notify`: desktop notifications for the operator, in their session (freedesktop Notifications on
the session D-Bus), from what the agent kept: a restart a security update needs, with the policy's deadline and
reminders as it nears, and IT's announcements (each one shown once; its receipt is what IT sees as "seen").

Quiet by design (policy, /etc/deskguard/operator.json written by endpoint_agent): nothing during quiet hours
(default 20:00-08:00, the laptop's local time), at most one notification per kind per N hours (default 4), and
every notification also written to the agent's log (`logger -t deskguard-agent`, the journal's
SYSLOG_IDENTIFIER the agent's own lines carry). Sent with `busctl --user call` (systemd's own D-Bus client,
on every systemd laptop): no Python D-Bus library needed. Started in each desktop session by
/etc/xdg/autostart/deskguard-notify.desktop; checks every few minutes. Pure Python 3.9+ stdlib; docs/operators.md.

Network trouble: what the last network check of the laptop found (deskguard_operator_netwatch, run as root at
every network change, keeps the words' keys in network.json and wakes this loop with SIGUSR1).

Not (yet) here: a call in progress (not cheaply known), Windows toasts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

try:  # inside a module (Ansiballz) the kit's module_utils live under ansible.module_utils
    from ansible.module_utils import deskguard_operator_announcements as announcements
    from ansible.module_utils import deskguard_operator_status as operator_status
    from ansible.module_utils.deskguard_files import read_json_object, write_json
    from ansible.module_utils.deskguard_operator_words import N_, fit_body, say, session_language
except ImportError:  # unit tests, the controller and the agent import them as plain modules
    import deskguard_operator_announcements as announcements
    import deskguard_operator_status as operator_status
    from deskguard_files import read_json_object, write_json
    from deskguard_operator_words import N_, fit_body, say, session_language

DEFAULTS = {"language": "", "quiet_hours": "20:00-08:00", "notify_every_hours": 4, "reboot_deadline_hours": 72}
CHECK_EVERY_SECONDS = 300
NETWORK_FILE = "network.json"       # deskguard_operator_netwatch.NETWORK_FILE (root side; not imported here)
WAKE = signal.SIGUSR1               # deskguard_operator_netwatch.WAKE
URGENCY = {"normal": 1, "critical": 2}

REBOOT_SUMMARY = N_("Please restart the laptop.")
REBOOT_BODY = N_("A security update needs a restart. Please restart by %(deadline)s, when you are not on a call.")
NETWORK_SUMMARY = N_("Your network is not suitable for calls.")
REBOOT_OVERDUE = N_("A security update has been waiting for a restart since %(deadline)s. Please restart now "
                    "if you are not on a call.")


def settings(path=operator_status.SETTINGS_PATH):
    data = dict(DEFAULTS)
    data.update({k: v for k, v in (read_json_object(path) or {}).items() if k in DEFAULTS})
    return data


def quiet(quiet_hours, local):
    """Is ``local`` (a time.struct_time) inside 'HH:MM-HH:MM' (which may span midnight)? Empty: never quiet."""
    if not quiet_hours:
        return False
    try:
        start, end = ((int(h) * 60 + int(m)) for h, m in (part.split(":") for part in quiet_hours.split("-")))
    except ValueError:
        return False
    minute = local.tm_hour * 60 + local.tm_min
    return start <= minute < end if start <= end else minute >= start or minute < end


def due(status, kept, was_seen, memory, cfg, now, local=None, network=None):
    """The notifications to send now: [(kind, summary, body, params, urgency)], at most one per kind, none in
    quiet hours, none of a kind sent less than notify_every_hours ago. ``memory``: {kind: last sent epoch}."""
    local = local or time.localtime(now)
    if quiet(cfg.get("quiet_hours"), local):
        return []
    every = float(cfg.get("notify_every_hours") or DEFAULTS["notify_every_hours"]) * 3600
    out = []
    if status and status.get("reboot_pending") and status.get("reboot_pending_since"):
        deadline = status["reboot_pending_since"] + float(cfg.get("reboot_deadline_hours") or 72) * 3600
        shown = time.strftime("%Y-%m-%d %H:%M", time.localtime(deadline))
        near = deadline - now <= every      # the last stretch: the reminder turns critical
        out.append(("reboot", REBOOT_SUMMARY, REBOOT_OVERDUE if now >= deadline else REBOOT_BODY,
                    {"deadline": shown}, "critical" if near else "normal"))
    if network and network.get("trouble") and network.get("messages"):   # the body: the checker's own words
        out.append(("network", NETWORK_SUMMARY, None, {"lines": network["messages"]}, "normal"))
    unseen = [a for a in kept if not was_seen(a["id"])]
    if unseen:
        out.append(("announcement:" + unseen[0]["id"], operator_status.ANNOUNCEMENT, None,
                    {"text": unseen[0]["text"]}, "normal"))
    return [n for n in out if now - float(memory.get(n[0].split(":")[0], 0)) >= every]


def send(summary, body, urgency, run=subprocess.run):
    """One freedesktop Notify call on the session bus; returns the notification id (the server's answer)."""
    argv = ["busctl", "--user", "--json=short", "--", "call", "org.freedesktop.Notifications",
            "/org/freedesktop/Notifications", "org.freedesktop.Notifications", "Notify", "susssasa{sv}i",
            "deskguard", "0", "dialog-information", summary, body, "0", "1", "urgency", "y",
            str(URGENCY[urgency]), "-1"]
    proc = run(argv, capture_output=True, text=True, timeout=15)
    if proc.returncode != 0:
        raise OSError("Notify failed: %s" % " ".join(proc.stderr.split())[:200])
    return json.loads(proc.stdout)["data"][0]


def call_in_progress(run=subprocess.run):
    """The program recording from a microphone now (its name), or None: on the operator's own sound server
    (PipeWire or PulseAudio, read with pactl), a recording stream from a source that is not a monitor of the
    speakers. A softphone in a call holds one (muted too); a screen recorder of the speakers does not count.
    None also when it cannot be known (no pactl, no sound server): then nothing is held."""
    def pactl(*args):
        proc = run(["pactl", "--format=json", *args], capture_output=True, text=True, timeout=5)
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    try:
        sources, streams = pactl("list", "short", "sources"), pactl("list", "source-outputs")
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    if not isinstance(sources, list) or not isinstance(streams, list):
        return None
    monitors = {s.get("index") for s in sources if isinstance(s, dict) and str(s.get("name", "")).endswith(".monitor")}
    for stream in streams:
        if isinstance(stream, dict) and stream.get("source") not in monitors:
            props = stream.get("properties") if isinstance(stream.get("properties"), dict) else {}
            return " ".join(str(props.get("application.name") or "a program").split())[:60]   # one log line
    return None


def log(line, run=subprocess.run):
    """Into the agent's log (journal identifier deskguard-agent), as the operator's own process."""
    try:
        run(["logger", "-t", "deskguard-agent", "--", line], timeout=10, capture_output=True)
    except (OSError, subprocess.SubprocessError):
        pass


def _body(language, body, params):
    if body is not None:
        return say(language, body, **params)
    if "lines" in params:   # network trouble: one line per failed control, as deskguard netcheck --lang says them
        return " ".join(say(language, message, **(line_params or {})) for message, line_params in params["lines"])
    # IT's text may be long; a notification shows about four lines (deskguard_operator_words.BODY_UNITS).
    return fit_body(language, params["text"])


def check_once(status_dir, settings_path, memory_path, environ, uid, user, now=None, send_fn=send, log_fn=log,
               call_fn=call_in_progress):
    """One check: what is due is sent, logged and remembered; while the operator is on a call, held (logged,
    not remembered: the next check after the call sends it). Returns what was sent [(kind, summary, body)]."""
    now = time.time() if now is None else now
    cfg = settings(settings_path)
    language = session_language(environ, cfg.get("language") or "")
    status = read_json_object(os.path.join(status_dir, operator_status.STATUS_FILE))
    kept = [a for a in announcements.kept(status_dir, now) if announcements.for_language(a, language)]
    memory = read_json_object(memory_path) or {}
    network = read_json_object(os.path.join(status_dir, NETWORK_FILE))
    sent = []
    now_due = due(status, kept, lambda i: announcements.seen(status_dir, i, uid), memory, cfg, now, network=network)
    caller = call_fn() if now_due else None
    if caller:
        log_fn("held for %s (%s): a call is in progress (%s is recording from a microphone)" % (
            user, ", ".join(kind.split(":")[0] for kind, *_ in now_due), caller))
        return sent
    for kind, summary, body, params, urgency in now_due:
        title = say(language, summary)
        text = _body(language, body, params)
        send_fn(title, text, urgency)
        log_fn("notified %s (%s, %s): %s %s" % (user, kind, language, title, " ".join(text.split())))
        if kind.startswith("announcement:"):
            announcements.mark_seen(status_dir, kind.split(":", 1)[1], uid)
        memory[kind.split(":")[0]] = now
        sent.append((kind, title, text))
    if sent:
        os.makedirs(os.path.dirname(memory_path), exist_ok=True)
        write_json(memory_path, memory, 0o600)
    return sent


def main(argv=None, environ=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv not in ([], ["--once"]):
        print("usage: deskguard-notify [--once]", file=sys.stderr)
        return 2
    environ = os.environ if environ is None else environ
    import pwd

    uid = os.getuid()
    user = pwd.getpwuid(uid).pw_name
    state = environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    memory_path = os.path.join(state, "deskguard", "notify.json")
    # deskguard-network-check (root) wakes this loop at a network change. A handler first (the checker signals
    # only a process that catches the signal, so none is ended by it), then blocked: a wake during a check waits
    # for sigtimedwait below.
    signal.signal(WAKE, lambda _signum, _frame: None)
    signal.pthread_sigmask(signal.SIG_BLOCK, {WAKE})
    while True:
        try:
            check_once(operator_status.STATUS_DIR, operator_status.SETTINGS_PATH, memory_path, environ, uid, user)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            print("deskguard-notify: %s" % exc, file=sys.stderr)   # next round tries again
        if argv == ["--once"]:
            return 0
        signal.sigtimedwait({WAKE}, CHECK_EVERY_SECONDS)
