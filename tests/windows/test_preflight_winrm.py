"""The WinRM preflight (cli/deskguard/windows/preflight.py) against the loopback responder: one round trip when
all is well, and one line naming the fix, with the documented exit code, for each way it can go wrong.

The responder speaks Basic only, so the happy path runs with the lab settings; the certificate and credential
cases run with the kit's real secure settings (NTLM over HTTPS, validation against a CA bundle, encryption
always) against the responder serving real certificates, so pywinrm's validation really decides."""

from __future__ import annotations

import socket
import time

import pytest
from certs import issue, make_ca, self_signed
from deskguard.errors import DeskguardError, UsageError
from deskguard.windows.preflight import WinrmTarget, check_windows, script_to_send
from preflight_fixtures import (
    FILTERED_ADMIN,
    HOME,
    NOT_ADMIN,
    OLD_POWERSHELL,
    PRO,
    QUOTA_FAULT,
    host,
)
from responder import Responder

pytestmark = pytest.mark.windows
PASSWORD = "loopback-only"
ONE_ROUND_TRIP = ["Create", "Command", "Receive", "Signal", "Delete"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lab_target(r: Responder, **kw) -> WinrmTarget:
    return WinrmTarget("127.0.0.1", "deskguard-test", port=r.port, lab_insecure=True, **kw)


def secure_target(port: int, ca_bundle, **kw) -> WinrmTarget:
    return WinrmTarget("127.0.0.1", "deskguard-test", port=port, ca_bundle=ca_bundle, operation_timeout=2,
                       read_timeout=4, **kw)


def refused(target, password=PASSWORD, exit_code=None) -> str:
    with pytest.raises(DeskguardError) as info:
        check_windows(target, password, timeout=3)
    message = str(info.value)
    assert "\n" not in message, message  # one line
    if exit_code is not None:
        assert info.value.exit_code == exit_code, (info.value.exit_code, message)
    return message


@pytest.fixture
def pki(tmp_path):
    ca, ca_key = make_ca(tmp_path / "ca")
    return {"ca": ca, "valid": issue(tmp_path / "srv", ca, ca_key),
            "expired": issue(tmp_path / "old", ca, ca_key, stem="expired", expired=True),
            "self_signed": self_signed(tmp_path / "self")}


# -- the whole preflight ------------------------------------------------------------------------------------

def test_one_script_in_one_round_trip_reports_edition_build_and_powershell():
    seen = []
    with Responder(script_handler=host(PRO, seen)) as r:
        facts = check_windows(lab_target(r), PASSWORD)
    assert (facts.edition, facts.build, facts.os_version, facts.ps_version) == (
        "Professional", "22631", "22631 (23H2)", "5.1.22621.2506")
    assert r.actions == ONE_ROUND_TRIP
    assert seen == [script_to_send()]  # the file minus comments, nothing else


def test_home_edition_is_refused_naming_the_editions_that_can_run_bitlocker():
    with Responder(script_handler=host(HOME)) as r:
        message = refused(lab_target(r), exit_code=1)
    assert "Windows Home" in message and "Pro, Enterprise or Education" in message and "Core" in message


def test_an_account_that_is_not_a_local_administrator_is_refused():
    with Responder(script_handler=host(NOT_ADMIN)) as r:
        message = refused(lab_target(r), exit_code=4)
    assert "not a local administrator" in message and "Administrators group" in message


def test_an_admin_with_a_filtered_remote_token_gets_the_uac_fix():
    with Responder(script_handler=host(FILTERED_ADMIN)) as r:
        assert "LocalAccountTokenFilterPolicy" in refused(lab_target(r), exit_code=4)


def test_powershell_older_than_5_1_is_refused():
    with Responder(script_handler=host(OLD_POWERSHELL)) as r:
        assert "PowerShell 4.0" in refused(lab_target(r), exit_code=4)


def test_a_failing_script_is_reported_with_its_error():
    with Responder(script_handler=lambda argv, script, stdin: (b"", b"deskguard preflight: Access denied", 2)) as r:
        assert "Access denied" in refused(lab_target(r), exit_code=4)


# -- bad input: credentials, certificates, listeners, quota, time -----------------------------------------------

def test_wrong_password_is_a_401_naming_the_user_and_the_password_file():
    with Responder(script_handler=host(PRO)) as r:
        message = refused(lab_target(r), password="wrong", exit_code=4)
    assert "rejected the credentials of deskguard-test (HTTP 401)" in message and "password file" in message


def test_secure_settings_pass_tls_with_the_site_ca_and_then_meet_the_401(pki):
    # NTLM over HTTPS: the certificate is accepted (signed by the bundle's CA), then the responder, which
    # knows only Basic, answers 401 as Windows does for credentials it cannot accept.
    with Responder(ssl_context=pki["valid"].server_context(), script_handler=host(PRO)) as r:
        message = refused(secure_target(r.port, pki["ca"].cert), exit_code=4)
    assert "HTTP 401" in message


def test_self_signed_certificate_is_refused(pki):
    with Responder(ssl_context=pki["self_signed"].server_context()) as r:
        message = refused(secure_target(r.port, pki["ca"].cert), exit_code=4)
    assert "not signed by the CA in --winrm-ca-bundle" in message and "self-signed" in message
    assert r.actions == []  # nothing was sent over the untrusted channel


def test_expired_certificate_is_refused(pki):
    with Responder(ssl_context=pki["expired"].server_context()) as r:
        message = refused(secure_target(r.port, pki["ca"].cert), exit_code=4)
    assert "has expired" in message and "issue a new one" in message
    assert r.actions == []


def test_the_certificate_check_is_real(pki, monkeypatch):
    # Can the self-signed test fail? With validation turned off the same server is accepted: the refusal
    # above comes from pywinrm's validation with the kit's settings, not from a broken TLS setup.
    from deskguard.windows import winrm_settings

    real = winrm_settings.secure_settings
    monkeypatch.setattr("deskguard.windows.winrm_settings.secure_settings",
                        lambda *a: {**real(*a), "server_cert_validation": "ignore"})
    with Responder(ssl_context=pki["self_signed"].server_context()) as r:
        assert "HTTP 401" in refused(secure_target(r.port, pki["ca"].cert))


def test_a_host_with_only_the_http_listener_is_told_to_add_https(pki):
    with Responder() as http_only:
        target = secure_target(closed_port(), pki["ca"].cert, http_port=http_only.port)
        message = refused(target, exit_code=3)
    assert f"answers WinRM on {http_only.port} (HTTP) only" in message and "add an HTTPS listener" in message


def test_nothing_listening_at_all_is_unreachable(pki):
    message = refused(secure_target(closed_port(), pki["ca"].cert, http_port=closed_port()), exit_code=3)
    assert "not reachable" in message


def test_winrm_quota_fault_says_retry_or_raise_the_quota():
    with Responder(script_handler=host(PRO)) as r:
        r.faults["Create"] = QUOTA_FAULT
        message = refused(lab_target(r), exit_code=3)
    assert "quota reached" in message and "MaxShellsPerUser" in message


def test_a_laptop_that_stops_answering_times_out():
    def slow(argv, script, stdin):
        time.sleep(4)
        return b"{}", b"", 0

    with Responder(script_handler=slow) as r:
        message = refused(lab_target(r, operation_timeout=1, read_timeout=2), exit_code=3)
    assert "did not answer within 2 s" in message


# -- refused before anything is sent ------------------------------------------------------------------------

@pytest.mark.parametrize("change,expected", [
    ({"ca_bundle": None}, "--winrm-ca-bundle FILE is required"),
    ({"port": 5985}, "plain-HTTP listener, which the kit refuses"),
    ({"transport": "basic"}, "use ntlm or kerberos"),
])
def test_insecure_or_incomplete_settings_are_refused_before_connecting(pki, change, expected):
    with Responder() as r:
        target = secure_target(r.port, pki["ca"].cert)
        for key, value in change.items():
            setattr(target, key, value)
        with pytest.raises(UsageError, match=expected):
            check_windows(target, PASSWORD)
    assert r.actions == []


def test_a_ca_bundle_without_a_certificate_is_refused(tmp_path):
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(UsageError, match="no PEM certificate"):
        check_windows(secure_target(closed_port(), junk), PASSWORD)


def test_kerberos_without_its_extra_names_the_package(pki):
    # pywinrm needs pykerberos for Kerberos; this controller has none, which is the case the message is for.
    from winrm import transport

    if getattr(transport, "HAVE_KERBEROS", False):
        pytest.skip("pykerberos is installed here")
    with Responder(ssl_context=pki["valid"].server_context()) as r:
        with pytest.raises(UsageError, match=r"pywinrm\[kerberos\]"):
            check_windows(secure_target(r.port, pki["ca"].cert, transport="kerberos"), PASSWORD, timeout=3)
