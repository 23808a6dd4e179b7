"""Onboard one laptop: preflight → store + inventory → onboard.yml through the runner → per-control summary."""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EXIT_OK, UsageError
from ..runner import PlaybookResult

OPERATOR_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
ADDRESS_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")  # _: names some internal DNS uses
# A Windows account as WinRM takes it: user, HOST\user, .\user (local) or user@REALM (Kerberos).
WINRM_USER = re.compile(r"^(?:[A-Za-z0-9._-]{1,63}\\|\.\\)?[A-Za-z0-9._ -]{1,64}(?:@[A-Za-z0-9.-]{1,253})?$")
NEXT_STEP = {
    "failed": "read the failure above, fix the cause, run onboard again",
    "noncompliant": "see the findings; the kit cannot fix this by itself",
    "not_applicable": "nothing",
    "applied": "nothing: applied now",
    "compliant": "nothing",
    "warning": "see the findings (the control is met)",
    "skipped": "disabled in the policy",
}


@dataclass
class OnboardRequest:
    hostname: str
    os: str
    address: str
    operator: str
    ssh_user: str = "dgadmin"
    port: int | None = None  # 22 for Linux, 5986 (WinRM over HTTPS) for Windows
    ssh_key: Path | None = None
    check: bool = False
    # The disk's installer passphrase, once, for laptops without a crypttab key file (escrow needs a key
    # that opens the disk to add the recovery key). Only its path travels; the action plugin reads it.
    luks_passphrase_file: Path | None = None
    # Windows: the management account, its password (read from a file or a prompt by the CLI, never argv;
    # it reaches Ansible only as a vault-encrypted host_vars entry), the transport and the CA bundle that
    # validates the laptop's WinRM certificate. insecure_lab_winrm: Basic over HTTP, loudly warned.
    winrm_user: str | None = None
    winrm_password: str | None = field(default=None, repr=False)
    winrm_transport: str = "ntlm"
    winrm_ca_bundle: Path | None = None
    insecure_lab_winrm: bool = False

    @property
    def management_user(self) -> str:
        """The account Ansible logs in as: the WinRM user on Windows, the SSH user elsewhere."""
        return self.winrm_user if self.os == "windows" else self.ssh_user

    def envvars(self) -> dict:
        return {"DESKGUARD_UNLOCK_KEY_FILE": str(Path(self.luks_passphrase_file).resolve())} \
            if self.luks_passphrase_file else {}


def validate(req: OnboardRequest) -> None:
    from ..site.inventory import validate_hostname

    req.hostname = validate_hostname(req.hostname)  # the store and inventory use its lower-case form
    if not OPERATOR_NAME.match(req.operator or ""):
        raise UsageError(f"--user {req.operator!r} is not a valid account name (lower case, digits, _ . -)")
    if not OPERATOR_NAME.match(req.ssh_user or ""):
        raise UsageError(f"--ssh-user {req.ssh_user!r} is not a valid account name")
    if req.port is None:
        req.port = 22 if req.os != "windows" else (5985 if req.insecure_lab_winrm else 5986)
    if not 1 <= req.port <= 65535:
        raise UsageError(f"--port must be between 1 and 65535 (got {req.port})")
    if req.luks_passphrase_file and not os.access(req.luks_passphrase_file, os.R_OK):
        raise UsageError(f"--luks-passphrase-file {req.luks_passphrase_file}: not a readable file")
    if not _is_address(req.address):
        shown = req.address if len(req.address or "") <= 80 else req.address[:77] + "..."
        raise UsageError(f"--address {shown!r} is not an IP address or a DNS name (dot-separated labels of "
                         f"1-63 letters, digits or hyphens, 253 characters in all)")
    if req.ssh_key and not Path(req.ssh_key).is_file():
        raise UsageError(f"--ssh-key {req.ssh_key} does not exist")
    if req.os == "windows":
        _validate_windows(req)
    elif req.winrm_user or req.winrm_ca_bundle or req.insecure_lab_winrm:
        raise UsageError("--winrm-* options and --insecure-lab-winrm are for --os windows only")


def _is_address(text: str | None) -> bool:
    """An IP address, or a DNS name the resolver accepts (an over-long label used to reach getaddrinfo and end
    in an idna UnicodeError traceback)."""
    import ipaddress

    if not text:
        return False
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(text)
        return True
    try:
        ascii_name = text.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    labels = ascii_name.rstrip(".").split(".")
    return len(ascii_name) <= 253 and all(ADDRESS_LABEL.fullmatch(label) for label in labels)


def _validate_windows(req: OnboardRequest) -> None:
    from ..windows import preflight as preflight_winrm

    if not req.winrm_user or not WINRM_USER.match(req.winrm_user):
        raise UsageError(f"--winrm-user {req.winrm_user!r}: give the Windows management account (user, "
                         f"HOST\\user or user@REALM)" if req.winrm_user else
                         "--winrm-user is required for --os windows (a local administrator account)")
    if not req.winrm_password:
        raise UsageError("the WinRM password is empty: give --winrm-password-file FILE, or run in a terminal "
                         "to be asked for it")
    preflight_winrm.validate(winrm_target(req))


def winrm_target(req: OnboardRequest):
    from ..windows.preflight import WinrmTarget

    return WinrmTarget(req.address, req.winrm_user, port=req.port, transport=req.winrm_transport,
                       ca_bundle=Path(req.winrm_ca_bundle) if req.winrm_ca_bundle else None,
                       lab_insecure=req.insecure_lab_winrm)


def known_hosts(site: Path) -> Path:
    return site / ".deskguard" / "known_hosts"


def connection_vars(site: Path, req: OnboardRequest, python: str | None = None) -> dict:
    hv = {"ansible_become": True,
          "ansible_ssh_common_args": f"-o UserKnownHostsFile={known_hosts(site)} -o StrictHostKeyChecking=yes"}
    if python:
        hv["ansible_python_interpreter"] = python
    if req.ssh_key:
        hv["ansible_ssh_private_key_file"] = str(Path(req.ssh_key).resolve())
    return hv


def onboard(site: Path, req: OnboardRequest, progress=None) -> tuple[PlaybookResult, dict]:
    """Returns the play's result and the device record (as a dict). Nothing is written before preflight."""
    from ..runner import run_playbook
    from ..site import inventory, policyfile
    from ..store import Store
    from . import preflight

    validate(req)
    policyfile.check(site)   # before the laptop is contacted or anything recorded
    with Store.open(site) as store:
        # A hand-broken inventory is refused (file:line) before the laptop is even contacted.
        inventory.list_hosts(site)
        existing = store.get_device(req.hostname)
        if existing is not None and (existing.address, existing.port) != (req.address, req.port):
            raise UsageError(f"{req.hostname} is already registered at {existing.address}:{existing.port}; "
                             f"remove it first (`deskguard devices remove {req.hostname}`) or use another name")
        if req.os == "windows":
            facts, hostvars = _preflight_windows(site, req)
        else:
            pre = preflight.check_linux(req.address, req.port, req.ssh_user, req.os, req.ssh_key,
                                        known_hosts(site))
            hostvars = connection_vars(site, req, pre.python)
            facts = {"hostname": req.hostname, "uuid": None, "os": pre.os, "os_version": pre.os_version}
        if req.check:
            # Check mode records nothing: the host goes into a throw-away inventory file beside the real one,
            # so that the site's group_vars (the policy) still apply, and is removed afterwards.
            return _run_check(site, req, hostvars, progress), facts
        device, _created = inventory.register_and_add(
            site, store, req.hostname, os=req.os, address=req.address, port=req.port,
            ssh_user=req.management_user, operator=req.operator, os_version=facts["os_version"],
            hostvars=hostvars)
        # The limit takes the VPN gateways too: the play's last part pushes them the new laptop's peer.
        from ..vpn.gateway import limit_with_gateways

        result = run_playbook(site, "onboard.yml", [inventory.hosts_file(site)], limit=limit_with_gateways(site, req.hostname),
                              extravars={"deskguard_hosts": req.hostname}, envvars=req.envvars(),
                              progress=progress)
        if result.exit_code == EXIT_OK:
            store.set_device_state(req.hostname, "onboarded")
            store.close_lock_on_return(req.hostname)
        detail = {"exit_code": result.exit_code, "controls": _controls(result, req.hostname)}
        if req.insecure_lab_winrm:
            detail["winrm"] = "insecure-lab"  # the audit trail shows who used Basic over HTTP, and when
        store.audit(None, "device.onboard", req.hostname, detail)
        return result, {**facts, "uuid": device.uuid}


def _preflight_windows(site: Path, req: OnboardRequest) -> tuple[dict, dict]:
    """The WinRM preflight, then the host_vars that give Ansible the same connection settings, with the
    password as a vault-encrypted entry (the site's vault password file is created on first use)."""
    from ..windows import preflight as preflight_winrm, vault
    from ..windows.winrm_settings import ansible_vars

    target = winrm_target(req)
    found = preflight_winrm.check_windows(target, req.winrm_password)
    facts = {"hostname": req.hostname, "uuid": None, "os": "windows", "os_version": found.os_version,
             "edition": found.edition, "build": found.build, "powershell": found.ps_version}
    vault.ensure_password_file(site)
    hostvars = {**ansible_vars(target.settings()), "ansible_password": vault.encrypt(site, req.winrm_password)}
    return facts, hostvars


def _run_check(site: Path, req: OnboardRequest, hostvars: dict, progress) -> PlaybookResult:
    from ..fsutil import atomic_write
    from ..site.inventory import _dump
    from ..runner import run_playbook

    path = site / "inventory" / f".check-{req.hostname}-{os.getpid()}.yml"
    # The operator as the real run records it (device_hostvars): the accounts role hardens that account.
    host = {"ansible_host": req.address, "ansible_port": req.port, "ansible_user": req.management_user,
            "deskguard_operator": req.operator, **hostvars}
    # The round-trip dumper, because a Windows password is a `!vault` scalar that plain YAML cannot write.
    atomic_write(path, _dump({"all": {"children": {"laptops": {"hosts": {req.hostname: host}}}}}), mode=0o600)
    try:
        return run_playbook(site, "onboard.yml", [path], limit=req.hostname, check=True,
                            extravars={"deskguard_hosts": req.hostname}, envvars=req.envvars(),
                            progress=progress)
    finally:
        path.unlink(missing_ok=True)


def _controls(result: PlaybookResult, hostname: str) -> dict[str, str]:
    outcome = result.hosts.get(hostname)
    return dict(sorted(outcome.controls.items())) if outcome else {}


def summary_rows(result: PlaybookResult, hostname: str, check: bool) -> list[dict]:
    outcome = result.hosts.get(hostname)
    rows = []
    for cid, state in _controls(result, hostname).items():
        shown = {"applied": "would change" if check else "applied", "compliant": "already compliant",
                 "warning": "passes with a warning",
                 "skipped": "disabled", "failed": "failed",
                 "noncompliant": "not compliant", "not_applicable": "not applicable"}[state]
        nxt = "run without --check to apply" if check and state == "applied" else NEXT_STEP[state]
        findings = outcome.findings.get(cid, []) if outcome else []
        rows.append({"control": cid, "state": shown, "next": "; ".join(findings) if findings else nxt,
                     "findings": findings})
    return rows
