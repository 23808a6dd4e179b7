"""pywinrm and requests failures -> one line naming the fix, with the kit's exit code.

Exit codes (cli/deskguard/errors.py): 3 when the WinRM service could not be talked to now (timeout, nothing
listening, quota full: retrying later may work); 4 when it answered and refused (credentials, certificate,
rights); 2 for a controller-side setting (Kerberos support missing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import EXIT_UNREACHABLE, DeskguardError, UsageError

if TYPE_CHECKING:
    from .winrm_settings import WinrmTarget

# WS-Management faults, by the WSManFault Code (a Win32/WSMan error number) or the SOAP subcode.
# Quota: MS-WSMV 3.1.4.5.2.1 "wsman:QuotaLimit" (returned by Create when winrs MaxShellsPerUser or
# MaxConcurrentUsers is exceeded); numbers from wsman.h, ERROR_WSMAN_QUOTA_MAX_SHELLS = 2150859173 and
# ERROR_WSMAN_QUOTA_MAX_SHELLUSERS = 2150859179.
QUOTA_CODES = {2150859173, 2150859179}
ACCESS_DENIED = 5  # ERROR_ACCESS_DENIED


def explain(exc: BaseException, target: WinrmTarget) -> BaseException:
    """The DeskguardError to raise instead of `exc`; an exception this does not know is returned unchanged."""
    import requests
    from winrm.exceptions import (
        InvalidCredentialsError,
        WinRMError,
        WinRMTransportError,
        WSManFaultError,
    )

    where = f"{target.address}:{target.port}"
    if isinstance(exc, InvalidCredentialsError):
        return DeskguardError(f"WinRM at {where} rejected the credentials of {target.username} (HTTP 401); check "
                              f"--winrm-user (a local account as HOST\\user) and the password file")
    if isinstance(exc, requests.exceptions.SSLError):
        return DeskguardError(_certificate(str(exc), target))
    if isinstance(exc, requests.exceptions.Timeout):
        return DeskguardError(f"WinRM at {where} did not answer within {target.read_timeout} s; check the laptop "
                              f"is awake and on the VPN, then run onboard again", exit_code=EXIT_UNREACHABLE)
    if isinstance(exc, requests.exceptions.ConnectionError):
        return DeskguardError(f"WinRM at {where} dropped the connection ({_short(exc)}); is {target.port} really "
                              f"the WinRM {target.settings()['scheme'].upper()} listener?", exit_code=EXIT_UNREACHABLE)
    if isinstance(exc, WSManFaultError):
        return _fault(exc, target, where)
    if isinstance(exc, WinRMTransportError):
        return DeskguardError(f"{where} answered HTTP {exc.code} without a WS-Management fault; is it a WinRM "
                              f"listener (path /wsman)?")
    if isinstance(exc, WinRMError) and "kerberos" in str(exc).lower():
        return UsageError("Kerberos needs pywinrm's Kerberos extra on the controller (pip install "
                          "'pywinrm[kerberos]') and a ticket (kinit USER@REALM) before onboard")
    return exc


def _fault(exc, target: WinrmTarget, where: str) -> DeskguardError:
    code, subcode = exc.wsman_fault_code, (exc.fault_subcode or "")
    reason = " ".join(str(exc.reason or "").split())[:200]
    if code in QUOTA_CODES or subcode.endswith("QuotaLimit"):
        return DeskguardError(f"WinRM on {where} refused a new shell: quota reached ({reason}); close other "
                              f"WinRM sessions of {target.username} or wait, or raise MaxShellsPerUser "
                              f"(winrm/config/winrs) on the laptop", exit_code=EXIT_UNREACHABLE)
    if code == ACCESS_DENIED or subcode.endswith("AccessDenied"):
        return DeskguardError(f"{target.username} may log in to {where} but not use WinRM (access denied); make it "
                              f"a local administrator")
    return DeskguardError(f"WinRM on {where} returned a fault{f' {code}' if code else ''}: {reason}")


def _certificate(message: str, target: WinrmTarget) -> str:
    bundle = target.ca_bundle
    low = message.lower()
    if "expired" in low:
        return (f"the WinRM certificate of {target.address} has expired; issue a new one from your CA and bind it "
                f"to the HTTPS listener (docs/windows.md, 'Preparing a laptop')")
    if "mismatch" in low or "doesn't match" in low or "not valid for" in low:
        return (f"the WinRM certificate of {target.address} does not name {target.address}; reissue it with that "
                f"name or IP in subjectAltName, or pass the name it has as --address")
    if "wrong version number" in low or "record layer" in low or "unknown protocol" in low:
        return (f"{target.address}:{target.port} does not speak TLS; point --port at the WinRM HTTPS listener "
                f"(default 5986)")
    if "self-signed" in low or "self signed" in low or "local issuer" in low or "verify failed" in low:
        return (f"the WinRM certificate of {target.address} is not signed by the CA in --winrm-ca-bundle {bundle} "
                f"(self-signed?); issue it from that CA, or give the CA that signed it")
    return f"TLS with {target.address}:{target.port} failed ({_short(message)}); check its WinRM HTTPS certificate"


def _short(exc) -> str:
    return " ".join(str(exc).split())[:160]
