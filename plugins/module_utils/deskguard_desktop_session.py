"""LCK-001's effective values: what the operator's own desktop session gets, read by the desktop's own settings
reader, rather than the dconf files the screen_lock role writes (a file can be present and still not be honoured:
a database not recompiled, a profile that does not read it, no dconf backend for GSettings).

GNOME only: `gsettings get` / `gsettings writable`, run as the operator in a session bus of their own
(`dbus-run-session`, as a login would give them), with GNOME's schemas. Any other desktop, or no reader, is
reported as such and never as a value: the judge says "not checked". Pure stdlib."""

from __future__ import annotations

import os
import subprocess

# (schema, key) -> the posture's name for the effective value
KEYS = ((("org.gnome.desktop.session", "idle-delay"), "idle_delay"),
        (("org.gnome.desktop.screensaver", "lock-enabled"), "lock_enabled"),
        (("org.gnome.desktop.screensaver", "lock-delay"), "lock_delay"))
GNOME_SCHEMA = "usr/share/glib-2.0/schemas/org.gnome.desktop.session.gschema.xml"
READER = ("usr/bin/gsettings", "usr/bin/dbus-run-session", "usr/sbin/runuser")
# Desktops whose idle lock is not GNOME's settings (their session program, relative to root).
OTHER_DESKTOPS = (("KDE Plasma", "usr/bin/startplasma-x11"), ("KDE Plasma", "usr/bin/startplasma-wayland"),
                  ("Xfce", "usr/bin/xfce4-session"), ("MATE", "usr/bin/mate-session"),
                  ("Cinnamon", "usr/bin/cinnamon-session"), ("LXQt", "usr/bin/lxqt-session"))
GNOME_SESSION = ("usr/bin/gnome-shell", "usr/bin/gnome-session")


def _value(text):
    """gsettings' GVariant text: 'uint32 300' -> 300, 'true' -> True."""
    text = text.strip()
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text.split()[-1])
    except (ValueError, IndexError):
        return text


def found_desktops(root="/"):
    names = ["GNOME"] if any(os.path.exists(os.path.join(root, p)) for p in GNOME_SESSION) else []
    names += [name for name, path in OTHER_DESKTOPS if os.path.exists(os.path.join(root, path))]
    return sorted(set(names))


def read(operator, root="/", timeout=30):
    """{"desktop", "desktops_found", "reader", "checked", "values", "writable", "why"}: checked is True only when
    GNOME's reader answered for every key as the operator."""
    found = found_desktops(root)
    out = {"desktops_found": found, "checked": False, "values": {}, "writable": {}}
    others = [name for name in found if name != "GNOME"]
    if others:
        out["desktop"] = others[0]
        out["why"] = "%s found: the kit sets GNOME's idle lock only" % ", ".join(others)
        return out
    missing = [p for p in (GNOME_SCHEMA, *READER) if not os.path.exists(os.path.join(root, p))]
    # GNOME's settings (schemas and reader) are what LCK-001 reads, with or without GNOME's shell installed.
    out["desktop"] = "GNOME" if found or not missing else None
    if missing:
        out["why"] = "%sGNOME's settings reader is not installed (no /%s)" % (
            "" if found else "no desktop found and ", ", /".join(missing))
        return out
    if root != "/" or not operator:
        out["why"] = "no operator recorded for this laptop" if not operator else "not the running system"
        return out
    lines = []
    for (schema, key), _ in KEYS:
        lines.append("gsettings get %s %s; echo; gsettings writable %s %s; echo" % (schema, key, schema, key))
    # A session bus of the operator's own, as their login gets; HOME so GSettings reads their user database.
    argv = ["runuser", "-u", operator, "--", "env", "-i", "HOME=" + _home(operator), "PATH=/usr/bin:/bin",
            "dbus-run-session", "--", "sh", "-c", "; ".join(lines)]
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                              env=dict(os.environ, LC_ALL="C", LANG="C"))
    except (OSError, subprocess.TimeoutExpired) as exc:
        out["why"] = "gsettings as %s did not answer: %s" % (operator, exc)
        return out
    answers = [line for line in proc.stdout.decode(errors="replace").splitlines() if line.strip()]
    if proc.returncode != 0 or len(answers) != 2 * len(KEYS):
        out["why"] = "gsettings as %s failed: %s" % (operator, proc.stderr.decode(errors="replace").strip()[-200:])
        return out
    for i, ((schema, key), name) in enumerate(KEYS):
        out["values"][name] = _value(answers[2 * i])
        out["writable"][name] = answers[2 * i + 1].strip() == "true"
    out["checked"] = True
    out["reader"] = "gsettings as %s in a D-Bus session (dbus-run-session)" % operator
    return out


def _home(user):
    import pwd

    try:
        return pwd.getpwnam(user).pw_dir
    except KeyError:
        return "/nonexistent"
