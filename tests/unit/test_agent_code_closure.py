"""The agent is the kit's own module_utils deployed to the laptop (roles/endpoint_agent/vars/main.yml lists
them). Every deskguard_* module those files import must be deployed too, or the agent's check-in fails on the
laptop with an ImportError that no controller-side test would see."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from deskguard.site.module_code import closure, imported

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
UTILS = ROOT / "plugins" / "module_utils"


def test_every_module_the_agent_imports_is_deployed():
    listed = yaml.safe_load((ROOT / "roles/endpoint_agent/vars/main.yml").read_text())["__endpoint_agent_modules"]
    missing = {f"{name} imports {dep}" for name in listed for dep in imported(name) if dep not in listed}
    assert not missing, sorted(missing)


def test_the_check_finds_imports():
    # The check itself must see the posture collector's imports, or it would pass on anything: the
    # parenthesised `from ansible.module_utils import (…)` in a try, its plain fallback, and an import inside a
    # function (deskguard_agent_posture imports the collector only after checking the files).
    assert {"deskguard_luks_inspect", "deskguard_usb_report"} <= imported("deskguard_posture")
    assert imported("deskguard_agent_posture") == {"deskguard_posture"}
    assert closure("deskguard_posture") < closure("deskguard_agent_posture")


def test_the_posture_collector_carries_no_half_that_changes_a_laptop():
    """Every nightly module call ships the collector and all it imports, compiled on the laptop each time
    (AnsiballZ carries no bytecode): it reads through the reading halves only (docs/compliance.md,
    "Performance"), never the files that add keys, bind the TPM, converge ufw or USBGuard, arm rollbacks or
    write files."""
    changing = {"deskguard_luks", "deskguard_tpm_bind", "deskguard_ufw", "deskguard_usb_apply", "deskguard_rollback",
                "deskguard_files", "deskguard_accounts_apply", "deskguard_software_apply", "deskguard_wireguard_apply"}
    assert closure("deskguard_posture") & changing == set()
    assert {"deskguard_luks_inspect", "deskguard_tpm_inspect", "deskguard_ufw_inspect",
            "deskguard_usb_desired"} <= closure("deskguard_posture")


# ---------------------------------------------------------------------------------------- the Windows agent

AGENT_PS1 = ROOT / "roles" / "endpoint_agent" / "files" / "deskguard-agent.ps1"
POSTURE_PS1 = ROOT / "plugins" / "modules_windows" / "deskguard_posture.ps1"
PS_REQUIRES = re.compile(r"(?m)^#Requires -Module (Ansible\.ModuleUtils\.\w+)\s*$")
PS_CALL = re.compile(r"\b[A-Z][a-z]+-Deskguard\w+")
PS_FUNCTION = re.compile(r"(?mi)^\s*function\s+([\w-]+)")


def windows_deployed() -> list[str]:
    return yaml.safe_load((ROOT / "roles/endpoint_agent/vars/main.yml").read_text())["__endpoint_agent_windows_modules"]


def ps_code(text: str) -> str:
    """The text without its comment lines (they name functions in prose, e.g. Get-DeskguardPosture<Section>)."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def ps_calls(text: str) -> set[str]:
    return {name.lower() for name in PS_CALL.findall(ps_code(text))}


def test_the_windows_agent_deploys_what_the_nightly_module_bundles():
    """The Windows agent stands in for deskguard_posture.ps1 when the laptop is off at night: it must carry every
    util Ansible bundles with that module (its #Requires lines, and theirs in turn), from the one source."""
    listed = windows_deployed()
    for name in listed:
        assert (UTILS / f"{name}.psm1").is_file(), f"{name}.psm1 is not a kit module_util"
    wanted, todo = set(), set(PS_REQUIRES.findall(POSTURE_PS1.read_text()))
    while todo:
        name = todo.pop()
        wanted.add(name)
        todo |= set(PS_REQUIRES.findall((UTILS / f"{name}.psm1").read_text())) - wanted
    assert wanted - set(listed) == set(), sorted(wanted - set(listed))


def test_every_deskguard_function_the_windows_agent_calls_is_deployed():
    """A function the agent or a deployed util calls and no deployed file defines would fail on the laptop only
    (no PowerShell runs here): every Verb-Deskguard* call must resolve within the deployed files."""
    texts = {AGENT_PS1.name: AGENT_PS1.read_text(), **{n: (UTILS / f"{n}.psm1").read_text() for n in windows_deployed()}}
    defined = {fn.lower() for text in texts.values() for fn in PS_FUNCTION.findall(text)}
    missing = {f"{name} calls {fn}" for name, text in texts.items() for fn in ps_calls(text) if fn not in defined}
    assert not missing, sorted(missing)


def test_the_windows_check_finds_calls_and_requires():
    # The checks must see the agent's call into the collection and the collection's calls into the sections,
    # and the module's #Requires lines, or they would pass on anything.
    assert "invoke-deskguardposturecollection" in ps_calls(AGENT_PS1.read_text())
    collect = (UTILS / "Ansible.ModuleUtils.DeskguardCollectPosture.psm1").read_text()
    assert {"get-deskguardpostureos", "get-deskguardpostureaccounts"} <= ps_calls(collect)
    assert "Ansible.ModuleUtils.DeskguardCollectPosture" in PS_REQUIRES.findall(POSTURE_PS1.read_text())
