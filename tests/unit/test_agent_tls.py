"""TLS between the agent and `deskguard serve`, exercised for real (issue 20, item 7): certificates made here
with `cryptography` (a site CA, a server certificate it signs, an expired one, and another CA), `deskguard serve`
listening with them on loopback, and the agent's own code pinning the site CA. A certificate the pinned CA did
not sign, an expired one, and plain HTTP are all refused before anything is sent or acted on."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

import agentlab as lab
import sitetools
from agentlab import proto

pytestmark = pytest.mark.unit
_spec = importlib.util.spec_from_file_location("wincerts", Path(__file__).parents[1] / "windows" / "certs.py")
certs = sys.modules.setdefault("wincerts", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(certs)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca, ca_key = certs.make_ca(folder / "site")
    other, _ = certs.make_ca(folder / "other", cn="someone else's CA")
    return {"ca": ca, "server": certs.issue(folder / "site", ca, ca_key),
            "expired": certs.issue(folder / "site", ca, ca_key, stem="expired", expired=True), "other_ca": other}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from deskguard.recovery import keys
    from deskguard.store import Store

    site = tmp_path_factory.mktemp("site")
    keys.init_keys(site, "correct horse battery staple")
    device_key = lab.write_device_key(site / "device.key")
    with Store.open(site, create=True) as store:
        dev = store.register_device("lt-1", "debian", "127.0.0.1", 22, "dgadmin", None)
        store.set_agent_public_key(dev.uuid, proto.public_key_pem(device_key).decode())
    return {"path": site, "uuid": dev.uuid}


def _agent_config(site, url, tmp_path, **extra):
    from deskguard.orders import agent as controller

    settings = {"device_uuid": site["uuid"], "order_public_key": controller.order_public_pem(site["path"]),
                "allow_http": False, **extra}
    return lab.config(tmp_path, url, None, site["path"] / "device.key", **settings)


def _run(cfg):
    return lab.make_agent(cfg, {}, lab.Actions()).run()


def test_the_agent_talks_to_serve_over_tls_only_with_the_pinned_ca(site, pki, tmp_path):
    from deskguard.store import Store

    with sitetools.serving(site["path"], tls=(pki["server"].cert, pki["server"].key)) as port:
        url = f"https://127.0.0.1:{port}"
        out = _run(_agent_config(site, url, tmp_path, ca_file=str(pki["ca"].cert)))
        assert out["order"] == {"status": "none"} and out["checkin"] == {"ok": True, "refusals_reported": 0}, out
        # The same server, the agent pinning another CA (a server certificate it does not vouch for).
        out = _run(_agent_config(site, url, tmp_path / "b", ca_file=str(pki["other_ca"].cert)))
        refused = "TLS certificate is refused: unable to get local issuer certificate"
        assert out["order"]["status"] == "unreachable" and refused in out["order"]["detail"], out
        assert out["checkin"]["ok"] is False and refused in out["checkin"]["detail"], out
    with Store.open(site["path"]) as store:
        (checkin,) = store.latest_checkins([site["uuid"]]).values()   # only the pinned run's check-in arrived
        assert json.loads(checkin.payload)["device_uuid"] == site["uuid"]


def test_an_expired_server_certificate_is_refused(site, pki, tmp_path):
    with sitetools.serving(site["path"], tls=(pki["expired"].cert, pki["expired"].key)) as port:
        out = _run(_agent_config(site, f"https://127.0.0.1:{port}", tmp_path, ca_file=str(pki["ca"].cert)))
    refused = "TLS certificate is refused: certificate has expired"
    assert out["order"]["status"] == "unreachable" and refused in out["order"]["detail"], out
    assert out["checkin"]["ok"] is False and refused in out["checkin"]["detail"], out


def test_plain_http_is_refused_unless_a_lab_allows_it(site, tmp_path):
    server = lab.Server()
    try:
        out = _run(_agent_config(site, server.url, tmp_path))
        assert out["order"]["status"] == "unreachable" and "plain HTTP, refused" in out["order"]["detail"], out
        assert out["checkin"]["ok"] is False and "plain HTTP, refused" in out["checkin"]["detail"], out
        assert server.posts == [], "the agent sent something over plain HTTP"
        out = _run(_agent_config(site, server.url, tmp_path, allow_http=True))
        assert out["checkin"]["ok"] is True and len(server.posts) == 2    # the lab: fetch and check-in
    finally:
        server.close()


def test_serve_says_allow_http_is_for_a_lab_or_a_tls_proxy():
    from click.testing import CliRunner

    from deskguard.cli import app

    text = " ".join(CliRunner().invoke(app, ["serve", "--help"]).output.split())
    assert "--allow-http LAB ONLY" in text, text
