"""`deskguard-status`: what IT requires of this laptop and where it stands, told to the operator (no root) in
their language, with only what they can do themselves.

Two halves, one file. The agent (root, at every run) keeps an operator-safe summary of the posture it has just
collected for its check-in: `save(summary(...))` writes /var/lib/deskguard-status/status.json, readable by
everyone and holding nothing secret (no keys, no keyslots, no addresses: whether a reboot is pending, which
USB storage devices are blocked, whether the VPN is up, the idle lock, when IT last heard from the laptop).
`deskguard-status` (any user) reads it and prints it through the operator catalogs. The policy's language
(endpoint_agent_operator_language) comes from /etc/deskguard/operator.json, written by the endpoint_agent
role. Pure Python 3.9+ stdlib; see docs/operators.md.
"""

from __future__ import annotations

import calendar
import os
import sys
import time

try:  # inside a module (Ansiballz) the kit's module_utils live under ansible.module_utils
    from ansible.module_utils import deskguard_operator_announcements as announcements
    from ansible.module_utils.deskguard_files import read_json_object, write_json
    from ansible.module_utils.deskguard_operator_network import VPN_DOWN
    from ansible.module_utils.deskguard_operator_words import N_, say, session_language
except ImportError:  # unit tests, the controller and the agent import them as plain modules
    import deskguard_operator_announcements as announcements
    from deskguard_files import read_json_object, write_json
    from deskguard_operator_network import VPN_DOWN
    from deskguard_operator_words import N_, say, session_language

STATUS_DIR = "/var/lib/deskguard-status"
STATUS_FILE = "status.json"
SETTINGS_PATH = "/etc/deskguard/operator.json"
VERSION = 1
STALE_DAYS = 2              # IT expects a check-in every few minutes; two days without one is worth saying
MAX_BLOCKED = 5             # a status is read by a person: the newest few blocked sticks are enough

ANNOUNCEMENT = N_("A message from IT.")
HEADER = N_("Here is where this laptop stands.")
NOT_YET = N_("The laptop's status is not known yet. It is updated every few minutes.")
LAST_HEARD = N_("IT last heard from this laptop on %(when)s.")
NEVER_HEARD = N_("IT has not heard from this laptop yet.")
STALE = N_("IT has not heard from this laptop for %(days)d days. Please connect it to the internet.")
REBOOT = N_("A security update needs a restart. Please restart the laptop when you are not on a call.")
UPDATES_OK = N_("Security updates are installed automatically. Nothing to do.")
USB_RULE = N_("USB sticks work only after IT has approved them.")
USB_BLOCKED = N_("The USB device \"%(name)s\" (%(code)s) is blocked. If you need it for work, ask the helpdesk "
                 "to approve it and give them this code.")
VPN_OK = N_("The company VPN is connected.")
LOCK_RULE = N_("The screen locks after %(minutes)d minutes without use.")


# ----------------------------------------------------------------------------------- the agent's half (root)

def _blocked_storage(usb):
    out = []
    for dev in (usb or {}).get("devices") or []:
        if dev.get("storage") and not dev.get("authorized"):
            code = " ".join(x for x in (dev.get("id"), dev.get("serial")) if x)
            out.append({"name": dev.get("name") or dev.get("id") or "?", "code": code or "?"})
    return out[:MAX_BLOCKED]


def _vpn_up(posture):
    """None when this laptop has no VPN set up (the policy has none: nothing to tell the operator)."""
    facts = posture.get("vpn") or {}
    if not facts.get("config_files"):
        return None
    vpn = (posture.get("network") or {}).get("vpn")
    return bool(vpn.get("up")) if vpn else bool(facts.get("interface_up"))


def _idle_minutes(screen_lock):
    delay = (screen_lock or {}).get("idle_delay")
    try:
        seconds = int(str(delay).split()[-1])   # dconf writes 'uint32 300'
    except (TypeError, ValueError, IndexError):
        return None
    return seconds // 60 if seconds > 0 and (screen_lock or {}).get("lock_enabled") in (True, "true") else None


def save_after_run(posture, usb_params, last_checkin, checkin_ok, directory):
    """The agent's call after each run. Never fails the run (a status an operator reads is not worth a missed
    check-in): returns True, or the reason it could not be written."""
    try:
        data = summary(posture or {}, usb_params, last_checkin, checkin_ok)
        previous = read_json_object(os.path.join(directory, STATUS_FILE)) or {}
        # Since when a restart has been pending: the notifications' deadline counts from it (docs/operators.md).
        if data["reboot_pending"]:
            data["reboot_pending_since"] = (previous.get("reboot_pending_since") if previous.get("reboot_pending")
                                            else None) or data["written"]
        save(data, directory)
        return True
    except Exception as exc:  # noqa: BLE001 - anything: the check-in has happened and must be reported as such
        return "%s: %s" % (type(exc).__name__, str(exc)[:200])


def summary(posture, usb_params, last_checkin, checkin_ok, now=None):
    """What an operator may read of the posture the agent collected (nothing secret, nothing they cannot act on)."""
    updates = posture.get("updates") or {}
    mode = (usb_params or {}).get("mode")
    return {"v": VERSION, "written": int(time.time() if now is None else now), "last_checkin": last_checkin,
            "checkin_ok": bool(checkin_ok), "reboot_pending": updates.get("reboot_pending"),
            "usb_storage_needs_approval": bool(mode) and mode != "allow",
            "usb_blocked": _blocked_storage(posture.get("usb")), "vpn_up": _vpn_up(posture),
            "idle_lock_minutes": _idle_minutes(posture.get("screen_lock"))}


def save(data, directory=STATUS_DIR, name=STATUS_FILE):
    """Atomically, world-readable (0644 in a 0755 folder): the operator reads it without any privilege."""
    os.makedirs(directory, mode=0o755, exist_ok=True)
    os.chmod(directory, 0o755)
    write_json(os.path.join(directory, name), data, 0o644)


# ------------------------------------------------------------------------------ the operator's half (anyone)

def _local_time(text):
    try:
        epoch = calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))
    except (TypeError, ValueError):
        return None, None
    return epoch, time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch))


def messages(status, now=None):
    """[(message, params)] for a saved status (None: not known yet), most urgent first."""
    now = time.time() if now is None else now
    if not status or status.get("v") != VERSION:
        return [(NOT_YET, {})]
    out = [(HEADER, {})]
    if status.get("reboot_pending"):
        out.append((REBOOT, {}))
    for dev in status.get("usb_blocked") or []:
        out.append((USB_BLOCKED, {"name": dev.get("name") or "?", "code": dev.get("code") or "?"}))
    if status.get("vpn_up") is False:
        out.append((VPN_DOWN, {}))
    epoch, shown = _local_time(status.get("last_checkin"))
    if epoch is None:
        out.append((NEVER_HEARD, {}))
    elif now - epoch > STALE_DAYS * 86400:
        out.append((STALE, {"days": int((now - epoch) // 86400)}))
    else:
        out.append((LAST_HEARD, {"when": shown}))
    # What IT requires, for the record: only what the operator meets day to day.
    if status.get("reboot_pending") is False:
        out.append((UPDATES_OK, {}))
    if status.get("vpn_up"):
        out.append((VPN_OK, {}))
    if status.get("usb_storage_needs_approval"):
        out.append((USB_RULE, {}))
    if status.get("idle_lock_minutes"):
        out.append((LOCK_RULE, {"minutes": int(status["idle_lock_minutes"])}))
    return out


def main(argv=None, environ=None, status_dir=STATUS_DIR, settings_path=SETTINGS_PATH, now=None, out=None,
         uid=None):
    argv = sys.argv[1:] if argv is None else argv
    out = out or sys.stdout
    environ = os.environ if environ is None else environ
    if argv and (len(argv) != 2 or argv[0] != "--lang" or argv[1] not in ("en", "ja")):
        print("usage: deskguard-status [--lang en|ja]", file=sys.stderr)
        return 2
    settings = read_json_object(settings_path) or {}
    language = argv[1] if argv else session_language(environ, settings.get("language") or "")
    # IT's announcements first, each shown once to each operator (their receipt is what IT sees as "seen").
    uid = os.getuid() if uid is None else uid
    for item in announcements.kept(status_dir, now):
        if announcements.for_language(item, language) and not announcements.seen(status_dir, item["id"], uid):
            out.write(say(language, ANNOUNCEMENT) + "\n" + "\n".join("  " + line for line in
                                                                   item["text"].splitlines()) + "\n\n")
            announcements.mark_seen(status_dir, item["id"], uid)
    status = read_json_object(os.path.join(status_dir, STATUS_FILE))
    for message, params in messages(status, now):
        out.write(say(language, message, **params) + "\n")
    return 0
