"""The WinRM connection settings of a Windows laptop, in one place, for both consumers: pywinrm in the
preflight (`pywinrm_kwargs`) and Ansible's winrm connection in host_vars (`ansible_vars`). Deriving both from
one dict is what keeps the preflight and the nightly runs on the same security settings.

Secure (the only default): HTTPS, NTLM or Kerberos, the server certificate validated against a CA bundle the
site names, and message encryption always on top of TLS. Basic over plain HTTP exists for the loopback test
responder and throw-away lab VMs only, behind an explicit flag (`lab_settings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HTTPS_PORT = 5986
HTTP_PORT = 5985
TRANSPORTS = ("ntlm", "kerberos")
# pywinrm refuses read_timeout <= operation_timeout; the read timeout bounds how long one HTTP request may
# hang on a laptop at the end of a home line.
OPERATION_TIMEOUT = 20
READ_TIMEOUT = 30


def secure_settings(transport: str = "ntlm", ca_bundle: Path | str | None = None) -> dict:
    """pywinrm's names. `ca_trust_path` None here means "not chosen yet" (device_hostvars before onboarding);
    the preflight refuses to connect without one."""
    if transport not in TRANSPORTS:
        raise ValueError(f"WinRM transport {transport!r} is not one of {TRANSPORTS}")
    settings = {"scheme": "https", "transport": transport, "server_cert_validation": "validate",
                "message_encryption": "always"}
    if ca_bundle is not None:
        settings["ca_trust_path"] = str(Path(ca_bundle).resolve())
    return settings


# BEGIN LAB-INSECURE: the one place the kit spells out Basic over plain HTTP (tests/windows/
# test_winrm_settings.py allows it here and nowhere else). Only `lab_settings()` returns it, and only the
# --insecure-lab-winrm flag calls that: the password travels base64-encoded in clear text.
_LAB = {"scheme": "http", "transport": "basic", "server_cert_validation": "ignore", "message_encryption": "never"}
# END LAB-INSECURE


def lab_settings() -> dict:
    return dict(_LAB)


def is_insecure(settings: dict) -> bool:
    return (settings.get("scheme") != "https" or settings.get("transport") not in TRANSPORTS
            or settings.get("server_cert_validation") != "validate"
            or settings.get("message_encryption") != "always")


def endpoint(address: str, port: int, settings: dict) -> str:
    host = f"[{address}]" if ":" in address else address  # an IPv6 literal needs brackets in a URL
    return f"{settings['scheme']}://{host}:{port}/wsman"


def pywinrm_kwargs(settings: dict, operation_timeout: int = OPERATION_TIMEOUT,
                   read_timeout: int = READ_TIMEOUT) -> dict:
    """Keyword arguments for winrm.Protocol / winrm.Session (the scheme goes into the endpoint URL)."""
    kwargs = {k: v for k, v in settings.items() if k != "scheme"}
    kwargs.update(operation_timeout_sec=operation_timeout, read_timeout_sec=read_timeout)
    return kwargs


def ansible_vars(settings: dict, operation_timeout: int = OPERATION_TIMEOUT,
                 read_timeout: int = READ_TIMEOUT) -> dict:
    """host_vars for Ansible's winrm connection: `ansible_winrm_<name>` is passed to pywinrm's Protocol under
    the same name (ansible-core's winrm plugin, `_build_winrm_kwargs`)."""
    hv = {"ansible_connection": "winrm"}
    hv.update({f"ansible_winrm_{k}": v for k, v in settings.items()})
    hv.update(ansible_winrm_operation_timeout_sec=operation_timeout, ansible_winrm_read_timeout_sec=read_timeout)
    return hv


@dataclass
class WinrmTarget:
    address: str
    username: str
    port: int = HTTPS_PORT
    transport: str = "ntlm"
    ca_bundle: Path | None = None
    lab_insecure: bool = False
    # Probed only to explain a failure on `port`: a laptop with just the default HTTP listener.
    http_port: int = HTTP_PORT
    operation_timeout: int = OPERATION_TIMEOUT
    read_timeout: int = READ_TIMEOUT

    def settings(self) -> dict:
        return lab_settings() if self.lab_insecure else secure_settings(self.transport, self.ca_bundle)

    @property
    def url(self) -> str:
        return endpoint(self.address, self.port, self.settings())
