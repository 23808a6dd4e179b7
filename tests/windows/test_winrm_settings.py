"""Basic over HTTP without message encryption exists for the loopback responder only: the kit never
defaults to it (DESIGN: HTTPS 5986, NTLM or Kerberos, certificate validation, message encryption)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.windows
REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
INSECURE = re.compile(r"winrm_transport\W+(basic|plaintext)|winrm_scheme\W+http\b|message_encryption\W+never"
                      r"|server_cert_validation\W+ignore", re.I)


def kit_files():
    for top in ("cli", "plugins", "roles", "playbooks", "inventory"):
        for path in (REPO / top).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".yml", ".yaml", ".j2", ".cfg", ".ini", ".ps1"):
                if "inventory/lab" not in path.as_posix():  # written by `deskguard lab up`, not committed
                    yield path
    yield REPO / "ansible.cfg"


def test_kit_files_never_set_insecure_winrm():
    offenders = [f"{p.relative_to(REPO)}: {m.group(0)}" for p in kit_files()
                 for m in INSECURE.finditer(p.read_text(errors="replace"))]
    assert not offenders, offenders


def test_the_check_itself_catches_basic_over_http():
    assert INSECURE.search("ansible_winrm_transport: basic") and INSECURE.search("ansible_winrm_scheme: http")
    assert not INSECURE.search("ansible_winrm_scheme: https")


def test_windows_hosts_written_by_the_kit_are_secure():
    from types import SimpleNamespace

    from deskguard.inventory import device_hostvars

    hv = device_hostvars(SimpleNamespace(address="10.8.0.9", port=5986, ssh_user="admin", os="windows",
                                         uuid="u", operator=None))
    assert (hv["ansible_winrm_transport"], hv["ansible_winrm_scheme"], hv["ansible_winrm_message_encryption"]) \
        == ("ntlm", "https", "always")


def test_responder_inventory_says_why_it_is_insecure():
    text = (HERE / "inventory.yml").read_text()
    assert INSECURE.search(text), "the loopback inventory is expected to use Basic over HTTP"
    assert "INSECURE ON PURPOSE" in text and "127.0.0.1" in text
