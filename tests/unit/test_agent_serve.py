"""The agent against a real `deskguard serve` process on loopback, with a real LUKS2 image file as the laptop's
disk: `deskguard wipe --no-run` publishes, the agent fetches, acknowledges, the server records (secrets
destroyed), only then the keyslots are erased; the check-in of another run lands in the store."""

from __future__ import annotations

import json
import shutil

import pytest

import agentlab as lab
import sitetools
from agentlab import proto

pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(shutil.which("cryptsetup") is None, reason="cryptsetup not installed")]
PASS = "correct horse battery staple"


@pytest.fixture
def served(tmp_path):
    from deskguard.recovery import keys
    from deskguard.store import Store

    site = tmp_path / "site"
    site.mkdir()
    keys.init_keys(site, PASS)
    uuid, disk = lab.make_disk(tmp_path / "disk.img")
    device_key = lab.write_device_key(tmp_path / "device.key")
    with Store.open(site, create=True) as store:
        dev = store.register_device("lt-1", "debian", "127.0.0.1", 9, "dgadmin", None)
        store.set_device_state("lt-1", "onboarded")
        secret = store.add_secret(dev.uuid, "luks-recovery", f"luks:{uuid}:2", b"sealed", state="pending")
        store.set_secret_state(secret.id, "active", fingerprint=lab.fingerprint(disk, 2), verified=True)
        store.set_agent_public_key(dev.uuid, proto.public_key_pem(device_key).decode())
    from deskguard.orders import agent as controller

    with sitetools.serving(site) as port:
        url = f"http://127.0.0.1:{port}"
        cfg = lab.config(tmp_path, url, None, tmp_path / "device.key",
                         order_public_key=controller.order_public_pem(site), device_uuid=dev.uuid)
        cfg["orders_url"] = url + "/orders"
        yield {"site": site, "cfg": cfg, "disk": disk, "uuid": uuid, "device": dev}


def _wipe(site, *args):
    from sitetools import run_deskguard

    proc = run_deskguard(site, "wipe", "lt-1", "--reason", "lost (test)", "--yes", "--confirm", "lt-1", "--no-run",
                         *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_agent_and_server_wipe_end_to_end(served):
    from deskguard.store import Store

    _wipe(served["site"])
    actions = lab.Actions()
    out = lab.make_agent(served["cfg"], {served["uuid"]: served["disk"]}, actions).run()
    assert out["order"]["status"] == "accepted" and out["acted"]["acted"] is True, out
    assert lab.slots(served["disk"]) == [] and actions.powered == ["poweroff"]
    with Store.open(served["site"]) as store:
        (order,) = store.list_orders(device_uuid=served["device"].uuid)
        assert order.state == "acknowledged" and store.get_device("lt-1").state == "wiping"
        assert store.live_secrets(served["device"].uuid) == []


def test_agent_and_server_lock_then_check_in(served):
    from deskguard.store import Store

    _wipe(served["site"], "--mode", "lock")
    actions = lab.Actions()
    out = lab.make_agent(served["cfg"], {served["uuid"]: served["disk"]}, actions).run()
    assert out["acted"]["acted"] is True and lab.slots(served["disk"]) == [2] and lab.opens(served["disk"], lab.RECOVERY)
    # The next run: the same order still published is recognised, and the check-in is stored.
    out = lab.make_agent(served["cfg"], {served["uuid"]: served["disk"]}, actions).run()
    assert out["order"]["status"] == "done_before" and out["checkin"] == {"ok": True, "refusals_reported": 0}, out
    with Store.open(served["site"]) as store:
        assert store.get_device("lt-1").state == "locked"
        (checkin,) = store.latest_checkins([served["device"].uuid]).values()
        payload = json.loads(checkin.payload) if isinstance(checkin.payload, str) else checkin.payload
        assert payload["posture"]["posture"]["os"]["id"] == "debian"


def test_an_agent_fetching_unsigned_is_told_so_never_given_the_order(served):
    """order_fetch: static (for plain web servers) against `deskguard serve`: the GET is refused the same way
    for every device, the agent reports why (not "no order"), and nothing happens to the disk."""
    _wipe(served["site"])
    actions = lab.Actions()
    served["cfg"]["order_fetch"] = "static"
    out = lab.make_agent(served["cfg"], {served["uuid"]: served["disk"]}, actions).run()
    assert out["order"] == {"status": "unreachable", "detail": "HTTP 401 signed_fetch_required"}, out
    assert out["acted"] is None and lab.slots(served["disk"]) == [0, 1, 2] and actions.powered == []
    served["cfg"]["order_fetch"] = "signed"
    out = lab.make_agent(served["cfg"], {served["uuid"]: served["disk"]}, actions).run()
    assert out["order"]["status"] == "accepted" and out["acted"]["acted"] is True, out
