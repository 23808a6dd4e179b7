"""`deskguard enrolment package`: the .deb built with dpkg-deb and read back with `dpkg-deb -I/-c/-x`: what it
holds, with which owner and mode, nothing secret beyond the token (and the token in one file only), the agent's
code byte for byte from its one source and closed under its imports; bad input refused with nothing written.
Installing it (twice) on a laptop is the container tier's (tests/container/test_enrolment_container.py)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from test_enrolment_cli import deskguard

from deskguard.site import KIT_ROOT

pytestmark = pytest.mark.unit
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOu5tP2o0a7zv8yR0mQ1c8gW3n8d9X4pQk2m1y7b6h5s it@example.com"


@pytest.fixture
def site(sqlite_site):
    from deskguard.recovery import keys
    from deskguard.site.inventory import ensure_hosts_file
    from deskguard.store import Store

    keys.init_keys(sqlite_site, "correct horse battery staple")
    ensure_hosts_file(sqlite_site)
    (sqlite_site / "it.pub").write_text(SSH_KEY + "\n")
    (sqlite_site / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    with Store.open(sqlite_site, create=True) as store:
        _row, token = store.create_enrolment_token(uses=2, operator="tanaka")
        revoked, revoked_token = store.create_enrolment_token(uses=1)
        store.revoke_enrolment_token(revoked.id)
    return {"path": sqlite_site, "token": token, "revoked": revoked_token}


def build(site, *extra, token=None):
    out = site["path"] / "out" / "tokyo.deb"
    proc = deskguard("enrolment", "package", "--token", token or site["token"], "--ssh-public-key",
                     str(site["path"] / "it.pub"), "--ca-file", str(site["path"] / "ca.pem"), "--server-url",
                     "https://deskguard.example.com:8443", "--output", str(out), *extra, site=site["path"])
    return proc, out


def test_the_package_holds_what_a_laptop_needs_and_no_secret_but_the_token(site, tmp_path):
    proc, deb = build(site)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {deb}" in proc.stdout and "CA pinned" in proc.stdout and site["token"] not in proc.stdout

    info = subprocess.run(["dpkg-deb", "-I", str(deb)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"Package: deskguard-enrol\n", info) and "Architecture: all" in info
    assert "Depends: python3 (>= 3.9), python3-cryptography, wireguard-tools, openssh-server, sudo" in info
    assert re.search(r"^ +\d+ bytes, +\d+ lines +\* +postinst +#!/bin/sh", info, re.M)

    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    entries = {line.split()[-1].lstrip("."): (line.split()[0], line.split()[1]) for line in listing.splitlines()}
    assert all(owner == "root/root" for _mode, owner in entries.values())
    assert entries["/etc/deskguard-agent/enrolment-token"][0] == "-rw-------"
    assert entries["/etc/deskguard-agent/"][0] == "drwx------"
    assert entries["/etc/sudoers.d/deskguard-enrol"][0] == "-r--r-----"
    assert entries["/usr/lib/deskguard-agent/deskguard-enrol"][0] == "-rwxr-xr-x"
    assert "/lib/systemd/system/deskguard-enrol.service" in entries

    root = tmp_path / "x"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    subprocess.run(["dpkg-deb", "-e", str(deb), str(root / "DEBIAN")], check=True)
    files = [p for p in root.rglob("*") if p.is_file()]
    holding_token = [p.relative_to(root).as_posix() for p in files if site["token"].encode() in p.read_bytes()]
    assert holding_token == ["etc/deskguard-agent/enrolment-token"]
    assert not [p for p in files if b"PRIVATE KEY" in p.read_bytes() and p.suffix != ".py"]
    conf = json.loads((root / "etc/deskguard-agent/enrol.json").read_text())
    assert conf == {"server_url": "https://deskguard.example.com:8443", "ca_file": "/etc/deskguard-agent/ca.pem",
                    "token_file": "/etc/deskguard-agent/enrolment-token", "device_key": "/etc/deskguard-agent/device.key",
                    "operator": "tanaka", "hostname": "", "allow_http": False, "vpn_implementation": "auto",
                    "timeout_seconds": 15}
    from deskguard.orders.agent import order_public_pem

    assert (root / "etc/deskguard-agent/order-public.pem").read_text() == order_public_pem(site["path"])
    assert (root / "usr/share/deskguard-enrol/authorized_keys").read_text() == SSH_KEY + "\n"
    assert (root / "etc/sudoers.d/deskguard-enrol").read_text().endswith("deskguard ALL=(ALL:ALL) NOPASSWD: ALL\n")
    postinst = (root / "DEBIAN" / "postinst").read_text()
    assert 'user=deskguard\n' in postinst and "@" not in postinst.replace("wg-quick@", "")
    assert subprocess.run(["sh", "-n", str(root / "DEBIAN" / "postinst")]).returncode == 0
    visudo = Path("/usr/sbin/visudo")
    if visudo.exists():
        assert subprocess.run([str(visudo), "-cf", str(root / "etc/sudoers.d/deskguard-enrol")],
                              capture_output=True).returncode == 0

    # The agent's code: byte for byte its one source, and everything it imports of the kit's is in the package.
    lib = root / "usr/lib/deskguard-agent"
    shipped = {p.stem for p in lib.glob("*.py")}
    for name in shipped:
        assert (lib / f"{name}.py").read_bytes() == (KIT_ROOT / "plugins/module_utils" / f"{name}.py").read_bytes()
        imported = set(re.findall(r"^\s*import (deskguard_\w+)", (lib / f"{name}.py").read_text(), re.M))
        assert imported <= shipped, (name, imported - shipped)
    assert {"deskguard_firstboot", "deskguard_enrol", "deskguard_agent", "deskguard_protocol"} <= shipped


def test_the_same_token_builds_the_same_contents(site, tmp_path):
    """Two builds list the same files with the same contents (what makes installing it again a no-op)."""
    first = build(site)[1].read_bytes()
    second_proc, second = build(site)
    assert second_proc.returncode == 0
    for n, data in enumerate((first, second.read_bytes())):
        (tmp_path / f"{n}.deb").write_bytes(data)
        subprocess.run(["dpkg-deb", "-x", str(tmp_path / f"{n}.deb"), str(tmp_path / str(n))], check=True)
    a = {p.relative_to(tmp_path / "0"): p.read_bytes() for p in (tmp_path / "0").rglob("*") if p.is_file()}
    b = {p.relative_to(tmp_path / "1"): p.read_bytes() for p in (tmp_path / "1").rglob("*") if p.is_file()}
    assert a == b


@pytest.mark.parametrize("case, message", [
    ("revoked", "is revoked; make a new one"),
    ("unknown", "this site has no such enrolment token"),
    ("private_key", "never a private key"),
    ("http", "plain HTTP: give an https:// URL"),
])
def test_bad_input_is_refused_and_writes_nothing(site, case, message):
    args, token = [], None
    if case == "revoked":
        token = site["revoked"]
    elif case == "unknown":
        token = "dgenrol-" + "B" * 43
    elif case == "private_key":
        (site["path"] / "it.pub").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1r\n"
                                             "-----END OPENSSH PRIVATE KEY-----\n")
    elif case == "http":
        args = ["--server-url", "http://deskguard.example.com"]
    proc, deb = build(site, *args, token=token)
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not deb.exists() and site["token"] not in proc.stderr
