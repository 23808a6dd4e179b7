"""IT's announcements end to end, for real: `deskguard announce` signs and publishes, a real `deskguard serve`
gives each laptop its own, the agent verifies and keeps them, `deskguard-status` shows each once to each
operator (in their language), the next check-in reports who saw it, `deskguard announce status` tells IT.
Forged, foreign and replayed announcements are never kept nor shown (docs/operators.md)."""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest

import agentlab as lab
import sitetools
from agentlab import proto

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "plugins" / "module_utils"))
import deskguard_announcement as ann  # noqa: E402
import deskguard_operator_status as operator_status  # noqa: E402

pytestmark = pytest.mark.unit
TEXT_JA = "明日9時から9時30分まで通話システムを更新します。"
NOBODY = 65534


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A site with two onboarded laptops (device keys registered) and one host never onboarded, served."""
    from deskguard.site.inventory import add_host
    from deskguard.store import Store

    tmp = tmp_path_factory.mktemp("announce")
    with pytest.MonkeyPatch.context() as mp:   # init and the store in-process must not see a DESKGUARD_DB_URL
        mp.delenv("DESKGUARD_DB_URL", raising=False)
        site = sitetools.init_site(tmp / "site")
        devices = {}
        with Store.open(site) as store:
            for name in ("lt-1", "lt-2"):
                add_host(site, name, {"ansible_host": "127.0.0.1"})
                devices[name] = store.register_device(name, "debian", "127.0.0.1", 22, "dgadmin", None)
                key = lab.write_device_key(tmp / f"{name}.key")
                store.set_agent_public_key(devices[name].uuid, proto.public_key_pem(key).decode())
        add_host(site, "fl-9", {"ansible_host": "127.0.0.1"})
    with sitetools.serving(site) as port:
        yield {"site": site, "devices": devices, "keys": tmp, "url": f"http://127.0.0.1:{port}"}


@pytest.fixture
def fleet(served, tmp_path, monkeypatch):
    """Each test starts with nothing announced and laptops that have never run."""
    import shutil

    from deskguard.operators.announce import announcements_dir
    from deskguard.orders import agent as controller

    monkeypatch.delenv("DESKGUARD_DB_URL", raising=False)
    shutil.rmtree(announcements_dir(served["site"]), ignore_errors=True)
    site, devices = served["site"], served["devices"]

    def agent(name, **kw):
        (tmp_path / name).mkdir(exist_ok=True)
        cfg = lab.config(tmp_path / name, served["url"], None, served["keys"] / f"{name}.key",
                         order_public_key=controller.order_public_pem(site), device_uuid=devices[name].uuid)
        return lab.agent_mod.Agent(cfg, volumes={}, actions=lab.Actions(), log=lambda m: None,
                                   posture=lambda: ({"os": {"id": "debian"}}, {}, {}),
                                   operator_status_dir=str(tmp_path / name / "status"), **kw)

    return {"site": site, "devices": devices, "agent": agent, "status": lambda n: tmp_path / n / "status"}


def status_lines(status_dir, uid, lang="ja"):
    out = io.StringIO()
    assert operator_status.main(["--lang", lang], environ={}, status_dir=str(status_dir), out=out, uid=uid,
                                settings_path="/nonexistent") == 0
    return out.getvalue()


def announce(site, *args):
    proc = sitetools.run_deskguard(site, "announce", *args, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def test_announced_fetched_shown_once_per_operator_and_reported_seen(fleet):
    site = fleet["site"]
    import datetime as dt

    until = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30)).strftime("%Y-%m-%d")
    rc, out = announce(site, TEXT_JA, "--to", "all", "--lang", "ja", "--until", until, "--json")
    assert rc == 0, out
    done = json.loads(out)
    assert done["laptops"] == ["lt-1", "lt-2"] and done["not_onboarded"] == ["fl-9"]
    assert done["expires_at"] == f"{until}T23:59:59Z"

    run = fleet["agent"]("lt-1").run()
    assert run["announcements"] == {"kept": [done["id"]], "refused": {}} and run["checkin"]["ok"], run
    box = fleet["status"]("lt-1")
    assert stat.S_IMODE((box / "seen").stat().st_mode) == 0o1733
    assert stat.S_IMODE((box / "announcements" / f"{done['id']}.json").stat().st_mode) == 0o644

    first = status_lines(box, NOBODY)
    assert first.startswith(f"IT部門からのお知らせです。\n  {TEXT_JA}\n\n"), first
    assert TEXT_JA not in status_lines(box, NOBODY)              # once per operator
    assert TEXT_JA in status_lines(box, 1000)                    # another operator of the same laptop
    assert TEXT_JA not in status_lines(box, 1001, lang="en")     # --lang ja: not for English readers
    for receipt in (box / "seen").iterdir():                     # as the operators' own processes would own them
        os.chown(receipt, int(receipt.name.split(".")[1]), -1)

    # The next run (a later check-in: the store keeps a laptop's newest by its clock) reports the receipts.
    again = fleet["agent"]("lt-1", now=time.time() + 60).run()   # served again while kept: not new, not refused
    assert again["announcements"] == {"kept": [], "refused": {}}, again
    rc, out = announce(site, "status", done["id"][:8], "--json")
    assert rc == 0, out
    (entry,) = json.loads(out)
    users = sorted(r["user"] for r in entry["seen"]["lt-1"])
    import pwd

    expected = sorted(pwd.getpwuid(u).pw_name if _has_uid(u) else None for u in (NOBODY, 1000))
    assert users == [u for u in expected if u], entry["seen"]
    assert entry["seen"]["lt-2"] == []                            # lt-2 has not checked in
    rc, text = announce(site, "status")
    assert rc == 0 and f"{done['id'][:8]}  all" in text and " 1/2 " in text, text


def _has_uid(uid):
    import pwd

    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        return False


def test_forged_foreign_and_replayed_announcements_are_never_shown(fleet, tmp_path):
    from deskguard.operators.announce import device_dir

    site, devices = fleet["site"], fleet["devices"]
    lt1, lt2 = devices["lt-1"].uuid, devices["lt-2"].uuid
    folder = device_dir(site, lt1)
    folder.mkdir(parents=True, exist_ok=True)
    # Forged: the right shape, signed with a key that is not the site's order key.
    forged = ann.build(lt1, "パスワードを it-help@example.net に送ってください。")
    (folder / forged["announcement_id"]).write_bytes(proto.sign(forged, proto.generate_private_key()))
    # Foreign: genuinely signed, but for lt-2, copied into lt-1's folder.
    rc, out = announce(site, "for lt-2 only", "--to", "lt-2", "--json")
    assert rc == 0, out
    foreign_id = json.loads(out)["id"]
    (folder / foreign_id).write_bytes((device_dir(site, lt2) / foreign_id).read_bytes())
    run = fleet["agent"]("lt-1").run()
    assert run["announcements"] == {"kept": [], "refused": {"foreign_device": 1, "unknown_key": 1}}, run
    box = fleet["status"]("lt-1")
    assert list((box / "announcements").iterdir()) == []
    assert "A message from IT." not in status_lines(box, NOBODY, lang="en")

    # Replayed: a genuine one, kept and shown, then removed from the laptop's box and served again.
    rc, out = announce(site, "genuine", "--to", "lt-1", "--json")
    genuine = json.loads(out)["id"]
    assert fleet["agent"]("lt-1").run()["announcements"]["kept"] == [genuine]
    (box / "announcements" / f"{genuine}.json").unlink()
    run = fleet["agent"]("lt-1").run()
    assert run["announcements"]["refused"].get("replayed") == 1 and run["announcements"]["kept"] == [], run
    assert "genuine" not in status_lines(box, 1234, lang="en")


def test_the_server_gives_announcements_only_to_their_laptop(fleet):
    import urllib.error
    import urllib.request

    site, devices = fleet["site"], fleet["devices"]
    assert announce(site, "hello", "--to", "lt-1")[0] == 0
    # lt-2's agent asking with lt-1's UUID in the URL: its fetch names lt-2 (refused); a fetch signed with a key
    # that is not lt-1's, naming lt-1, is refused too.
    agent2 = fleet["agent"]("lt-2")
    url = agent2.cfg["server_url"] + "/v1/announcements/" + devices["lt-1"].uuid
    for body in (agent2._sign(proto.build_fetch(devices["lt-2"].uuid)),
                 proto.sign(proto.build_fetch(devices["lt-1"].uuid), proto.generate_private_key()), b""):
        req = urllib.request.Request(url, data=body, method="POST", headers={"content-type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert 400 <= refused.value.code < 500
    ok = urllib.request.urlopen(urllib.request.Request(
        url, data=fleet["agent"]("lt-1")._sign(proto.build_fetch(devices["lt-1"].uuid)), method="POST"), timeout=10)
    assert len(json.loads(ok.read())["announcements"]) == 1


@pytest.mark.parametrize("args, says", [
    (["", "--to", "all"], "1 to 1000 characters"),
    (["x\x1b[2J", "--to", "all"], "control characters"),
    (["x", "--to", "nosuchgroup"], "names no laptop"),
    (["x", "--to", "fl-9"], "no onboarded laptop"),
    (["x", "--to", "all", "--lang", "fr"], "--lang 'fr'"),
    (["x", "--to", "all", "--until", "2001-01-01"], "already past"),
    (["x", "--to", "all", "--until", "soon"], "is not a date"),
    (["status", "ffffffff"], "no announcement"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_published(fleet, args, says):
    from deskguard.operators.announce import announcements_dir

    before = sorted(p.name for p in announcements_dir(fleet["site"]).rglob("*")) \
        if announcements_dir(fleet["site"]).exists() else []
    rc, out = announce(fleet["site"], *args)
    assert rc == 2 and says in out and "Traceback" not in out, out
    after = sorted(p.name for p in announcements_dir(fleet["site"]).rglob("*")) \
        if announcements_dir(fleet["site"]).exists() else []
    assert after == before
