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


# The --insecure-lab-winrm settings are spelled out once, between these markers, in winrm_settings.py; only
# `lab_settings()` returns them and only the flag's code path calls it (checked below).
LAB_BLOCK = re.compile(r"# BEGIN LAB-INSECURE.*?# END LAB-INSECURE", re.S)
LAB_FILE = "cli/deskguard/windows/winrm_settings.py"


def test_kit_files_never_set_insecure_winrm():
    offenders, blocks = [], []
    for p in kit_files():
        text = p.read_text(errors="replace")
        blocks += [p.relative_to(REPO).as_posix()] * len(LAB_BLOCK.findall(text))
        text = LAB_BLOCK.sub("", text) if p.relative_to(REPO).as_posix() == LAB_FILE else text
        offenders += [f"{p.relative_to(REPO)}: {m.group(0)}" for m in INSECURE.finditer(text)]
    assert not offenders, offenders
    assert blocks == [LAB_FILE], blocks


def test_only_the_lab_flag_reaches_the_lab_settings():
    callers = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "cli").rglob("*.py")
                     if "lab_settings(" in p.read_text())
    assert callers == [LAB_FILE], callers
    # One call in all: WinrmTarget.settings(), which only the lab flag switches.
    source = (REPO / LAB_FILE).read_text()
    assert len(re.findall(r"^(?!\s*#|def ).*lab_settings\(", source, re.M)) == 1
    assert "lab_settings() if self.lab_insecure else secure_settings(" in source


def test_the_check_itself_catches_basic_over_http():
    assert INSECURE.search("ansible_winrm_transport: basic") and INSECURE.search("ansible_winrm_scheme: http")
    assert not INSECURE.search("ansible_winrm_scheme: https")


def test_windows_hosts_written_by_the_kit_are_secure():
    from types import SimpleNamespace

    from deskguard.site.inventory import device_hostvars

    hv = device_hostvars(SimpleNamespace(address="10.8.0.9", port=5986, ssh_user="admin", os="windows",
                                         uuid="u", operator=None))
    assert (hv["ansible_winrm_transport"], hv["ansible_winrm_scheme"], hv["ansible_winrm_message_encryption"],
            hv["ansible_winrm_server_cert_validation"]) == ("ntlm", "https", "always", "validate")


def test_responder_inventory_says_why_it_is_insecure():
    text = (HERE / "inventory.yml").read_text()
    assert INSECURE.search(text), "the loopback inventory is expected to use Basic over HTTP"
    assert "INSECURE ON PURPOSE" in text and "127.0.0.1" in text
