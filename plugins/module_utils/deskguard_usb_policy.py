# -*- coding: utf-8 -*-
"""The USB policy as text: device ids checked, approved devices grouped, USBGuard and udev files rendered.

Pure functions (no files, no processes), shared by the `deskguard_usb*` modules on the laptop, the
`deskguard_usb` filter on the controller and `deskguard usb approve`, so a device id means the same thing
everywhere. See docs/usb.md for why the rules look the way they do.
"""

from __future__ import annotations

import re

MODES = ("block", "read_only", "allow_listed")
# A policy with more entries than this is almost certainly a generated mistake; USBGuard itself copes
# (serials of one model become one rule), but the admin should hear about it rather than wait.
MAX_APPROVED = 20000
HEADER = ("# Managed by deskguard (role usb_control, USB-001..003). Hand edits are drift: the nightly run\n"
          "# reports them and the next run of the role replaces them. See docs/usb.md.\n")
# Interface classes that never lock anyone out: HID (keyboards, mice, headset buttons) and hubs.
ALWAYS_ALLOWED_CLASSES = ("03", "09")
STORAGE_CLASS = "08"

_ID = re.compile(r"^([0-9A-Fa-f]{4}):([0-9A-Fa-f]{4})$")
# Printable ASCII without the two characters the rule language would need escaped; no edge spaces.
_SERIAL = re.compile(r'^[!#-\[\]-~](?:[ !#-\[\]-~]{0,124}[!#-\[\]-~])?$')
_CLASS = re.compile(r"^[0-9a-f]{2}$")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_WITH_INTERFACE = re.compile(r"with-interface\s+(?:[a-z-]+\s+)?(\{[^}]*\}|\S+)")


# The policy options both USB modules take (AnsibleModule argument_spec form).
MODULE_ARGS = dict(
    mode=dict(type="str", required=True, choices=list(MODES)),
    approved_devices=dict(type="list", elements="dict", default=[]),
    allowed_classes=dict(type="list", elements="str", default=[]),
)


class PolicyError(ValueError):
    """A policy value deskguard refuses; the message names the entry and says what is expected."""


def parse_device(text):
    """'VVVV:PPPP' or 'VVVV:PPPP:SERIAL' -> {'id': 'vvvv:pppp', 'serial': str | None} (PolicyError if not)."""
    if not isinstance(text, str):
        raise PolicyError("a device must be written VENDOR:PRODUCT[:SERIAL], got %r" % (text,))
    parts = text.split(":", 2)
    if len(parts) < 2:
        raise PolicyError("device %r: write it VENDOR:PRODUCT[:SERIAL] with 4 hex digits each, "
                          "e.g. 0951:1666:E0D55EA573FC" % text[:80])
    return check_device({"id": ":".join(parts[:2]), "serial": parts[2] if len(parts) == 3 else None})


def check_device(entry, where="device"):
    """One approved-device entry ({id, serial?, ...}) checked and normalised (lower-case id)."""
    if not isinstance(entry, dict):
        raise PolicyError("%s must be a mapping {id: VVVV:PPPP, serial: ...}, got %r" % (where, entry))
    dev_id = entry.get("id")
    match = _ID.match(dev_id) if isinstance(dev_id, str) else None
    if not match:
        raise PolicyError("%s: id %r is not VENDOR:PRODUCT with 4 hex digits each (e.g. 0951:1666); "
                          "wildcards are not accepted" % (where, str(dev_id)[:40]))
    if match.group(1) == "0000":
        raise PolicyError("%s: vendor 0000 is not a real USB vendor" % where)
    serial = entry.get("serial")
    if serial is not None and serial != "":
        if not isinstance(serial, str) or not _SERIAL.match(serial):
            raise PolicyError("%s: serial %r must be 1-126 printable ASCII characters without quotes, "
                              "backslashes or leading/trailing spaces" % (where, str(serial)[:40]))
    else:
        serial = None
    out = dict(entry)
    out["id"] = dev_id.lower()
    out["serial"] = serial
    return out


def check_approved(entries):
    """The policy's approved list checked; PolicyError names the first bad entry by its position."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise PolicyError("usb_control_approved_devices must be a list, got %s" % type(entries).__name__)
    if len(entries) > MAX_APPROVED:
        raise PolicyError("usb_control_approved_devices has %d entries (at most %d): approve a model "
                          "without serials instead of listing every stick" % (len(entries), MAX_APPROVED))
    return [check_device(e, "usb_control_approved_devices[%d]" % i) for i, e in enumerate(entries)]


def check_classes(classes):
    out = []
    for c in classes or []:
        c = str(c).lower()
        if not _CLASS.match(c) or c == STORAGE_CLASS:
            raise PolicyError("usb_control_allowed_classes: %r must be a two-hex-digit USB interface class "
                              "other than 08 (mass storage is governed by the mode)" % c)
        out.append(c)
    return out


def group_approved(entries):
    """[(id, sorted serials or None)] in id order: one rule per model, however many sticks are listed.

    A model approved without a serial covers every serial of it, so its serial list is dropped.
    """
    by_id = {}
    for e in entries:
        serials = by_id.setdefault(e["id"], set())
        if serials is None:
            continue
        if e["serial"] is None:
            by_id[e["id"]] = None
        else:
            serials.add(e["serial"])
    return [(i, None if s is None else sorted(s)) for i, s in sorted(by_id.items())]


def _classes_set(classes):
    return "{ %s }" % " ".join("%s:*:*" % c for c in classes)


def is_storage_rule(rule):
    """Does a USBGuard rule (e.g. from generate-policy) name a mass-storage interface? Quoted strings
    (names, serials) are blanked first so a name that merely looks like '08:06:50' does not count."""
    bare = _QUOTED.sub('""', rule)
    for match in _WITH_INTERFACE.finditer(bare):
        for token in match.group(1).strip("{}").split():
            if token.lower().startswith(STORAGE_CLASS + ":"):
                return True
    return False


def enrolment_rules(generated):
    """The laptop's own devices from `usbguard generate-policy`, minus anything with a storage interface
    (a stick that happened to be plugged in at enrolment must not become approved)."""
    keep = []
    for line in generated.splitlines():
        line = line.strip()
        if line.startswith("allow ") and not is_storage_rule(line):
            keep.append(line)
    return keep


def render_rules(mode, approved, allowed_classes, enrolment):
    """The whole rules.conf. Order matters (first match wins): input devices first, then the laptop's
    own devices, then storage according to the mode; anything else falls to ImplicitPolicyTarget=block."""
    if mode not in MODES:
        raise PolicyError("usb_control_mode must be one of %s, got %r" % (", ".join(MODES), mode))
    classes = list(ALWAYS_ALLOWED_CLASSES) + [c for c in check_classes(allowed_classes)
                                              if c not in ALWAYS_ALLOWED_CLASSES]
    lines = [HEADER.rstrip("\n"), "# mode: %s" % mode, "",
             "# Keyboards, mice and hubs are never locked out; nor are devices made only of these classes.",
             'allow with-interface match-all %s label "deskguard: input and hubs"' % _classes_set(classes), "",
             "# This laptop's own devices, recorded at enrolment (mass storage left out)."]
    lines += list(enrolment) or ["# (none recorded)"]
    lines.append("")
    storage = _classes_set([STORAGE_CLASS])
    if mode == "block":
        lines.append("# block: no mass storage at all (falls to the implicit block).")
    elif mode == "read_only":
        lines.append("# read_only: storage-only devices are allowed; udev makes their disks read-only.")
        lines.append('allow with-interface match-all %s label "deskguard: read-only storage"' % storage)
    else:
        lines.append("# allow_listed: approved devices only, and only if they are nothing but storage.")
        for dev_id, serials in group_approved(approved):
            if serials is None:
                match = ""
            elif len(serials) == 1:
                match = ' serial "%s"' % serials[0]
            else:
                match = " serial one-of { %s }" % " ".join('"%s"' % s for s in serials)
            lines.append('allow id %s%s with-interface match-all %s label "deskguard: approved"'
                         % (dev_id, match, storage))
    return "\n".join(lines) + "\n"


DAEMON_SETTINGS = (
    ("RuleFile", "/etc/usbguard/rules.conf"),
    # The kit owns rules.conf alone: files dropped in a rules folder would be drift nobody reviewed.
    ("RuleFolder", "/etc/usbguard/rules.d/"),
    ("ImplicitPolicyTarget", "block"),
    # Evaluate what is attached when the daemon starts: the rules already allow input devices, hubs and
    # the laptop's own devices, so nothing legitimate breaks, and a stick left in over a reboot stays
    # blocked (`keep` would let it through, since the kernel authorises everything during boot).
    ("PresentDevicePolicy", "apply-policy"),
    ("PresentControllerPolicy", "keep"),
    ("InsertedDevicePolicy", "apply-policy"),
    ("AuthorizedDefault", "none"),
    ("RestoreControllerDeviceState", "false"),
    ("DeviceManagerBackend", "uevent"),
    # Only root may talk to the daemon: Debian's package lets the plugdev group allow devices.
    ("IPCAllowedUsers", "root"),
    ("IPCAllowedGroups", ""),
    ("IPCAccessControlFiles", "/etc/usbguard/IPCAccessControl.d/"),
    ("DeviceRulesWithPort", "false"),
    ("AuditBackend", "FileAudit"),
    ("AuditFilePath", "/var/log/usbguard/usbguard-audit.log"),
    ("HidePII", "false"),
)


def render_daemon_conf():
    body = "\n".join("%s=%s" % kv for kv in DAEMON_SETTINGS)
    return HEADER + body + "\n"


def render_udev_read_only(blockdev):
    """udev rule for read_only: the kernel marks every USB disk and partition read-only (BLKROSET via
    blockdev), which holds for any mounter, root's `mount` included; udisks is also told to mount ro and
    not to accept rw. One positive match: a negated SUBSYSTEMS (parent search) would match any device."""
    return (HEADER +
            "# USB-001 read_only: USB block devices are read-only at the kernel level.\n"
            'ACTION=="add|change", SUBSYSTEM=="block", SUBSYSTEMS=="usb", \\\n'
            '  ENV{UDISKS_MOUNT_OPTIONS_DEFAULTS}="ro", \\\n'
            # udisks' common allow-set without `rw`, so a desktop cannot ask for a writable mount.
            '  ENV{UDISKS_MOUNT_OPTIONS_ALLOW}="exec,noexec,nodev,nosuid,atime,noatime,nodiratime,ro,sync,dirsync,'
            'noload", \\\n'
            '  RUN+="%s --setro $devnode"\n' % blockdev)


def normalise_rules(listing):
    """Rule lines in the daemon's own serialisation, from either `usbguard list-rules` ('N: rule') or
    `usbguard-rule-parser` (which echoes 'INPUT: line' and prints 'OUTPUT: rule'); comments and blank
    lines dropped."""
    lines = [line.strip() for line in listing.splitlines()]
    if any(line.startswith("OUTPUT:") for line in lines):
        lines = [line[len("OUTPUT:"):].strip() for line in lines if line.startswith("OUTPUT:")]
    else:
        lines = [re.sub(r"^\d+:\s*", "", line) for line in lines]
    return [line for line in lines if line and not line.startswith("#")]
