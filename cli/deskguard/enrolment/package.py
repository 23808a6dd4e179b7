"""`deskguard enrolment package`: the Debian package a laptop shipped to a home is installed with (docs/enrolment.md).

It holds the management account (IT's SSH *public* key, no password: key-only), the agent's code (the kit's
module_utils from their one source, as the endpoint_agent role deploys them) with the site's pinned order *public*
key, the server URL and CA certificate, the enrolment token, and the first-boot unit. Nothing secret but the
token (revocable, limited). Built with dpkg-deb from a staged tree; installing it twice changes nothing the
second time (its postinst only creates what is missing).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import DeskguardError, UsageError
from ..site import KIT_ROOT

PACKAGE = "deskguard-enrol"
LIB = "usr/lib/deskguard-agent"
CONF = "etc/deskguard-agent"
FILES = Path(__file__).resolve().parent / "files"
# Beside the agent's own modules (the endpoint_agent role's list): what the first boot runs on.
FIRSTBOOT_MODULES = ("deskguard_firstboot", "deskguard_enrol", "deskguard_wireguard", "deskguard_wireguard_impl")
SSH_KEY_RE = re.compile(r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh.com)"
                        r" [A-Za-z0-9+/=]{40,}( [^\n\r]{0,200})?")


@dataclass(frozen=True)
class PackageInput:
    token: str
    ssh_public_key: str          # one line, as in authorized_keys
    server_url: str
    ca_pem: str | None           # the CA that signed `deskguard serve`'s certificate (None: the system's)
    order_public_key: str        # PEM
    management_user: str
    operator: str | None = None
    hostname: str | None = None  # None: the laptop's own
    allow_http: bool = False     # lab only
    version: str = "1.0"


def agent_modules() -> list[str]:
    """The endpoint_agent role's module list (its one source) plus the first boot's."""
    spec = yaml.safe_load((KIT_ROOT / "roles" / "endpoint_agent" / "vars" / "main.yml").read_text())
    return sorted(set(spec["__endpoint_agent_modules"]) | set(FIRSTBOOT_MODULES))


def check_ssh_key(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if len(lines) != 1 or not SSH_KEY_RE.fullmatch(lines[0]) or "PRIVATE KEY" in text:
        raise UsageError("--ssh-public-key: give one OpenSSH public key line (ssh-ed25519 AAAA… it@example), "
                         "never a private key")
    return lines[0]


def enrol_config(inp: PackageInput) -> dict:
    """/etc/deskguard-agent/enrol.json (deskguard_firstboot.load_config): no secret in it."""
    return {"server_url": inp.server_url, "ca_file": f"/{CONF}/ca.pem" if inp.ca_pem else "",
            "token_file": f"/{CONF}/enrolment-token", "device_key": f"/{CONF}/device.key",
            "operator": inp.operator or "", "hostname": inp.hostname or "", "allow_http": inp.allow_http,
            "vpn_implementation": "auto", "timeout_seconds": 15}


def build(inp: PackageInput, output: Path) -> list[str]:
    """Write the .deb at ``output`` (atomically); return its file list (paths inside the package)."""
    import json

    if shutil.which("dpkg-deb") is None:
        raise DeskguardError("dpkg-deb is not installed (apt install dpkg): it builds the package")
    with tempfile.TemporaryDirectory(prefix="deskguard-enrol-pkg-") as tmp:
        root = Path(tmp) / "root"
        entries: dict[str, tuple[bytes, int]] = {}
        source = KIT_ROOT / "plugins" / "module_utils"
        for name in agent_modules():
            entries[f"{LIB}/{name}.py"] = ((source / f"{name}.py").read_bytes(), 0o644)
        entries[f"{LIB}/deskguard-agent"] = (
            (KIT_ROOT / "roles" / "endpoint_agent" / "files" / "deskguard-agent").read_bytes(), 0o755)
        entries[f"{LIB}/deskguard-enrol"] = ((FILES / "deskguard-enrol").read_bytes(), 0o755)
        entries["lib/systemd/system/deskguard-enrol.service"] = ((FILES / "deskguard-enrol.service").read_bytes(),
                                                                 0o644)
        entries[f"{CONF}/enrol.json"] = ((json.dumps(enrol_config(inp), indent=1, sort_keys=True) + "\n").encode(),
                                         0o644)
        entries[f"{CONF}/order-public.pem"] = (inp.order_public_key.encode(), 0o644)
        if inp.ca_pem:
            entries[f"{CONF}/ca.pem"] = (inp.ca_pem.encode(), 0o644)
        entries[f"{CONF}/enrolment-token"] = (inp.token.encode() + b"\n", 0o600)
        entries[f"usr/share/{PACKAGE}/authorized_keys"] = (inp.ssh_public_key.encode() + b"\n", 0o644)
        entries[f"etc/sudoers.d/{PACKAGE}"] = (
            (f"# deskguard enrolment package: the management account runs onboarding (Ansible become).\n"
             f"{inp.management_user} ALL=(ALL:ALL) NOPASSWD: ALL\n").encode(), 0o440)
        for rel, (data, mode) in entries.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(path.parent, 0o755)
            path.write_bytes(data)
            os.chmod(path, mode)
        os.chmod(root / CONF, 0o700)
        debian = root / "DEBIAN"
        debian.mkdir()
        (debian / "control").write_text(control(inp))
        postinst = (FILES / "postinst").read_text().replace("@MANAGEMENT_USER@", inp.management_user)
        (debian / "postinst").write_text(postinst)
        os.chmod(debian / "postinst", 0o755)
        for folder in (root / "usr", root / "lib", root / "etc"):
            os.chmod(folder, 0o755)
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(f".{output.name}.partial")
        proc = subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(partial)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            partial.unlink(missing_ok=True)
            raise DeskguardError(f"dpkg-deb could not build the package: {' '.join(proc.stderr.split())[:300]}")
        os.replace(partial, output)
        return sorted(entries)


def control(inp: PackageInput) -> str:
    return (f"Package: {PACKAGE}\nVersion: {inp.version}\nArchitecture: all\nMaintainer: deskguard <it@localhost>\n"
            "Depends: python3 (>= 3.9), python3-cryptography, wireguard-tools, openssh-server, sudo, passwd\n"
            "Recommends: wireguard-go\nSection: admin\nPriority: optional\n"
            "Description: deskguard enrolment: this laptop enrols itself and joins the company VPN\n"
            " Holds the management account's SSH public key, the deskguard agent with the site's pinned order\n"
            " key, the server URL and CA, a revocable enrolment token and the first-boot unit.\n")
