"""The agent's state file, dead-man arithmetic, AGT-001 facts and command line: plain unit tests (no cryptsetup)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import agentlab  # noqa: F401  (puts plugins/module_utils on sys.path)
import deskguard_agent
import deskguard_agent_health as health
import deskguard_agent_state as st

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
NONCE = "ab" * 32


def test_state_round_trip_atomic_and_private(tmp_path):
    state = st.State.load(tmp_path / "s")
    assert state.data == st.empty()
    state.remember(NONCE, "executed", order_id="o1")
    state.checked_in(1_700_000_000)
    state.save()
    path = tmp_path / "s" / st.STATE_FILE
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in (tmp_path / "s").iterdir()] == [st.STATE_FILE], "no temporary file left behind"
    again = st.State.load(tmp_path / "s")
    assert again.seen(NONCE) and again.seen(NONCE, "o1") and not again.seen(NONCE, "o2")
    assert again.last_checkin() == 1_700_000_000


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"v": 99}'])
def test_a_damaged_state_file_is_an_error_never_a_blank_memory(tmp_path, content):
    (tmp_path / st.STATE_FILE).write_bytes(content)
    with pytest.raises(st.StateError):
        st.State.load(tmp_path)


def test_refusals_are_bounded_and_dropped_once_reported(tmp_path):
    state = st.State.load(tmp_path)
    for i in range(st.MAX_REFUSALS + 7):
        state.refuse(None, "bad_signature", now=1_700_000_000 + i)
    assert len(state.pending_refusals()) == st.MAX_REFUSALS and state.data["refusals_dropped"] == 7
    assert not state.data["nonces"], "a forged order's nonce is never remembered"
    state.refuse("o9", "expired", nonce=NONCE)
    assert state.seen(NONCE, "o9")
    state.refusals_reported(st.MAX_REFUSALS - 1)      # the check-in carried all but the newest
    assert [r["reason"] for r in state.pending_refusals()] == ["expired"]


def test_nonce_memory_is_bounded_oldest_first(tmp_path, monkeypatch):
    monkeypatch.setattr(st, "MAX_NONCES", 5)
    state = st.State.load(tmp_path)
    for i in range(8):
        state.remember("%064x" % i, "executed", now=1_700_000_000 + i)
    assert sorted(state.data["nonces"]) == ["%064x" % i for i in range(3, 8)]


def test_acknowledged_orders_are_forgotten_once_done(tmp_path):
    state = st.State.load(tmp_path)
    state.acknowledge(NONCE, "o1")
    assert state.acknowledged(NONCE, "o1") and not state.acknowledged(NONCE, "o2")
    state.remember(NONCE, "executed", order_id="o1")
    assert not state.acknowledged(NONCE, "o1")


@pytest.mark.parametrize("last,installed,now_days,days,due", [
    (0, None, 2.9, 3, False),
    (0, None, 3.1, 3, True),
    (None, 0, 3.1, 3, True),           # never checked in: counted from the installation
    (None, None, 30, 3, False),         # nothing to count from
    (0, None, 100, 0, False),           # off
    (5 * 86400, 0, 7, 3, False),        # a later check-in restarts the count
])
def test_deadman_arithmetic(last, installed, now_days, days, due):
    assert st.deadman_due(last, installed, now_days * 86400, days) is due


def test_one_agent_run_at_a_time(tmp_path):
    order = []

    def second():
        with st.exclusive(tmp_path):
            order.append("second")

    with st.exclusive(tmp_path):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        order.append("first")
    t.join(5)
    assert order == ["first", "second"]


def test_utc_round_trip():
    assert st.parse_utc(st.utc(1_700_000_000)) == 1_700_000_000
    with pytest.raises(ValueError):
        st.parse_utc("2026-11-29 00:00:00")


# ------------------------------------------------------------------------------------------ AGT-001 facts

def _root(tmp_path, state=None, key=True):
    (tmp_path / "usr/lib/deskguard-agent").mkdir(parents=True)
    (tmp_path / "usr/lib/deskguard-agent/deskguard-agent").write_text("#!/usr/bin/python3\n")
    (tmp_path / "etc/deskguard-agent").mkdir(parents=True)
    (tmp_path / "etc/deskguard-agent/agent.json").write_text(json.dumps(
        {"device_key": "/etc/deskguard-agent/device.key", "state_dir": "/var/lib/deskguard-agent",
         "deadman_days": 7}))
    if key:
        (tmp_path / "etc/deskguard-agent/device.key").write_text("k")
    if state is not None:
        (tmp_path / "var/lib/deskguard-agent").mkdir(parents=True)
        (tmp_path / "var/lib/deskguard-agent/state.json").write_text(json.dumps(state))
    return tmp_path


def test_health_facts_of_a_healthy_agent(tmp_path):
    root = _root(tmp_path, {"last_checkin": "2026-11-28T23:00:00Z", "refusals": [{"reason": "expired"}]})
    now = st.parse_utc("2026-11-29T00:00:00Z")
    facts = health.collect(str(root), now=now, systemctl=lambda verb, unit: {"is-enabled": "enabled",
                                                                          "is-active": "active"}[verb])
    assert facts == {"installed": True, "timer_enabled": True, "timer_active": True, "device_key_present": True,
                     "last_checkin": "2026-11-28T23:00:00Z", "last_checkin_age_seconds": 3600,
                     "pending_refusals": 1, "deadman_days": 7}


def test_health_facts_of_a_missing_or_stopped_agent(tmp_path):
    assert health.collect(str(tmp_path))["installed"] is False
    root = _root(tmp_path / "r", key=False)
    facts = health.collect(str(root), systemctl=lambda verb, unit: "disabled" if verb == "is-enabled" else "inactive")
    assert facts["installed"] and not facts["timer_enabled"] and not facts["timer_active"]
    assert facts["device_key_present"] is False and facts["last_checkin"] is None


def test_posture_has_the_agent_section():
    import deskguard_posture

    assert deskguard_posture.COLLECTORS["agent"].__name__ == "_agent"


# ---------------------------------------------------------------------------------------------- the CLI

def test_cli_usage_and_missing_configuration(tmp_path, capsys):
    assert deskguard_agent.main([]) == 2
    assert "usage: deskguard-agent" in capsys.readouterr().err
    assert deskguard_agent.main(["run"], config_path=str(tmp_path / "none.json")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("deskguard-agent: cannot read") and "\n" not in err
    (tmp_path / "bad.json").write_text('{"device_uuid": "x"}')
    assert deskguard_agent.main(["run"], config_path=str(tmp_path / "bad.json")) == 2
    assert "lacks orders_url" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists("/usr/bin/python3"), reason="no system python3")
def test_agent_runs_on_debians_python3_and_python3_cryptography(tmp_path):
    """The laptop runs the agent with Debian's interpreter and python3-cryptography (38 in bookworm), not this
    venv's: the launcher's `ack` on a real order, through the installed layout."""
    probe = subprocess.run(["/usr/bin/python3", "-c", "import cryptography; print(cryptography.__version__)"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("python3-cryptography is not installed for /usr/bin/python3")
    from agentlab import order, proto, write_device_key, config

    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("deskguard_agent", "deskguard_agent_http", "deskguard_agent_linux", "deskguard_agent_state",
                 "deskguard_agent_health", "deskguard_protocol", "deskguard_posture", "deskguard_luks",
                 "deskguard_luks_inspect", "deskguard_tpm_bind", "deskguard_tpm_inspect", "deskguard_reboot",
                 "deskguard_ufw", "deskguard_ufw_inspect"):
        (lib / f"{name}.py").write_text((REPO / "plugins/module_utils" / f"{name}.py").read_text())
    launcher = (REPO / "roles/endpoint_agent/files/deskguard-agent").read_text()
    (lib / "deskguard-agent").write_text(launcher.replace('"/usr/lib/deskguard-agent"', repr(str(lib))))
    okey = proto.generate_private_key()
    write_device_key(tmp_path / "device.key")
    cfg = config(tmp_path, "http://127.0.0.1:9", okey, tmp_path / "device.key")
    (tmp_path / "agent.json").write_text(json.dumps(cfg))
    _, body = order(okey, ["6a4f2c1e-0000-4000-8000-000000000000"])
    proc = subprocess.run(["/usr/bin/python3", str(lib / "deskguard-agent"), "ack", "--order", "-"], input=body,
                          capture_output=True, env=dict(os.environ, DESKGUARD_AGENT_CONFIG=str(tmp_path / "agent.json")))
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout)
    # This machine has no such volume: an authentic order refused as foreign, with a signed refusal.
    assert (out["status"], out["reason"]) == ("refused", "foreign_volumes"), (out, probe.stdout)
    assert proto.parse_envelope(out["ack"].encode(), 8192).unverified_payload()["status"] == "refused"
    assert sys.version_info >= (3, 9)


def test_wipe_locks_accounts_without_killing_sessions():
    """The management connection carrying the order runs in a user's session: killing sessions first killed
    the agent before it erased anything (seen on the lab VM). Accounts are locked; power-off ends sessions."""
    import deskguard_agent_linux as linux

    calls = []
    out = linux.lock_out_users(["tanaka", "dgadmin"], run=lambda argv: calls.append(argv) or (0, ""))
    assert out == [("tanaka", True), ("dgadmin", True)]
    assert calls == [["usermod", "--lock", "--expiredate", "1", "tanaka"],
                     ["usermod", "--lock", "--expiredate", "1", "dgadmin"]]
