"""The compliance stack is loaded once in ansible-playbook's main process, so the forked per-laptop workers
judge without importing or parsing anything (deskguard/compliance/preload.py, docs/compliance.md
"Performance"). Each check runs in a fresh interpreter: this test process has long imported everything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_compliance_evaluate import GOOD

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "windows"))
from posture_fixtures import POLICY as WINDOWS_POLICY  # noqa: E402
from posture_fixtures import POSTURE as WINDOWS_POSTURE  # noqa: E402

# Judges a Linux and a Windows laptop the way the deskguard_comply action does (policy, posture params, disk
# verification, every judge), after preload(), and prints the kit modules that judging still had to import.
JUDGE = r"""
import json, sys
from deskguard.compliance.preload import preload
preload()
before = set(sys.modules)
from deskguard.compliance import collector, disk, policy as dgpolicy
from deskguard.compliance.evaluate import evaluate, host_summary
from deskguard.site import module_code
assert module_code.digests.cache_info().currsize == 1, "the collector's digests are not read by preload()"
cases = json.load(sys.stdin)
for posture, host_vars in cases:
    policy = dgpolicy.effective(host_vars)
    collector.request(dgpolicy.posture_params(policy))   # the installed collector's request
    outcome = disk.verify(None, None, "lt-1", posture, policy)
    results = evaluate("lt-1", posture, {}, policy, outcome)
    assert len(results) > 20 and host_summary(results)["counts"]
print(json.dumps(sorted(m for m in set(sys.modules) - before if m.startswith("deskguard"))))
"""


def linux_posture() -> dict:
    """The fixture laptop of test_compliance_evaluate with a LUKS root, so the LUKS verification runs too."""
    disk = {"devices": [{"device": "/dev/vda2", "luks_uuid": "0b7f1c1e-5d3a-4a53-9c1e-6f1d3a2b4c5d", "version": 2,
                         "free_slot": 1, "keyslots": [{"slot": 0, "fingerprint": "a" * 64}]}],
            "unencrypted": [], "root_on_block_device": True, "unencrypted_boot": [], "violations": [],
            "advisories": []}
    return {**GOOD, "disk": disk}


def run_python(code: str, stdin: str = "") -> str:
    proc = subprocess.run([sys.executable, "-c", code], input=stdin, capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_after_preload_judging_a_laptop_imports_nothing_more():
    # Everything the judges can reach: USB with approved sticks, the VPN, the agent, a call system.
    linux_vars = {"usb_control_mode": "allowlist", "vpn_enabled": True, "endpoint_agent_enabled": True,
                  "usb_control_approved_devices": [{"id": "0781:5567", "serial": "A1", "name": "stick"}],
                  "network_posture_call_system": [{"host": "cti.example.com", "ports": [5061]}]}
    cases = [[linux_posture(), linux_vars], [WINDOWS_POSTURE, WINDOWS_POLICY]]
    late = json.loads(run_python(JUDGE, json.dumps(cases)))
    assert late == [], f"imported per laptop, in every forked worker (add them to preload.MODULE_UTILS): {late}"


def test_importing_the_action_plugin_preloads_the_stack():
    # Ansible's strategy imports the action class in the main process before forking the workers: importing
    # the plugin file must be what loads the stack and parses the roles' defaults.
    code = r"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("deskguard_comply", "plugins/action/deskguard_comply.py")
spec.loader.exec_module(importlib.util.module_from_spec(spec))
from deskguard.compliance import policy
print(json.dumps({"evaluate": "deskguard.compliance.evaluate" in sys.modules,
                  "store": "deskguard.store" in sys.modules,
                  "defaults_parsed": policy.role_defaults.cache_info().currsize}))
"""
    assert json.loads(run_python(code)) == {"evaluate": True, "store": True, "defaults_parsed": 1}
