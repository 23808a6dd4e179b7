"""The agent is the kit's own module_utils deployed to the laptop (roles/endpoint_agent/vars/main.yml lists
them). Every deskguard_* module those files import must be deployed too, or the agent's check-in fails on the
laptop with an ImportError that no controller-side test would see."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
UTILS = ROOT / "plugins" / "module_utils"
IMPORT = re.compile(r"^\s*(?:from\s+(?:ansible\.module_utils\s+import\s+\(?|ansible\.module_utils\.)?|import\s+)"
                    r"([\w\s,()]*deskguard_\w+[\w\s,()]*)", re.M)


def imported(name: str) -> set[str]:
    text = (UTILS / f"{name}.py").read_text()
    found = set(re.findall(r"\bdeskguard_\w+\b", " ".join(m.group(1) for m in IMPORT.finditer(text))))
    # `from ansible.module_utils import (a, b,\n c)` spans lines: take every name inside the parentheses too.
    for block in re.findall(r"from ansible\.module_utils import \(([^)]*)\)", text):
        found |= set(re.findall(r"\bdeskguard_\w+\b", block))
    return {n for n in found if (UTILS / f"{n}.py").exists()} - {name}


def test_every_module_the_agent_imports_is_deployed():
    listed = yaml.safe_load((ROOT / "roles/endpoint_agent/vars/main.yml").read_text())["__endpoint_agent_modules"]
    missing = {f"{name} imports {dep}" for name in listed for dep in imported(name) if dep not in listed}
    assert not missing, sorted(missing)


def test_the_check_finds_imports():
    # The check itself must see the posture collector's imports, or it would pass on anything.
    assert {"deskguard_luks", "deskguard_usb_report"} <= imported("deskguard_posture")
