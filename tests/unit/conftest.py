"""Fixtures for the store and inventory unit tests: a bare site folder and its store.

`site` (and so `store`) runs each test twice: against the default SQLite file, and with DESKGUARD_DB_URL
naming a fresh database on the session's throw-away PostgreSQL server (tests/pgcluster.py). Everything that
opens the store from the environment (the CLI in a subprocess, the action and callback plugins) follows it.
`sqlite_site` is for the few tests about the SQLite file itself. `device` is one registered laptop with no
secrets; `laptop` is a LUKS2 image standing for its root disk (tests/unit/luks_laptop.py)."""

from __future__ import annotations

import pytest
from host_tpm import host_tpm  # noqa: F401  (the fixture: swtpm on the controller for the TPM binding tests)

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(autouse=True)
def lab_index_registry(tmp_path, monkeypatch):
    """A unit test that points DESKGUARD_LAB_RUN at a folder of its own claims that lab's index in a registry of
    its own, never in the machine's (/run/deskguard-lab), where real labs claim theirs."""
    from deskguard.lab import identity

    monkeypatch.setattr(identity, "REGISTRY", tmp_path / "lab-index-registry")
    return identity.REGISTRY


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def sqlite_site(tmp_path, monkeypatch):
    monkeypatch.delenv("DESKGUARD_DB_URL", raising=False)
    return tmp_path


@pytest.fixture
def site(backend, tmp_path, monkeypatch, request):
    monkeypatch.delenv("DESKGUARD_DB_URL", raising=False)
    if backend == "postgresql":
        monkeypatch.setenv("DESKGUARD_DB_URL", request.getfixturevalue("pg_cluster").new_database())
    return tmp_path


@pytest.fixture
def store(site):
    from deskguard.store import Store

    with Store.open(site, create=True) as s:
        yield s


@pytest.fixture
def store_bytes(backend, site, request):
    """store_bytes() -> every byte the store holds on disk (SQLite files) or in a dump (PostgreSQL)."""
    import os

    def read() -> bytes:
        if backend == "postgresql":
            return request.getfixturevalue("pg_cluster").dump(os.environ["DESKGUARD_DB_URL"])
        return b"".join(p.read_bytes() for p in (site / ".deskguard").iterdir() if p.is_file())

    return read


@pytest.fixture
def device(store):
    return store.register_device("lt-1", "debian", "10.0.0.1", 22, "dgadmin", None)


@pytest.fixture
def laptop(tmp_path):
    from luks_laptop import Laptop

    return Laptop(tmp_path)
