"""Shared fixtures. The lab is brought up once per session, per tier, and always brought down at the end."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from labsuite import lab_suite

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def lab_inventory_dir() -> Path:
    """inventory/lab for the default lab; inventory/lab-<hash> for another (its own DESKGUARD_LAB_RUN), so two labs run
    from one worktree at once (CI's VM tier beside the others) never write each other's inventory. The same
    folder `deskguard lab up/down` uses."""
    from deskguard.lab.manager import inventory_dir

    return inventory_dir(REPO)


@pytest.fixture(scope="session")
def lab_session(lab_inventory_dir):
    """Tears the whole lab down once, after the last test of the session that used it."""
    from deskguard.lab import manager

    if os.geteuid() != 0:
        pytest.fail("lab tests need root")
    yield manager
    manager.down(lab_inventory_dir, log=lambda m: None)


def _up(lab_session, lab_inventory_dir, **counts):
    return lab_session.up(inventory_dir=lab_inventory_dir, log=lambda m: None, suite=lab_suite(), **counts)


@pytest.fixture(scope="session")
def lab_fleet(lab_session, lab_inventory_dir):
    """Twenty fleet hosts (network namespaces with their own sshd)."""
    return _up(lab_session, lab_inventory_dir, fleet_hosts=20)


@pytest.fixture(scope="session")
def lab_container(lab_session, lab_inventory_dir):
    """Two laptop containers (systemd-nspawn)."""
    return _up(lab_session, lab_inventory_dir, containers=2)


@pytest.fixture(scope="session")
def lab_laptop(lab_session, lab_inventory_dir):
    """One laptop VM (qemu TCG, root on LUKS2)."""
    return _up(lab_session, lab_inventory_dir, laptops=1)



@pytest.fixture(scope="session")
def make_site(tmp_path_factory):
    """make_site(management=None) -> an initialised site (store, keys, example policy); `management`
    replaces the policy's management networks (the lab's controller reaches its hosts from elsewhere)."""
    from sitetools import init_site

    return lambda management=None: init_site(tmp_path_factory.mktemp("site"), management)


@pytest.fixture(scope="session")
def pg_cluster():
    """A throw-away PostgreSQL server on loopback for the whole session (tests/pgcluster.py). Not starting is a
    test failure, never a skip: `.ci/setup` installs the server, so CI must prove the store on it."""
    from pgcluster import PgCluster, PgUnavailable

    try:
        cluster = PgCluster().start()
    except PgUnavailable as exc:
        pytest.fail(f"PostgreSQL for the store tests did not start: {exc}")
    yield cluster
    cluster.stop()
