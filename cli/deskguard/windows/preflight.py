"""Before a Windows laptop is recorded: WinRM over HTTPS answers, its certificate is signed by the CA the site
names, the account logs in and is a local administrator, the edition can run BitLocker, PowerShell is new
enough for Ansible.

One TCP probe and ONE WinRM command: `ps/preflight.ps1` through pywinrm's run_ps (Create, Command, Receive,
Signal, Delete), the same budget as the Linux preflight's single SSH session. Every failure is one line that
names the fix. Nothing is written anywhere before this passes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EXIT_HOST_FAILED, DeskguardError, UsageError
from ..onboarding.preflight import Unreachable, tcp_reach
from .winrm_errors import explain
from .winrm_settings import (
    HTTP_PORT,
    HTTPS_PORT,
    TRANSPORTS,
    WinrmTarget,
    pywinrm_kwargs,
)

SCRIPT = Path(__file__).with_name("ps") / "preflight.ps1"
# ansible-core's Windows support needs Windows PowerShell 5.1 (Windows 10/11 ship it).
MIN_POWERSHELL = (5, 1)
LAB_WARNING = ("!!! --insecure-lab-winrm: Basic authentication over plain HTTP, no certificate check, no message "
               "encryption. The Windows password crosses the network readable by anyone on the path. Only for "
               "a throw-away lab VM or the loopback test responder, never for a real laptop.")


@dataclass
class WindowsFacts:
    computer_name: str
    user: str
    edition_id: str
    product_name: str
    build: str
    display_version: str
    ps_version: str
    seconds: float = 0.0
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def is_home(self) -> bool:
        # Home editions report EditionID Core, CoreN, CoreSingleLanguage, CoreCountrySpecific.
        return self.edition_id.startswith("Core")

    @property
    def edition(self) -> str:
        return "Home" if self.is_home else self.edition_id

    @property
    def os_version(self) -> str:
        """What the store records: the build, with the marketing version when Windows reports one."""
        return f"{self.build} ({self.display_version})" if self.display_version else self.build


def validate(target: WinrmTarget) -> None:
    """Refuse insecure or incomplete settings before any packet leaves (UsageError, exit 2)."""
    if target.lab_insecure:
        return
    if target.transport not in TRANSPORTS:
        raise UsageError(f"--winrm-transport {target.transport!r}: use ntlm or kerberos (Basic and plain HTTP "
                         f"only with --insecure-lab-winrm)")
    if target.port == HTTP_PORT:
        raise UsageError(f"port {HTTP_PORT} is WinRM's plain-HTTP listener, which the kit refuses; use the HTTPS "
                         f"listener on {HTTPS_PORT} (docs/windows.md, 'Preparing a laptop')")
    if target.ca_bundle is None:
        raise UsageError("--winrm-ca-bundle FILE is required: the CA certificate(s) that signed the laptop's WinRM "
                         "HTTPS certificate (the kit never skips certificate validation)")
    try:
        text = Path(target.ca_bundle).read_text(errors="replace")
    except OSError as exc:
        raise UsageError(f"--winrm-ca-bundle {target.ca_bundle}: {exc.strerror or exc}") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise UsageError(f"--winrm-ca-bundle {target.ca_bundle}: no PEM certificate in it")


def script_to_send() -> str:
    """preflight.ps1 without its comment lines: the comments explain the file, the laptop does not need them,
    and the encoded command must stay under cmd.exe's 8191-character limit."""
    lines = SCRIPT.read_text(encoding="utf-8-sig").splitlines()
    return "\n".join(line for line in lines if line.strip() and not line.lstrip().startswith("#")) + "\n"


def reach(target: WinrmTarget, timeout: float) -> None:
    """The TCP probe; if the HTTPS port is closed but the HTTP one answers, say exactly that."""
    try:
        tcp_reach(target.address, target.port, timeout)
    except Unreachable:
        if target.lab_insecure or target.port == target.http_port:
            raise
        try:
            tcp_reach(target.address, target.http_port, min(timeout, 5.0))
        except Unreachable:
            raise Unreachable(f"{target.address}:{target.port} (WinRM over HTTPS) is not reachable and neither is "
                              f"{target.http_port}; is the laptop on, online, and is WinRM enabled?") from None
        raise Unreachable(f"{target.address} answers WinRM on {target.http_port} (HTTP) only; add an HTTPS "
                          f"listener on {target.port} with a certificate from your CA (docs/windows.md, "
                          f"'Preparing a laptop'): plain HTTP is refused") from None


def run_script(target: WinrmTarget, password: str) -> tuple[bytes, bytes, int]:
    import winrm

    session = winrm.Session(target.url, auth=(target.username, password),
                            **pywinrm_kwargs(target.settings(), target.operation_timeout, target.read_timeout))
    try:
        out = session.run_ps(script_to_send())
    except Exception as exc:  # noqa: BLE001 (explain() maps every pywinrm/requests failure, re-raises others)
        raise explain(exc, target) from None
    return out.std_out, out.std_err, out.status_code


def check_windows(target: WinrmTarget, password: str, timeout: float = 15.0) -> WindowsFacts:
    start = time.monotonic()
    validate(target)
    reach(target, timeout)
    stdout, stderr, rc = run_script(target, password)
    facts = parse(stdout, stderr, rc, target)
    facts.seconds = time.monotonic() - start
    judge(facts, target)
    return facts


def parse(stdout: bytes, stderr: bytes, rc: int, target: WinrmTarget) -> WindowsFacts:
    text = stdout.decode("utf-8", errors="replace").strip()
    if rc != 0 or not text:
        err = " ".join(stderr.decode("utf-8", errors="replace").split())[:300] or f"exit code {rc}"
        raise DeskguardError(f"the preflight script failed on {target.address}: {err}; run "
                             f"cli/deskguard/windows/ps/preflight.ps1 there by hand to see why")
    try:
        data = json.loads(text.splitlines()[-1])  # the JSON is the last line; a profile may print before it
    except json.JSONDecodeError:
        raise DeskguardError(f"{target.address} did not return the preflight's JSON (got {text[:80]!r}); is "
                             f"the PowerShell profile printing something?") from None
    if data.get("deskguard_preflight") != 1:
        raise DeskguardError(f"{target.address} returned JSON that is not the preflight's answer")
    return WindowsFacts(computer_name=str(data.get("computer_name") or ""), user=str(data.get("user") or ""),
                        edition_id=str(data.get("edition_id") or ""), product_name=str(data.get("product_name") or ""),
                        build=str(data.get("build") or ""), display_version=str(data.get("display_version") or ""),
                        ps_version=str(data.get("ps_version") or ""), raw=data)


def judge(facts: WindowsFacts, target: WinrmTarget) -> None:
    """The laptop can be managed as the policy requires, or one line saying what to change on it."""
    raw, who = facts.raw, f"{facts.user or target.username} on {target.address}"
    if not raw.get("is_admin"):
        if raw.get("in_admin_group"):
            raise DeskguardError(f"{who} is in Administrators but WinRM gives it a filtered (non-admin) token "
                                 f"(UAC remote restrictions); use the built-in Administrator or set "
                                 f"LocalAccountTokenFilterPolicy=1 (docs/windows.md, 'Preparing a laptop')")
        raise DeskguardError(f"{who} is not a local administrator; add it to the Administrators group")
    if facts.is_home:
        raise DeskguardError(f"{target.address} runs Windows {facts.edition} (EditionID {facts.edition_id}, build "
                             f"{facts.build}): BitLocker needs Pro, Enterprise or Education; upgrade the edition "
                             f"before onboarding", exit_code=EXIT_HOST_FAILED)
    if _version(facts.ps_version) < MIN_POWERSHELL:
        raise DeskguardError(f"{target.address} has PowerShell {facts.ps_version or 'of unknown version'}; Ansible "
                             f"needs {'.'.join(map(str, MIN_POWERSHELL))} or newer (Windows Management Framework 5.1)")


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(".")[:2])
    except ValueError:
        return (0,)
