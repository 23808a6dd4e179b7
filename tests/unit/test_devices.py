"""`deskguard devices ...` and `deskguard audit ...` through the real entry point (subprocess)."""

from __future__ import annotations

import json

import pytest
from sitetools import deskguard

pytestmark = pytest.mark.unit

HV = dict(os="ubuntu", address="10.8.0.42", port=22, ssh_user="tanaka", operator="Tanaka Yui")


def one_line_error(proc, code):
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("deskguard: "), proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def site(site):
    """An initialised site with two devices, one with an escrowed secret (on each store backend)."""
    tmp_path = site
    from deskguard.recovery import keys
    from deskguard.site.inventory import ensure_hosts_file, register_and_add
    from deskguard.store import Store

    keys.init_keys(tmp_path, "correct horse battery staple")
    ensure_hosts_file(tmp_path)
    with Store.open(tmp_path, create=True) as store:
        d, _ = register_and_add(tmp_path, store, "tanaka-laptop", **HV)
        register_and_add(tmp_path, store, "sato-laptop", **{**HV, "address": "10.8.0.43", "ssh_user": "sato"})
        blob = keys.seal(keys.load_escrow_public_key(tmp_path), b"RECOVERY-KEY-1234", d.uuid, "luks-recovery",
                         "slot1")
        store.add_secret(d.uuid, "luks-recovery", "slot1", blob, escrow_key_id=keys.envelope_key_id(blob))
    return tmp_path


def test_list_and_show(site):
    proc = deskguard("devices", "list", site=site)
    assert proc.returncode == 0 and "tanaka-laptop" in proc.stdout and "sato-laptop" in proc.stdout
    rows = json.loads(deskguard("devices", "list", "--json", site=site).stdout)
    assert [r["hostname"] for r in rows] == ["sato-laptop", "tanaka-laptop"]
    shown = json.loads(deskguard("devices", "show", "TANAKA-laptop", "--json", site=site).stdout)
    assert shown["hostname"] == "tanaka-laptop" and shown["in_inventory"] is True
    assert [s["kind"] for s in shown["secrets"]] == ["luks-recovery"] and "ciphertext" not in shown["secrets"][0]
    text = deskguard("devices", "show", "tanaka-laptop", site=site).stdout
    assert "luks-recovery slot1 (active" in text and "RECOVERY" not in text


def test_list_shows_last_seen_from_a_checkin_or_a_live_run(site):
    import datetime as dt

    from deskguard.store import Store

    lines = {line.split()[0]: line for line in deskguard("devices", "list", site=site).stdout.splitlines()[1:]}
    assert " never " in lines["tanaka-laptop"]
    with Store.open(site) as store:
        tanaka, sato = store.get_device("tanaka-laptop"), store.get_device("sato-laptop")
        store.record_checkin(tanaka.uuid, {"type": "checkin"}, dt.datetime(2026, 11, 29, 1, 0),
                             received_at=dt.datetime(2026, 11, 29, 1, 0, 5))
        store.mark_seen([sato.uuid], via="live", at=dt.datetime(2026, 11, 28, 22, 30))
    lines = {line.split()[0]: line for line in deskguard("devices", "list", site=site).stdout.splitlines()[1:]}
    assert " 2026-11-29 01:00 checkin " in lines["tanaka-laptop"]
    assert " 2026-11-28 22:30 live " in lines["sato-laptop"]
    rows = {r["hostname"]: r for r in json.loads(deskguard("devices", "list", "--json", site=site).stdout)}
    assert rows["tanaka-laptop"]["last_seen_via"] == "checkin"
    assert rows["tanaka-laptop"]["last_seen_at"].startswith("2026-11-29T01:00:05")


def test_show_unknown_and_invalid_hosts(site):
    one_line_error(deskguard("devices", "show", "nobody", site=site), 2)
    one_line_error(deskguard("devices", "show", "bad;host", site=site), 2)
    one_line_error(deskguard("devices", "remove", "--yes", "bad host", site=site), 2)


def test_remove_needs_the_typed_hostname(site):
    before = (site / "inventory" / "hosts.yml").read_bytes()
    proc = deskguard("devices", "remove", "tanaka-laptop", site=site, stdin="sato-laptop\n")
    # The prompt (stderr) is followed by the one-line error.
    assert proc.returncode == 2 and proc.stderr.startswith("Type the hostname to remove tanaka-laptop")
    assert proc.stderr.count("\n") == 1 and ": deskguard: the typed name does not match" in proc.stderr
    assert (site / "inventory" / "hosts.yml").read_bytes() == before
    proc = deskguard("devices", "remove", "tanaka-laptop", site=site, stdin="tanaka-laptop\n")
    assert proc.returncode == 0, proc.stderr
    assert "1 escrowed secret(s) kept" in proc.stdout
    assert "tanaka-laptop" not in (site / "inventory" / "hosts.yml").read_text()
    assert not (site / "inventory" / "host_vars" / "tanaka-laptop.yml").exists()
    assert [r["hostname"] for r in json.loads(deskguard("devices", "list", "--json", site=site).stdout)] == \
        ["sato-laptop"]
    shown = json.loads(deskguard("devices", "show", "tanaka-laptop", "--json", site=site).stdout)
    assert shown["state"] == "removed" and shown["secrets"][0]["destroyed_at"] is None
    entries = json.loads(deskguard("audit", "list", "--json", "--target", "tanaka-laptop", site=site).stdout)
    assert entries[-1]["action"] == "device.remove" and entries[-1]["detail"]["secrets_kept"] == 1
    one_line_error(deskguard("devices", "remove", "--yes", "tanaka-laptop", site=site), 2)  # already gone


def test_remove_with_yes(site):
    proc = deskguard("devices", "remove", "sato-laptop", "--yes", site=site)
    assert proc.returncode == 0, proc.stderr
    assert "sato-laptop" not in (site / "inventory" / "hosts.yml").read_text()


def test_audit_verify_intact_then_tampered(site):
    proc = deskguard("audit", "verify", site=site)
    assert proc.returncode == 0 and "chain intact" in proc.stdout
    from deskguard.store import Store

    with Store.open(site) as store, store.engine.begin() as c:
        c.exec_driver_sql("DROP TRIGGER audit_no_update" if c.dialect.name == "sqlite"
                          else "DROP TRIGGER audit_no_change ON audit")
        c.exec_driver_sql("UPDATE audit SET actor = 'mallory' WHERE id = 2")
    proc = deskguard("audit", "verify", site=site)
    one_line_error(proc, 1)
    assert "entry 2" in proc.stderr
    assert json.loads(deskguard("audit", "verify", "--json", site=site).stdout)["first_bad_id"] == 2


def test_uninitialised_site_is_one_line_exit_4(tmp_path):
    for args in (("devices", "list"), ("audit", "verify"), ("devices", "show", "x")):
        one_line_error(deskguard(*args, site=tmp_path / "empty"), 4)


def test_unreachable_postgresql_is_one_line_exit_4(tmp_path, monkeypatch):
    monkeypatch.setenv("DESKGUARD_DB_URL", "postgresql+psycopg://deskguard:s3cret@127.0.0.1:1/deskguard")
    proc = deskguard("devices", "list", site=tmp_path)
    one_line_error(proc, 4)
    assert "127.0.0.1" in proc.stderr and "s3cret" not in proc.stderr  # where it looked, never the password


def test_corrupt_database_is_one_line_exit_4(tmp_path):
    db = tmp_path / ".deskguard" / "deskguard.db"
    db.parent.mkdir()
    db.write_bytes(b"this is not a database " * 10)
    proc = deskguard("devices", "list", site=tmp_path)
    one_line_error(proc, 4)
    assert "not a database" in proc.stderr


def test_help_lists_the_new_commands(site):
    out = deskguard("--help", site=site).stdout
    for name in ("init", "devices", "audit", "wipe", "orders", "serve"):
        assert f"  {name} " in out
