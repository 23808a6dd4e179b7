"""The demo's orders server (`deskguard/lab/orders_server.py`) without a lab: the real `deskguard serve` started
detached for a site, answering /healthz, recorded by PID and start time, left running when its starter exits,
stopped by `stop()` (what `lab down` and the next demo call), and a server that cannot start is one line.
Here it listens on loopback instead of the lab bridge's address (no bridge in the unit tier)."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from deskguard.errors import LabError
from deskguard.lab import orders_server
from deskguard.lab.state import same_process

pytestmark = pytest.mark.unit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def loopback(monkeypatch, tmp_path):
    monkeypatch.setenv("DESKGUARD_LAB_RUN", str(tmp_path / "lab"))
    (tmp_path / "lab").mkdir()
    monkeypatch.setattr(orders_server, "host_address", lambda: "127.0.0.1")
    monkeypatch.setenv("DESKGUARD_LAB_PORT_BASE", str(free_port() - orders_server.PORT_OFFSET))
    monkeypatch.delenv("DESKGUARD_DB_URL", raising=False)
    yield
    orders_server.stop()


def test_started_answers_is_recorded_and_stopped(loopback, tmp_path):
    from deskguard.site.init import init_site

    site = tmp_path / "site"
    init_site(site, b"correct horse battery staple")
    rec = orders_server.start(site, tmp_path / "serve.log")
    assert rec["site"] == str(site) and rec["url"] == orders_server.url()
    assert orders_server.running() == rec and same_process(rec["pid"], rec["pid_start"])
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{rec['url']}/healthz", timeout=5) as answer:
        assert answer.status == 200
    # A second start (the next demo) replaces the first: one server per lab.
    again = orders_server.start(site, tmp_path / "serve.log")
    assert not same_process(rec["pid"], rec["pid_start"]) and orders_server.running() == again
    assert orders_server.stop() is True
    assert not same_process(again["pid"], again["pid_start"]) and orders_server.running() is None
    assert orders_server.stop() is False   # idempotent


def test_a_server_that_cannot_start_is_one_line_and_nothing_is_left(loopback, tmp_path):
    with pytest.raises(LabError, match=r"the demo's orders server did not start on 127\.0\.0\.1:\d+.*\(log: "):
        orders_server.start(tmp_path / "no-site-here", tmp_path / "serve.log")
    assert orders_server.running() is None and not orders_server.record_file().exists()
