"""One engine per database for the process (deskguard.store.core): a forked child, as an Ansible worker judging
a laptop is, reuses its parent's engine and compiled queries but never the parent's connections."""

from __future__ import annotations

import os

import pytest

from deskguard.compliance.preload import warm_store
from deskguard.store import Store
from deskguard.store import core

pytestmark = pytest.mark.unit


@pytest.fixture
def site(tmp_path):
    with Store.open(tmp_path, create=True):
        pass
    return tmp_path


def test_one_engine_per_database_and_busy_timeout(site, tmp_path_factory, monkeypatch):
    with Store.open(site) as a, Store.open(site) as b:
        assert a.engine is b.engine
    other = tmp_path_factory.mktemp("other")
    with Store.open(other, create=True) as c:
        assert c.engine is not a.engine
    monkeypatch.setenv(core.BUSY_TIMEOUT_ENV, "2")
    with Store.open(site) as d:
        assert d.engine is not a.engine   # the timeout is the engine's: another value, another engine


def test_a_forked_child_uses_the_engine_not_the_parents_connection(site):
    with Store.open(site) as store:
        store.register_device("lt-parent", "debian", "10.0.0.1", 22, "admin", None)   # a pooled connection now
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:   # the child: same engine object, its own connection, a write of its own
            try:
                with Store.open(site) as child:
                    same = child.engine is store.engine
                    child.register_device("lt-child", "debian", "10.0.0.2", 22, "admin", None)
                os.write(write, b"same" if same else b"new")
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        assert os.read(read, 10) == b"same"
        # The parent's own connection still works and sees the child's write.
        assert {d.hostname for d in store.list_devices()} == {"lt-parent", "lt-child"}


def test_preload_compiles_the_reads_of_judging_a_laptop(site, monkeypatch):
    monkeypatch.setenv("DESKGUARD_SITE", str(site))
    with Store.open(site) as store:
        cache = store.engine._compiled_cache   # SQLAlchemy's per-engine statement cache
        before = len(cache)
        warm_store()
        assert len(cache) >= before + 4, (before, len(cache))


def test_preload_without_a_store_is_quiet(tmp_path, monkeypatch):
    monkeypatch.setenv("DESKGUARD_SITE", str(tmp_path / "nothing-here"))
    warm_store()   # judging a laptop will say there is no store
