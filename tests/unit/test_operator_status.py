"""`deskguard-status` for the operator: what the agent kept of its last run, said in the operator's language with
only what they can do themselves (docs/operators.md)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "plugins" / "module_utils"))
import deskguard_operator_announcements as announcements  # noqa: E402
import deskguard_operator_status as status  # noqa: E402

pytestmark = pytest.mark.unit
NOW = 1796630400  # 2026-12-07T00:00:00Z
NOBODY = 65534

POSTURE = {
    "updates": {"reboot_pending": True, "reboot_packages": ["linux-image-amd64"]},
    "usb": {"devices": [
        {"id": "0781:5567", "serial": "4C530001", "name": "Cruzer Blade", "storage": True, "authorized": False},
        {"id": "046d:c52b", "serial": "", "name": "USB Receiver", "storage": False, "authorized": True},
        {"id": "0951:1666", "serial": "", "name": "DataTraveler", "storage": True, "authorized": True}]},
    "network": {"vpn": {"interface": "wg0", "up": False, "handshake_age": None}},
    "screen_lock": {"idle_delay": "uint32 300", "lock_enabled": True},
    "disk": {"volumes": [{"luks_uuid": "secret-ish", "keyslots": [0, 1]}]},
    "vpn": {"public_key": "abc=", "peers": [{"endpoint": "203.0.113.9:51820"}], "interface_up": True,
            "config_files": ["/etc/wireguard/wg0.conf"]},
}


def saved(tmp_path, **kw):
    data = status.summary(POSTURE, {"mode": "block"}, "2026-12-06T23:50:00Z", True, now=NOW)
    data.update(kw)
    status.save(data, str(tmp_path))
    return data


def run(tmp_path, *argv, environ=None, language=""):
    (tmp_path / "operator.json").write_text(json.dumps({"language": language}))
    out = io.StringIO()
    rc = status.main(list(argv), environ=environ or {}, status_dir=str(tmp_path),
                     settings_path=str(tmp_path / "operator.json"), now=NOW, out=out)
    return rc, out.getvalue().splitlines()


def test_the_summary_keeps_only_what_an_operator_may_read():
    data = status.summary(POSTURE, {"mode": "block"}, "2026-12-06T23:50:00Z", True, now=NOW)
    assert data == {"v": 1, "written": NOW, "last_checkin": "2026-12-06T23:50:00Z", "checkin_ok": True,
                    "reboot_pending": True, "usb_storage_needs_approval": True,
                    "usb_blocked": [{"name": "Cruzer Blade", "code": "0781:5567 4C530001"}], "vpn_up": False,
                    "idle_lock_minutes": 5}
    text = json.dumps(data)
    assert not any(secret in text for secret in ("secret-ish", "abc=", "203.0.113.9", "linux-image"))
    quiet = status.summary({}, {"mode": "allow"}, None, False, now=NOW)
    assert quiet["usb_storage_needs_approval"] is False and quiet["vpn_up"] is None
    assert quiet["idle_lock_minutes"] is None and quiet["reboot_pending"] is None
    # No VPN set up on this laptop (vpn_enabled: false): the network check's "down" is not the operator's business.
    no_vpn = dict(POSTURE, vpn={"interface_up": False, "config_files": []})
    assert status.summary(no_vpn, {"mode": "block"}, None, True)["vpn_up"] is None


def test_the_operator_reads_it_in_japanese_from_the_session_locale(tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    saved(tmp_path)
    rc, lines = run(tmp_path, environ={"LANG": "ja_JP.UTF-8"})
    assert rc == 0
    assert lines == [
        "このパソコンの状態をお知らせします。",
        "セキュリティ更新のため再起動が必要です。通話していないときにパソコンを再起動してください。",
        "USB機器「Cruzer Blade」（0781:5567 4C530001）は使えません。必要なら、このコードをヘルプデスクに伝えて"
        "承認を依頼してください。",
        "会社のVPNに接続されていません。パソコンを再起動し、直らない場合はヘルプデスクに連絡してください。",
        "このパソコンの最終確認は2026-12-07 08:50です。",   # shown in the laptop's own time zone
        "USBメモリは、IT部門が承認したものだけ使えます。",
        "操作しないまま5分たつと、画面がロックされます。",
    ]
    monkeypatch.delenv("TZ")
    time.tzset()


def test_the_policy_forces_english_and_the_helpdesk_can_ask_for_either(tmp_path):
    saved(tmp_path, reboot_pending=False, usb_blocked=[], vpn_up=True)
    rc, lines = run(tmp_path, environ={"LANG": "ja_JP.UTF-8", "TZ": "UTC"}, language="en")
    assert rc == 0 and lines[0] == "Here is where this laptop stands."
    assert "Security updates are installed automatically. Nothing to do." in lines
    assert "The company VPN is connected." in lines and not any("restart" in line for line in lines)
    assert run(tmp_path, "--lang", "ja", language="en")[1][0] == "このパソコンの状態をお知らせします。"


def test_not_known_yet_stale_and_usage(tmp_path):
    assert run(tmp_path, environ={"LANG": "en_US.UTF-8"})[1] == [
        "The laptop's status is not known yet. It is updated every few minutes."]
    saved(tmp_path, last_checkin="2026-12-03T00:00:00Z")
    assert ("IT has not heard from this laptop for 4 days. Please connect it to the internet."
            in run(tmp_path)[1])
    saved(tmp_path, last_checkin=None)
    assert "IT has not heard from this laptop yet." in run(tmp_path)[1]
    (tmp_path / status.STATUS_FILE).write_text("{not json")
    assert run(tmp_path)[1][0].startswith("The laptop's status is not known yet.")
    for argv in (["--lang"], ["--lang", "fr"], ["--help"], ["--lang", "en", "x"]):
        assert run(tmp_path, *argv)[0] == 2


def test_deskguard_status_runs_as_an_ordinary_user():
    """The deployed launcher, run by the laptop's python3 as `nobody` against a status the agent (root,
    UMask=0077) wrote."""
    runuser, python3 = shutil.which("runuser") or "/usr/sbin/runuser", "/usr/bin/python3"
    if os.geteuid() != 0 or not os.path.exists(runuser) or not os.path.exists(python3):
        pytest.skip("needs root, runuser and /usr/bin/python3")
    top = Path(tempfile.mkdtemp(prefix="dg-status-"))   # pytest's tmp_path is 0700: nobody could not reach it
    try:
        top.chmod(0o755)
        lib, state = top / "lib", top / "status"
        lib.mkdir()
        for name in ("deskguard_operator_status", "deskguard_operator_network", "deskguard_operator_words",
                     "deskguard_operator_catalog", "deskguard_vpn_facts", "deskguard_operator_announcements",
                     "deskguard_files"):
            (lib / f"{name}.py").write_text((ROOT / "plugins" / "module_utils" / f"{name}.py").read_text())
        launcher = (ROOT / "roles/endpoint_agent/files/deskguard-status").read_text()
        (lib / "deskguard-status").write_text(launcher.replace("/usr/lib/deskguard-agent", str(lib)).replace(
            "sys.exit(main())", f"sys.exit(main(status_dir={str(state)!r}))"))
        for path in (lib, *lib.iterdir()):
            path.chmod(0o755 if path.is_dir() else 0o644)
        old = os.umask(0o077)
        try:
            saved(state)
            # An announcement the agent kept (deskguard_operator_announcements.keep writes the same file).
            announcements.prepare(str(state))
            kept = state / "announcements" / "0b5f8f66-1c0e-4a8e-9d59-0b2f5a1f7c11.json"
            kept.write_text(json.dumps({"id": kept.stem, "text": "明日は全員出社です。", "languages": [],
                                        "issued_at": "2026-12-06T00:00:00Z", "expires_at": "2099-01-01T00:00:00Z"}))
            kept.chmod(0o644)
        finally:
            os.umask(old)

        def as_nobody():
            return subprocess.run([runuser, "-u", "nobody", "--", python3, str(lib / "deskguard-status")],
                                  capture_output=True, text=True, timeout=60,
                                  env={"LANG": "ja_JP.UTF-8", "PATH": "/usr/bin:/bin"})

        proc = as_nobody()
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[:2] == ["IT部門からのお知らせです。", "  明日は全員出社です。"], lines
        assert lines[4].startswith("セキュリティ更新のため再起動が必要です。"), lines
        receipt = state / "seen" / f"{kept.stem}.{NOBODY}"
        assert receipt.stat().st_uid == NOBODY       # the operator's own receipt, which IT will see
        assert "明日は全員出社です。" not in as_nobody().stdout   # once per operator
        assert announcements.receipts(str(state))[0]["user"] == "nobody"
    finally:
        shutil.rmtree(top)
