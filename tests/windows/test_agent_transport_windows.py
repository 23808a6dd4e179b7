"""The Windows agent's transport run for real (issue 20, items 1 and 7, Windows side): the C# that
deskguard-agent.ps1 compiles with Add-Type, taken from the script as shipped, compiled as C# 5 (what Windows
PowerShell 5.1's Add-Type accepts) and run on Mono against loopback servers. No wall-clock assertion: a
request must end before the server has finished dribbling (an Event the server sets before its last byte),
which a reader without a total deadline cannot. Mono is not .NET Framework (docs/windows.md): this proves the
logic of the deadline, the body cap and the CA pinning, not Schannel."""

from __future__ import annotations

import socket
import ssl

import certs
import monohttp as mono
import pytest
from loopback_http import Server, plain

pytestmark = pytest.mark.windows


@pytest.fixture(scope="module")
def exe(tmp_path_factory):
    return mono.compile_transport(tmp_path_factory.mktemp("transport"))


@pytest.fixture
def servers():
    made = []

    def make(answer, tls=None):
        made.append(Server(answer, tls))
        return made[-1]

    yield make
    for srv in made:
        srv.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """RSA (Mono's managed X509Chain cannot read EC keys; Windows can): the site CA, its server certificate
    for 127.0.0.1, an expired one, another CA with its own server certificate, a self-signed one."""
    d = tmp_path_factory.mktemp("pki")
    ca, ca_key = certs.make_ca(d / "site", use_rsa=True)
    other, other_key = certs.make_ca(d / "other", "another CA", use_rsa=True)
    bundle = d / "bundle.pem"
    bundle.write_bytes(other.cert.read_bytes() + ca.cert.read_bytes())
    return {"ca": ca.cert, "other_ca": other.cert, "bundle": bundle,
            "server": certs.issue(d / "site", ca, ca_key, use_rsa=True),
            "expired": certs.issue(d / "site", ca, ca_key, "expired", expired=True, use_rsa=True),
            "foreign": certs.issue(d / "other", other, other_key, use_rsa=True),
            "self_signed": certs.self_signed(d / "self", use_rsa=True)}


# ------------------------------------------------------------------------------------------- the deadline

@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("part", ["head", "body"])
def test_a_dribbling_server_cannot_hold_a_request(exe, servers, method, part):
    """120 bytes at one every 0.2 s (24 s) against a 1 s deadline: the status line and headers, or a body
    announced at full length. Each read returns as soon as a byte arrives, so only a total deadline ends it."""
    srv = servers(plain(200, b"{" * 120, dribble=part))
    if part == "head":
        srv.answer = lambda line: (b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 120 + b"\r\nContent-Length: 2\r\n\r\n",
                                   b"{}", "head")
    out = mono.send(exe, method, srv.url("/orders/x"), timeout=1, body=b"{}" if method == "POST" else None)
    assert not srv.finished.is_set(), "the request waited for the whole dribble"
    assert out == {"failure": f"{method} {srv.url('/orders/x')}: the server is too slow (its deadline, 1.0 s, passed)",
                   "oversized": False}


def test_a_dribble_over_tls_is_cut_off_too(exe, servers, pki):
    srv = servers(plain(200, b"{" * 120, dribble="body"), tls=pki["server"].server_context())
    out = mono.send(exe, "GET", srv.url("/orders/x"), timeout=1, ca_file=pki["ca"])
    assert not srv.finished.is_set() and "the server is too slow" in out["failure"], out


def test_the_body_is_capped_and_answers_of_any_status_come_back(exe, servers):
    big = servers(plain(200, b"x" * 8193))
    assert mono.send(exe, "GET", big.url("/o"), limit=8192) == {"failure": "answer larger than 8192 bytes",
                                                              "oversized": True}
    exact = servers(plain(200, b"x" * 8192))
    assert mono.send(exe, "GET", exact.url("/o"), limit=8192) == {"status": 200, "body": b"x" * 8192}
    # A body larger than its Content-Length says is not read past the cap either.
    liar = servers(plain(200, b"x" * 20000, length=10))
    assert mono.send(exe, "GET", liar.url("/o"), limit=8192)["status"] == 200
    missing = servers(plain(404, b'{"error":"no_order"}'))
    assert mono.send(exe, "POST", missing.url("/o"), body=b"{}") == {"status": 404, "body": b'{"error":"no_order"}'}


def test_no_time_left_sends_nothing(exe, servers):
    srv = servers(plain(200))
    out = mono.send(exe, "GET", srv.url("/o"), timeout=0)
    assert out["failure"] == f"GET {srv.url('/o')}: not sent, no time left" and srv.requests == []


# --------------------------------------------------------------------------------------- the pinned CA

def test_the_pinned_ca_is_the_only_one_trusted(exe, servers, pki):
    good = servers(plain(200), tls=pki["server"].server_context())
    assert mono.send(exe, "GET", good.url("/o"), ca_file=pki["ca"])["status"] == 200
    assert mono.send(exe, "GET", good.url("/o"), ca_file=pki["bundle"])["status"] == 200     # a bundle holding it
    refused = "GET %s: the server's TLS certificate is refused: "
    assert mono.send(exe, "GET", good.url("/o"), ca_file=pki["other_ca"])["failure"] == \
        refused % good.url("/o") + "it is not issued by the pinned CA (ca_file)"
    for name in ("foreign", "self_signed"):
        srv = servers(plain(200), tls=pki[name].server_context())
        assert mono.send(exe, "GET", srv.url("/o"), ca_file=pki["ca"])["failure"] == \
            refused % srv.url("/o") + "it is not issued by the pinned CA (ca_file)", name
    expired = servers(plain(200), tls=pki["expired"].server_context())
    assert mono.send(exe, "GET", expired.url("/o"), ca_file=pki["ca"])["failure"] == \
        refused % expired.url("/o") + "certificate has expired or is not yet valid"
    # The certificate names 127.0.0.1 only: reached as localhost it is refused, CA or not.
    assert mono.send(exe, "GET", good.url("/o", host="localhost"), ca_file=pki["ca"])["failure"] == \
        refused % good.url("/o", host="localhost") + "it is not valid for localhost"


def test_without_ca_file_the_machine_s_trust_decides(exe, servers, pki):
    srv = servers(plain(200), tls=pki["server"].server_context())
    assert mono.send(exe, "GET", srv.url("/o"))["failure"].endswith(
        "the server's TLS certificate is refused: it is not issued by a CA the machine trusts")


def test_an_unreadable_ca_file_fails_the_request_and_sends_nothing(exe, servers, pki, tmp_path):
    srv = servers(plain(200), tls=pki["server"].server_context())
    (tmp_path / "empty.pem").write_text("not a certificate\n")
    out = mono.send(exe, "GET", srv.url("/o"), ca_file=tmp_path / "empty.pem")
    pem = tmp_path / "empty.pem"
    assert out["failure"] == f"GET {srv.url('/o')}: cannot read the pinned CA (ca_file) {pem}: {pem} holds no PEM certificate"
    assert srv.requests == []


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_below_1_2_is_refused(exe, servers, pki):
    """A server offering TLS 1.0/1.1 only: a client allowing 1.1 gets through (so the server really offers
    it), the agent does not."""
    ctx = pki["server"].server_context()
    ctx.minimum_version, ctx.maximum_version = ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    srv = servers(plain(200), tls=ctx)
    legacy = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    legacy.minimum_version = ssl.TLSVersion.TLSv1_1
    legacy.set_ciphers("DEFAULT:@SECLEVEL=0")
    legacy.load_verify_locations(pki["ca"])
    with socket.create_connection(("127.0.0.1", srv.port)) as raw, legacy.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.version() == "TLSv1.1"
    out = mono.send(exe, "GET", srv.url("/o"), ca_file=pki["ca"])
    assert "failure" in out and "UNSUPPORTED_PROTOCOL" in out["failure"], out
