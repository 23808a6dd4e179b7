"""The store: devices, secrets, the hash-chained audit log, migrations; on SQLite and PostgreSQL (the `site`
and `store` fixtures run each test on both, see tests/unit/conftest.py)."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import inspect
from sqlalchemy.exc import DBAPIError

from deskguard.errors import EXIT_USAGE, DeskguardError, UsageError
from deskguard.store import DeviceExists, DeviceNotFound, Store, StoreError, default_db_path
from deskguard.store.core import SCHEMA_HEAD

pytestmark = pytest.mark.unit


def _register(store, name="tanaka-laptop", **kw):
    args = dict(os="ubuntu", address="10.8.0.42", port=22, ssh_user="tanaka", operator="Tanaka Yui")
    args.update(kw)
    return store.register_device(name, args["os"], args["address"], args["port"], args["ssh_user"],
                                 args["operator"])


def _raw_sql(store, sql):
    """One statement straight to the database, past the Store API (as an intruder with the file or a login)."""
    with store.engine.begin() as conn:
        conn.exec_driver_sql(sql)


def test_migration_from_empty_creates_schema_at_head(site):
    with Store.open(site, create=True) as s:
        assert s.revision == SCHEMA_HEAD
        insp = inspect(s.engine)
        assert {"devices", "secrets", "audit", "alembic_version"} <= set(insp.get_table_names())
    # Re-opening is a no-op migration.
    with Store.open(site) as s:
        assert s.revision == SCHEMA_HEAD


def test_sqlite_file_is_private_and_in_wal_mode(sqlite_site):
    Store.open(sqlite_site, create=True).close()
    with sqlite3.connect(default_db_path(sqlite_site)) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert default_db_path(sqlite_site).stat().st_mode & 0o777 == 0o600
    assert default_db_path(sqlite_site).parent.stat().st_mode & 0o777 == 0o700


def test_schema_head_constant_matches_alembic_head():
    from alembic.script import ScriptDirectory

    from deskguard.store.core import MIGRATIONS, SCHEMA_HEAD

    script = ScriptDirectory(str(MIGRATIONS))
    assert script.get_heads() == [SCHEMA_HEAD]


def test_alembic_downgrade_and_upgrade_round_trip(site):
    from alembic import command
    from alembic.config import Config

    from deskguard.store.core import MIGRATIONS, current_revision

    with Store.open(site, create=True) as s:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with s.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert current_revision(s.engine) is None
        assert set(inspect(s.engine).get_table_names()) == {"alembic_version"}
    with Store.open(site) as s:  # migrated again on open
        assert current_revision(s.engine) == SCHEMA_HEAD
        _register(s)


def test_missing_store_is_refused_without_create(sqlite_site):
    with pytest.raises(StoreError, match="deskguard init"):
        Store.open(sqlite_site)


def test_foreign_keys_are_enforced(store):
    import datetime as dt

    with pytest.raises(Exception):
        with store.transaction() as s:
            from deskguard.store import Secret

            s.add(Secret(device_uuid="nope", kind="k", key_id="i", ciphertext=b"x", created_at=dt.datetime.now()))
            s.flush()


def test_device_crud_and_states(store):
    d = _register(store, name="Tanaka-Laptop")
    assert d.hostname == "tanaka-laptop" and d.state == "registered" and len(d.uuid) == 36
    assert store.get_device("tanaka-laptop").uuid == d.uuid
    assert store.get_device("nobody") is None
    with pytest.raises(DeviceNotFound):
        store.require_device("nobody")
    _register(store, name="sato-laptop", os="windows", port=5986, ssh_user="CORP\\sato")
    assert [x.hostname for x in store.list_devices()] == ["sato-laptop", "tanaka-laptop"]
    assert store.set_device_state("tanaka-laptop", "onboarded").state == "onboarded"
    with pytest.raises(UsageError, match="unknown device state"):
        store.set_device_state("tanaka-laptop", "melted")
    u = store.update_device("tanaka-laptop", address="10.8.0.43")
    assert u.address == "10.8.0.43"
    actions = [a.action for a in store.list_audit()]
    assert actions == ["device.register", "device.register", "device.state", "device.update"]


def test_duplicate_hostname_is_a_one_line_usage_error(store):
    d = _register(store)
    with pytest.raises(DeviceExists) as err:
        _register(store, address="10.9.9.9")
    assert err.value.exit_code == EXIT_USAGE
    assert "\n" not in str(err.value) and d.uuid in str(err.value)
    assert len(store.list_devices()) == 1
    assert [a.action for a in store.list_audit()] == ["device.register"]  # the failed attempt left nothing


@pytest.mark.parametrize("kw", [dict(port=0), dict(port=70000), dict(port="x"), dict(os="Ubuntu 22"),
                                dict(address="a b"), dict(ssh_user="x;rm"), dict(operator="a\nb")])
def test_bad_fields_are_usage_errors(store, kw):
    with pytest.raises(UsageError):
        _register(store, **kw)
    assert store.list_devices() == []


def test_remove_keeps_secrets_until_destroyed_and_name_can_be_reused(store):
    d = _register(store)
    store.add_secret(d.uuid, "luks-recovery", "luks-1234:slot1", b"sealed-bytes", escrow_key_id="abcd")
    removed = store.remove_device("tanaka-laptop", actor="admin")
    assert removed.state == "removed"
    assert store.get_device("tanaka-laptop") is None
    assert store.get_device("tanaka-laptop", include_removed=True).uuid == d.uuid
    secrets = store.list_secrets(d.uuid)
    assert len(secrets) == 1 and secrets[0].ciphertext == b"sealed-bytes" and secrets[0].destroyed_at is None
    entry = store.list_audit()[-1]
    assert (entry.action, entry.actor, entry.detail_obj["secrets_kept"]) == ("device.remove", "admin", 1)
    # A replacement laptop may take the name: new UUID, old record kept.
    new = _register(store)
    assert new.uuid != d.uuid
    assert len(store.list_devices(include_removed=True)) == 2
    assert store.destroy_secrets(d.uuid, reason="wiped") == 1
    s = store.list_secrets(d.uuid)[0]
    assert s.ciphertext is None and s.destroyed_at is not None
    assert store.list_audit()[-1].action == "secret.destroy"
    assert store.verify_audit() == (True, None)


def test_audit_actor_defaults_to_os_user(store, monkeypatch):
    import getpass

    monkeypatch.delenv("SUDO_USER", raising=False)
    e = store.audit(None, "test.action", "somewhere", {"n": 1, "ü": "ß"})
    assert e.actor == getpass.getuser()
    assert e.detail_obj == {"n": 1, "ü": "ß"}


def test_transaction_rolls_back_change_and_its_audit_row(store):
    with pytest.raises(RuntimeError):
        with store.transaction():
            _register(store)
            raise RuntimeError("inventory write failed")
    assert store.list_devices() == [] and store.list_audit() == []
    with pytest.raises(KeyboardInterrupt):
        with store.transaction():
            _register(store)
            raise KeyboardInterrupt
    assert store.list_devices() == [] and store.list_audit() == []


def test_audit_chain_verifies(store):
    assert store.verify_audit() == (True, None)
    for i in range(5):
        store.audit("admin", "test", f"t{i}", {"i": i})
    rows = store.list_audit()
    assert [r.id for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0].prev_hash == "0" * 64 and all(b.prev_hash == a.hash for a, b in zip(rows, rows[1:]))
    ok, bad, count, head = store.verify_audit_detail()
    assert (ok, bad, count, head) == (True, None, 5, rows[-1].hash)


def test_audit_is_append_only_in_the_database(store):
    store.audit("admin", "test", "x", {})
    with pytest.raises(DBAPIError, match="append-only"):
        _raw_sql(store, "UPDATE audit SET actor = 'mallory'")
    with pytest.raises(DBAPIError, match="append-only"):
        _raw_sql(store, "DELETE FROM audit")
    assert [e.actor for e in store.list_audit()] == ["admin"]


def _tamper(store, sql):
    """An intruder who can drop the append-only triggers edits the table: only the chain can tell."""
    if store.engine.dialect.name == "sqlite":
        _raw_sql(store, "DROP TRIGGER audit_no_update")
        _raw_sql(store, "DROP TRIGGER audit_no_delete")
    else:
        _raw_sql(store, "DROP TRIGGER audit_no_change ON audit")
    _raw_sql(store, sql)


@pytest.mark.parametrize("sql,bad", [
    ("UPDATE audit SET actor = 'mallory' WHERE id = 3", 3),
    ("UPDATE audit SET detail = '{\"i\":99}' WHERE id = 2", 2),
    ("UPDATE audit SET at = '2020-01-01 00:00:00.000000' WHERE id = 4", 4),
    ("DELETE FROM audit WHERE id = 2", 3),
    ("UPDATE audit SET prev_hash = '" + "1" * 64 + "' WHERE id = 1", 1),
])
def test_audit_verify_detects_tampering(store, sql, bad):
    for i in range(5):
        store.audit("admin", "test", f"t{i}", {"i": i})
    _tamper(store, sql)
    assert store.verify_audit() == (False, bad)


def test_recomputed_hash_of_one_row_still_breaks_the_chain(store):
    """An attacker who edits a row and recomputes its hash breaks the link to the next row."""
    from deskguard.store.auditchain import row_hash

    for i in range(3):
        store.audit("admin", "test", f"t{i}", {"i": i})
    r = store.list_audit()[1]
    forged = row_hash(id=r.id, at=r.at, actor="mallory", action=r.action, target=r.target, detail=r.detail,
                      prev_hash=r.prev_hash)
    _tamper(store, f"UPDATE audit SET actor = 'mallory', hash = '{forged}' WHERE id = 2")
    assert store.verify_audit() == (False, 3)


def test_db_url_env_overrides_location(tmp_path, monkeypatch):
    other = tmp_path / "elsewhere.db"
    monkeypatch.setenv("DESKGUARD_DB_URL", f"sqlite:///{other}")
    with Store.open(tmp_path / "site") as s:
        _register(s)
    assert other.exists() and not (tmp_path / "site" / ".deskguard").exists()


def test_store_errors_are_deskguard_errors():
    assert issubclass(StoreError, DeskguardError) and issubclass(DeviceExists, UsageError)
