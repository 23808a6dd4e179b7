"""The posture collector (module_utils/deskguard_posture) on a fake root: read-only, one section's failure
does not hide the others, and it is fast."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "module_utils"))
import deskguard_posture as dp  # noqa: E402

pytestmark = pytest.mark.unit


def make_root(tmp_path, idle=300):
    etc = tmp_path / "etc" / "dconf"
    (etc / "db" / "local.d" / "locks").mkdir(parents=True)
    (etc / "profile").mkdir()
    (etc / "profile" / "user").write_text("user-db:user\nsystem-db:local\n")
    (etc / "db" / "local.d" / "00-deskguard-screenlock").write_text(
        f"# managed\n[org/gnome/desktop/session]\nidle-delay=uint32 {idle}\n\n"
        "[org/gnome/desktop/screensaver]\nlock-enabled=true\nlock-delay=uint32 0\n")
    (etc / "db" / "local.d" / "locks" / "00-deskguard-screenlock").write_text(
        "/org/gnome/desktop/session/idle-delay\n/org/gnome/desktop/screensaver/lock-enabled\n")
    db = etc / "db" / "local"
    db.write_bytes(b"GVariant")
    os.utime(db, (time.time() + 5, time.time() + 5))
    return tmp_path


def test_screen_lock_settings_are_read_as_values(tmp_path):
    got = dp._screen_lock(str(make_root(tmp_path)), {})
    assert got == {"idle_delay": 300, "lock_enabled": True, "lock_delay": 0, "profile_uses_local_db": True,
                   "db_compiled": True, "locked": ["/org/gnome/desktop/screensaver/lock-enabled",
                                                   "/org/gnome/desktop/session/idle-delay"],
                   # No desktop and no GNOME reader under this root: the session was not read, and it says why.
                   "session": {"desktop": None, "desktops_found": [], "checked": False, "values": {},
                               "writable": {}, "why": "no desktop found and GNOME's settings reader is not installed (no "
                               "/usr/share/glib-2.0/schemas/org.gnome.desktop.session.gschema.xml, /usr/bin/gsettings, "
                               "/usr/bin/dbus-run-session, /usr/sbin/runuser)"}}


def test_another_desktop_is_named_and_its_lock_not_read(tmp_path):
    root = make_root(tmp_path)
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/startplasma-x11").write_text("")
    session = dp._screen_lock(str(root), {"operator": "tanaka"})["session"]
    assert session["desktop"] == "KDE Plasma" and not session["checked"] and "KDE Plasma found" in session["why"]


def test_a_settings_file_newer_than_the_database_is_seen(tmp_path):
    root = make_root(tmp_path)
    settings = root / "etc/dconf/db/local.d/00-deskguard-screenlock"
    os.utime(settings, (time.time() + 60, time.time() + 60))
    assert dp._screen_lock(str(root), {})["db_compiled"] is False


def test_one_failing_section_is_reported_and_the_rest_collected(tmp_path, monkeypatch):
    def boom(root, params):
        raise RuntimeError("ufw status failed")

    monkeypatch.setitem(dp.COLLECTORS, "firewall", boom)
    posture, errors, timings = dp.collect(["os", "screen_lock", "firewall"], root=str(make_root(tmp_path)))
    assert set(posture) == {"os", "screen_lock"} and errors == {"firewall": "RuntimeError: ufw status failed"}
    assert set(timings) == {"os", "screen_lock", "firewall"}


def test_collecting_changes_nothing(tmp_path):
    root = make_root(tmp_path)
    before = {p: p.stat().st_mtime for p in root.rglob("*")}
    posture, errors, _ = dp.collect(["os", "screen_lock"], root=str(root))
    assert {p: p.stat().st_mtime for p in root.rglob("*")} == before
    assert posture["screen_lock"]["idle_delay"] == 300 and not errors


def test_the_usb_section_without_the_policy_is_an_error_not_a_guess(tmp_path):
    posture, errors, _ = dp.collect(["usb"], root=str(make_root(tmp_path)))
    assert posture == {} and "the USB policy was not given" in errors["usb"]
