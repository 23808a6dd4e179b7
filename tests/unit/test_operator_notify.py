"""`deskguard-notify` (docs/operators.md): what is due (a restart with its deadline and reminders, IT's
announcements once), quiet hours and one per kind per N hours; and the exact notifications a real freedesktop
notification server receives on a real session bus (dbus-daemon + a recording server), in Japanese and English,
sent by the laptop's own `busctl`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "plugins" / "module_utils"))
import deskguard_operator_announcements as announcements  # noqa: E402
import deskguard_operator_notify as notify  # noqa: E402
import deskguard_operator_status as status  # noqa: E402
import deskguard_operator_words as words  # noqa: E402

pytestmark = pytest.mark.unit
NOW = 1796630400.0                       # 2026-12-07 00:00 UTC
CFG = dict(notify.DEFAULTS, quiet_hours="20:00-08:00")
DAY = time.struct_time((2026, 12, 7, 10, 0, 0, 0, 341, 0))
NIGHT = time.struct_time((2026, 12, 7, 22, 30, 0, 0, 341, 0))


@pytest.mark.parametrize("hours, hh, mm, quiet", [
    ("20:00-08:00", 22, 30, True), ("20:00-08:00", 7, 59, True), ("20:00-08:00", 8, 0, False),
    ("20:00-08:00", 12, 0, False), ("12:00-13:00", 12, 30, True), ("", 3, 0, False), ("nonsense", 3, 0, False),
])
def test_quiet_hours_span_midnight(hours, hh, mm, quiet):
    assert notify.quiet(hours, time.struct_time((2026, 12, 7, hh, mm, 0, 0, 341, 0))) is quiet


def test_a_pending_restart_is_asked_for_with_its_deadline_and_turns_urgent_near_it():
    pending = {"reboot_pending": True, "reboot_pending_since": NOW}
    (n,) = notify.due(pending, [], lambda i: False, {}, CFG, NOW + 3600, local=DAY)
    assert n[0] == "reboot" and n[1] == notify.REBOOT_SUMMARY and n[2] == notify.REBOOT_BODY and n[4] == "normal"
    assert n[3]["deadline"] == time.strftime("%Y-%m-%d %H:%M", time.localtime(NOW + 72 * 3600))
    near = notify.due(pending, [], lambda i: False, {}, CFG, NOW + 70 * 3600, local=DAY)[0]
    assert near[4] == "critical" and near[2] == notify.REBOOT_BODY
    late = notify.due(pending, [], lambda i: False, {}, CFG, NOW + 80 * 3600, local=DAY)[0]
    assert late[2] == notify.REBOOT_OVERDUE and late[4] == "critical"
    assert notify.due({"reboot_pending": False}, [], lambda i: False, {}, CFG, NOW, local=DAY) == []


def test_quiet_hours_and_one_per_kind_per_n_hours():
    pending = {"reboot_pending": True, "reboot_pending_since": NOW}
    kept = [{"id": "a1", "text": "t"}, {"id": "a2", "text": "u"}]
    assert notify.due(pending, kept, lambda i: False, {}, CFG, NOW, local=NIGHT) == []
    got = notify.due(pending, kept, lambda i: False, {}, CFG, NOW, local=DAY)
    assert [n[0] for n in got] == ["reboot", "announcement:a1"]          # one announcement at a time
    recent = {"reboot": NOW - 3600, "announcement": NOW - 3600}
    assert notify.due(pending, kept, lambda i: False, recent, CFG, NOW, local=DAY) == []
    later = {"reboot": NOW - 4 * 3600, "announcement": NOW - 3600}
    assert [n[0] for n in notify.due(pending, kept, lambda i: i == "a1", later, CFG, NOW, local=DAY)] == ["reboot"]
    assert [n[0] for n in notify.due(None, kept, lambda i: i == "a1", {}, CFG, NOW, local=DAY)] == ["announcement:a2"]


@pytest.fixture
def session_bus(tmp_path, monkeypatch):
    """A real session bus (dbus-daemon) with the recording notification server on it."""
    if not (shutil.which("dbus-daemon") and shutil.which("busctl")):
        pytest.skip("needs dbus-daemon and busctl")
    pytest.importorskip("dbus_next")
    daemon = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address=1"],
                              stdout=subprocess.PIPE, text=True)
    address = daemon.stdout.readline().strip()
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
    out = tmp_path / "notifications.jsonl"
    server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("notify_capture.py")), str(out)],
                              stdout=subprocess.PIPE, text=True, env=dict(os.environ, DBUS_SESSION_BUS_ADDRESS=address))
    try:
        assert server.stdout.readline().strip() == "ready"
        yield lambda: [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] \
            if out.exists() else []
    finally:
        server.terminate()
        daemon.terminate()
        server.wait(timeout=10)
        daemon.wait(timeout=10)


def test_the_exact_notifications_on_a_real_session_bus_in_both_languages(session_bus, tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    box = tmp_path / "status"
    now = time.time()
    status.save({"v": 1, "written": int(now), "reboot_pending": True, "reboot_pending_since": int(now) - 3600},
                str(box))
    announcements.prepare(str(box))
    kept = {"id": "0b5f8f66-1c0e-4a8e-9d59-0b2f5a1f7c11", "text": "明日9時から通話システムを更新します。",
            "languages": [], "issued_at": "2026-12-06T00:00:00Z", "expires_at": "2099-01-01T00:00:00Z"}
    (box / "announcements" / f"{kept['id']}.json").write_text(json.dumps(kept, ensure_ascii=False))
    settings = tmp_path / "operator.json"
    settings.write_text(json.dumps({"language": "", "quiet_hours": "", "notify_every_hours": 4,
                                    "reboot_deadline_hours": 72}))
    logged = []
    deadline = time.strftime("%Y-%m-%d %H:%M", time.localtime(int(now) - 3600 + 72 * 3600))

    def once(uid, lang, when):
        return notify.check_once(str(box), str(settings), str(tmp_path / f"memory-{uid}.json"),
                                 {"LANG": lang}, uid, f"user{uid}", now=when, log_fn=logged.append)

    sent_ja = once(1000, "ja_JP.UTF-8", now)
    sent_en = once(1001, "en_US.UTF-8", now)
    assert len(sent_ja) == len(sent_en) == 2
    assert once(1000, "ja_JP.UTF-8", now + 60) == []               # one per kind per 4 hours; shown once
    got = session_bus()
    assert got == [
        {"app_name": "deskguard", "summary": "パソコンを再起動してください。", "urgency": 1, "expire_timeout": -1,
         "icon": "dialog-information",
         "body": f"セキュリティ更新のため再起動が必要です。{deadline}までに、通話していないときに再起動してください。"},
        {"app_name": "deskguard", "summary": "IT部門からのお知らせです。", "urgency": 1, "expire_timeout": -1,
         "icon": "dialog-information", "body": "明日9時から通話システムを更新します。"},
        {"app_name": "deskguard", "summary": "Please restart the laptop.", "urgency": 1, "expire_timeout": -1,
         "icon": "dialog-information",
         "body": f"A security update needs a restart. Please restart by {deadline}, when you are not on a call."},
        {"app_name": "deskguard", "summary": "A message from IT.", "urgency": 1, "expire_timeout": -1,
         "icon": "dialog-information", "body": "明日9時から通話システムを更新します。"},
    ], got
    assert len(logged) == 4 and logged[0].startswith("notified user1000 (reboot, ja): パソコンを再起動してください。")
    assert announcements.seen(str(box), kept["id"], 1000) and announcements.seen(str(box), kept["id"], 1001)
    # Four hours later the restart is asked for again, now urgent; the announcement is not shown again.
    again = once(1000, "ja_JP.UTF-8", now + 4 * 3600 + 1)
    assert [k for k, _t, _b in again] == ["reboot"]
    assert session_bus()[-1]["urgency"] == 1
    last = once(1000, "ja_JP.UTF-8", now + 68 * 3600 + 2)
    assert [k for k, _t, _b in last] == ["reboot"] and session_bus()[-1]["urgency"] == 2
    monkeypatch.delenv("TZ")
    time.tzset()


def test_no_notification_server_is_an_error_the_loop_survives(tmp_path, monkeypatch):
    if not shutil.which("busctl"):
        pytest.skip("needs busctl")
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    with pytest.raises(OSError, match="Notify failed"):
        notify.send("s", "b", "normal")


@pytest.mark.parametrize("language, text", [("ja", "明日9時から通話システムを更新します。" * 40),
                                            ("en", "The call system is updated tomorrow from 9:00 to 9:30. " * 18)])
def test_a_long_announcement_is_cut_to_what_a_notification_shows_and_says_where_the_rest_is(tmp_path, language,
                                                                                            text):
    """IT may write up to 1000 characters; a toast shows four lines (docs/operators.md, "How long a notification
    may be"). The notification gets the beginning, "…" and where to read it all; deskguard-status shows it all."""
    box = tmp_path / "status"
    announcements.prepare(str(box))
    kept = {"id": "0b5f8f66-1c0e-4a8e-9d59-0b2f5a1f7c11", "text": text[:1000], "languages": [],
            "issued_at": "2026-12-06T00:00:00Z", "expires_at": "2099-01-01T00:00:00Z"}
    (box / "announcements" / f"{kept['id']}.json").write_text(json.dumps(kept, ensure_ascii=False))
    settings = tmp_path / "operator.json"
    settings.write_text(json.dumps({"quiet_hours": ""}))
    shown = []
    notify.check_once(str(box), str(settings), str(tmp_path / "memory.json"), {"LANG": f"{language}.UTF-8"}, 1000,
                      "op", now=NOW, send_fn=lambda s, b, u: shown.append(b), log_fn=lambda line: None)
    (body,) = shown
    first, more = body.split("\n")
    assert first.endswith("…") and text.startswith(first[:-1]) and len(first) > 20, body
    assert more == words.say(language, words.MORE)
    assert words.width(first) + words.width(more) <= words.BODY_UNITS
    assert words.fit_body(language, "短いお知らせです。") == "短いお知らせです。"


# -- none while a call is in progress (issue 23 D): the operator's sound server, read with pactl ----------------------
# Recorded from PipeWire 1.4 (pipewire-pulse) in a Debian 13 laptop container, operator session, pactl 17: a dummy
# output's monitor and a virtual microphone `headset-mic`; `parecord` recording from the monitor (a screen recorder's
# kind) and from the microphone (a softphone's). tests/container/test_demo.py runs the real thing.
SOURCES = [{"index": 39, "name": "auto_null.monitor", "driver": "PipeWire", "state": "SUSPENDED"},
           {"index": 52, "name": "headset-mic", "driver": "PipeWire", "state": "SUSPENDED"}]
FROM_MONITOR = {"index": 60, "source": 39, "client": "59", "corked": False,
                "properties": {"application.name": "obs", "stream.capture.sink": "true"}}
FROM_MIC = {"index": 66, "source": 52, "client": "61", "corked": True,
            "properties": {"application.name": "parecord", "media.name": "/dev/null"}}


def pactl_answering(sources, streams, rc=0):
    def run(argv, **_kw):
        assert argv[:2] == ["pactl", "--format=json"], argv
        data = sources if argv[2:] == ["list", "short", "sources"] else streams
        return subprocess.CompletedProcess(argv, rc, stdout=json.dumps(data) if rc == 0 else "", stderr="")
    return run


@pytest.mark.parametrize("streams, caller", [
    ([], None),                                   # nothing records
    ([FROM_MONITOR], None),                       # a recorder of the speakers is not a call
    ([FROM_MONITOR, FROM_MIC], "parecord"),       # the microphone is in use (muted/corked too)
])
def test_a_call_is_a_microphone_in_use(streams, caller):
    assert notify.call_in_progress(run=pactl_answering(SOURCES, streams)) == caller


def test_no_sound_server_or_no_pactl_holds_nothing():
    assert notify.call_in_progress(run=pactl_answering(SOURCES, [FROM_MIC], rc=1)) is None   # no server

    def missing(argv, **_kw):
        raise FileNotFoundError(2, "No such file or directory", "pactl")

    assert notify.call_in_progress(run=missing) is None

    def garbage(argv, **_kw):
        return subprocess.CompletedProcess(argv, 0, stdout="Connection failure", stderr="")

    assert notify.call_in_progress(run=garbage) is None


def test_notifications_wait_for_the_end_of_the_call(tmp_path):
    box = tmp_path / "status"
    status.save({"v": 1, "written": int(NOW), "reboot_pending": True, "reboot_pending_since": int(NOW) - 3600},
                str(box))
    announcements.prepare(str(box))
    settings = tmp_path / "operator.json"
    settings.write_text(json.dumps({"quiet_hours": ""}))
    memory, logged, shown = tmp_path / "memory.json", [], []
    on_call = ["softphone"]

    def once(when):
        return notify.check_once(str(box), str(settings), str(memory), {"LANG": "en_US.UTF-8"}, 1000, "tanaka",
                                 now=when, send_fn=lambda *a: shown.append(a), log_fn=logged.append,
                                 call_fn=lambda: on_call[0])

    assert once(NOW) == [] and shown == [] and not memory.exists()     # held, and not counted as shown
    assert logged == ["held for tanaka (reboot): a call is in progress (softphone is recording from a microphone)"]
    on_call[0] = None
    assert [kind for kind, *_ in once(NOW + 300)] == ["reboot"] and len(shown) == 1   # the next check after it
    assert json.loads(memory.read_text()) == {"reboot": NOW + 300}
