"""Fixtures for the store and inventory unit tests: a bare site folder and its store."""

from __future__ import annotations

import pytest


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.delenv("DESKGUARD_DB_URL", raising=False)
    return tmp_path


@pytest.fixture
def store(site):
    from deskguard.store import Store

    with Store.open(site, create=True) as s:
        yield s
