"""POST /v1/enrol on a real `deskguard serve` process (loopback): a laptop enrols with a token and gets its VPN
settings; every misuse of a token (count, expiry, revocation, replay, a foreign key, another's hostname) is
refused, writes nothing, and is logged without the token; enrolment is rate-limited."""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import os

import pytest
import sitetools

from deskguard.site import module_utils

pytestmark = pytest.mark.unit
P = module_utils("deskguard_protocol")
E = module_utils("deskguard_enrol")
GW_KEY = base64.b64encode(b"g" * 32).decode()
POLICY = f"""vpn_enabled: true
vpn_endpoint: vpn.example.com:51820
vpn_gateway_public_key: {GW_KEY}
vpn_pool: 10.77.0.0/24
vpn_dns: [10.77.0.1]
"""


def make_site(root, extra: str = ""):
    from deskguard.site.inventory import ensure_hosts_file
    from deskguard.store import Store

    ensure_hosts_file(root)
    policy = root / "inventory" / "group_vars" / "all"
    policy.mkdir(parents=True, exist_ok=True)
    (policy / "policy.yml").write_text(POLICY + extra)
    Store.open(root, create=True).close()
    return root


def post(port, body, path=E.PATH):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("POST", path, body=body, headers={"content-type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}"), dict(resp.getheaders())
    finally:
        conn.close()


def wg(i):
    return base64.b64encode(bytes([i]) * 32).decode()


def request(token, hostname="tokyo-001", key=None, wg_key=None, sent=None, **kw):
    return E.build_request(token, hostname, key or P.generate_private_key(), wg_key or wg(1), serial="SN1",
                           operator="tanaka", os_version="13", now=sent, **kw)


def env():
    e = {k: v for k, v in os.environ.items() if k not in ("DESKGUARD_DB_URL", "DESKGUARD_SITE")}
    e.update(DESKGUARD_SERVE_HEADER_DEADLINE="2", DESKGUARD_SERVE_BODY_DEADLINE="2")
    return e


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from deskguard.store import Store

    site = make_site(tmp_path_factory.mktemp("site"), "enrolment_rate_per_minute: 6000\n")
    with Store.open(site) as store:
        tokens = {name: store.create_enrolment_token(uses=uses, hostname_pattern=pattern)
                  for name, uses, pattern in (("one", 1, None), ("two", 2, "tokyo-*"), ("revoked", 5, None),
                                              ("expired", 5, None))}
        store.revoke_enrolment_token(tokens["revoked"][0].id)
        from deskguard.store.models import EnrolmentToken

        with store.transaction() as s:
            s.get(EnrolmentToken, tokens["expired"][0].id).expires_at -= dt.timedelta(days=8)
    with sitetools.serving(site, env()) as port:
        yield {"site": site, "port": port, "tokens": {k: v[1] for k, v in tokens.items()},
               "ids": {k: v[0].id for k, v in tokens.items()}}


def devices(server):
    from deskguard.store import Store

    with Store.open(server["site"]) as store:
        return {d.hostname: d for d in store.list_devices()}


def test_a_laptop_enrols_and_gets_its_vpn_settings_once_even_if_it_asks_again(server):
    key = P.generate_private_key()
    first_body = request(server["tokens"]["one"], "lap-home-1", key=key, wg_key=wg(5))
    status, answer, headers = post(server["port"], first_body)
    assert status == 200, answer
    assert E.check_answer(answer) is None and headers.get("cache-control") == "no-store"
    assert answer["vpn"] == {"address": "10.77.0.2", "prefixlen": 32, "endpoint": "vpn.example.com:51820",
                             "gateway_public_key": GW_KEY, "allowed_ips": ["10.77.0.0/24"], "dns": ["10.77.0.1"],
                             "mtu": 1420, "keepalive": 25, "interface": "wg0"}
    assert (answer["hostname"], answer["state"], answer["again"]) == ("lap-home-1", "enrolled", False)
    d = devices(server)["lap-home-1"]
    assert (d.uuid, d.serial, d.operator, d.ssh_user, d.address) == (answer["device_uuid"], "SN1", "tanaka",
                                                                     "deskguard", "10.77.0.2")
    assert d.agent_public_key == P.public_key_pem(key).decode()
    # The very same bytes again: a replay, refused. The laptop asking again (a new request): its enrolment back.
    assert post(server["port"], first_body)[:2] == (409, {"error": "replayed", "detail": "this request was used already"})
    status, again, _ = post(server["port"], request(server["tokens"]["one"], "lap-home-1", key=key, wg_key=wg(5)))
    assert status == 200 and again["again"] and again["device_uuid"] == answer["device_uuid"]
    assert again["vpn"] == answer["vpn"]


@pytest.mark.parametrize("case, expected", [
    ("used_up", (403, "used_up")), ("revoked", (403, "revoked")), ("expired", (403, "expired")),
    ("unknown", (403, "unknown_token")), ("hostname_taken", (409, "hostname_taken")),
    ("pattern", (403, "hostname_not_allowed")), ("foreign_signature", (401, "unknown_key")), ("tampered", (401, "bad_signature")),
    ("stale", (400, "clock_skew")), ("malformed", (400, "malformed")), ("oversized", (413, "oversized")),
    ("not_json", (400, "malformed"))])
def test_every_misuse_is_refused_and_writes_nothing(server, case, expected):
    t = server["tokens"]
    if case == "used_up":   # "two" allows two tokyo-* laptops
        for i in (1, 2):
            status, answer, _ = post(server["port"], request(t["two"], f"tokyo-00{i}", wg_key=wg(10 + i)))
            assert status == 200, answer
    if case == "hostname_taken":
        from deskguard.store import Store

        with Store.open(server["site"]) as store:
            store.register_device("held-001", "debian", "10.0.0.9", 22, "dgadmin", None)
    before = set(devices(server))
    stale = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=P.CLOCK_SKEW_SECONDS + 60)
    body = {
        "used_up": lambda: request(t["two"], "tokyo-003"),
        "revoked": lambda: request(t["revoked"], "lap-r"),
        "expired": lambda: request(t["expired"], "lap-e"),
        "unknown": lambda: request("dgenrol-" + "A" * 43, "lap-u"),
        "hostname_taken": lambda: request(_fresh(server, 1), "held-001"),
        "pattern": lambda: request(_fresh(server, 1, "tokyo-*"), "osaka-001"),
        "foreign_signature": lambda: _foreign(t["one"]),
        "tampered": lambda: _tampered(t["one"]),
        "stale": lambda: request(_fresh(server, 1), "lap-s", sent=stale),
        "malformed": lambda: P.sign({"v": 1, "type": "enrol"}, P.generate_private_key()),
        "oversized": lambda: b"x" * (E.LIMIT + 1),
        "not_json": lambda: b"{",
    }[case]()
    status, answer, _ = post(server["port"], body)
    assert (status, answer.get("error")) == expected, answer
    assert set(devices(server)) == before


def _fresh(server, uses, pattern=None):
    from deskguard.store import Store

    with Store.open(server["site"]) as store:
        return store.create_enrolment_token(uses=uses, hostname_pattern=pattern)[1]


def _foreign(token):
    """A request whose payload names one device key and is signed by another (a key the sender does not hold)."""
    held, claimed = P.generate_private_key(), P.generate_private_key()
    payload = json.loads(base64.b64decode(json.loads(request(token, "lap-f", key=held))["payload"]))
    payload["device_public_key"] = P.public_key_pem(claimed).decode()
    return P.sign(payload, held)


def _tampered(token):
    """A genuine request whose hostname was changed on the way: the signature no longer covers it."""
    env = json.loads(request(token, "lap-t"))
    env["payload"] = base64.b64encode(base64.b64decode(env["payload"]).replace(b"lap-t", b"lap-x")).decode()
    return json.dumps(env).encode()


def test_enrolment_is_rate_limited_and_refusals_are_logged_never_the_token(tmp_path):
    from deskguard.store import Store

    site = make_site(tmp_path, "enrolment_rate_per_minute: 10\n")
    with Store.open(site) as store:
        revoked, revoked_token = store.create_enrolment_token(uses=5)
        store.revoke_enrolment_token(revoked.id)
        _good, good_token = store.create_enrolment_token(uses=5)
    output: list = []
    with sitetools.serving(site, env(), output=output) as port:
        assert post(port, request(revoked_token, "lap-r"))[:2] == (403, {"error": "revoked"})
        status, answer, headers = post(port, request(good_token, "lap-g"))
        # 10 a minute for the process, a tenth of it (1 a minute) per client address: the next in a minute.
        assert (status, answer) == (429, {"error": "rate_limited"})
        assert 55 <= int(headers["retry-after"]) <= 60
    with Store.open(site) as store:
        assert [d.hostname for d in store.list_devices()] == []
    log = output[0]
    assert "refused POST /v1/enrol: 403 revoked (device -, peer 127.0.0.1:" in log
    assert "refused POST /v1/enrol: 429 rate_limited" in log
    assert revoked_token not in log and good_token not in log and revoked_token[8:20] not in log


def test_approval_required_answers_pending(tmp_path):
    from deskguard.store import Store

    site = make_site(tmp_path, "enrolment_requires_approval: true\n")
    with Store.open(site) as store:
        _row, token = store.create_enrolment_token(uses=1)
    with sitetools.serving(site, env()) as port:
        status, answer, _ = post(port, request(token, "lap-p"))
    assert status == 200 and answer["state"] == "pending"
    with Store.open(site) as store:
        assert store.require_device("lap-p").state == "pending"


def test_a_site_without_vpn_settings_refuses_enrolment_and_says_why(tmp_path):
    from deskguard.site.inventory import ensure_hosts_file
    from deskguard.store import Store

    ensure_hosts_file(tmp_path)
    with Store.open(tmp_path, create=True) as store:
        _row, token = store.create_enrolment_token(uses=1)
    output: list = []
    with sitetools.serving(tmp_path, env(), output=output) as port:
        assert post(port, request(token, "lap-x"))[:2] == (503, {"error": "enrolment_unavailable",
                                                                  "detail": "this server has no VPN settings to give"})
    assert "enrolment is off on this server: invalid VPN endpoint" in output[0]


def test_the_rate_limit_buckets():
    from deskguard.enrolment.ratelimit import RateLimit

    clock = [0.0]
    limit = RateLimit(60, clock=lambda: clock[0])          # 60/min for all; 6/min (burst 6) per address
    assert [limit.take("a") for _ in range(6)] == [None] * 6
    assert limit.take("a") == pytest.approx(10.0)           # one address: a token every 10 s
    assert limit.take("b") is None                          # another address is not held back by a
    clock[0] += 10
    assert limit.take("a") is None
    # The process' own bucket: 60 at once; 7 spent, 10 back after 10 s (capped at 60), 1 spent by a: 59 left.
    many = [limit.take(f"c{i}") for i in range(100)]
    assert many.count(None) == 59 and all(w is not None and w > 0 for w in many if w is not None)
