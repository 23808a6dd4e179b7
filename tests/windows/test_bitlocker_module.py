"""Static checks of deskguard_bitlocker.ps1 against its contract and its documentation. PowerShell does not
run here: these read the source (the syntax gate parses it; behaviour on Windows is not verified)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.windows
MODULES = Path(__file__).resolve().parents[2] / "plugins" / "modules"
PS1 = (MODULES / "deskguard_bitlocker.ps1").read_text()
SPEC_LINE = re.compile(r"^\s{8}(\w+) = @\{ (.*) \}$", re.M)


def ps_spec() -> dict[str, str]:
    options = PS1[PS1.index("options = @{"):PS1.index("required_if")]
    return dict(SPEC_LINE.findall(options))


def doc_options() -> dict:
    namespace: dict = {}
    exec(compile((MODULES / "deskguard_bitlocker.py").read_text(), "deskguard_bitlocker.py", "exec"), namespace)
    return yaml.safe_load(namespace["DOCUMENTATION"])["options"]


def test_documented_options_are_the_module_s_options():
    spec, doc = ps_spec(), doc_options()
    assert set(spec) == set(doc) == {"state", "mount_point", "recovery_password", "protector_id",
                                     "encryption_method", "protector", "pin"}
    for name, option in doc.items():
        if "default" in option:
            assert f"default = '{option['default']}'" in spec[name], name
        for choice in option.get("choices", []):
            assert f"'{choice}'" in spec[name], (name, choice)


def test_secrets_are_no_log():
    spec = ps_spec()
    assert "no_log = $true" in spec["recovery_password"] and "no_log = $true" in spec["pin"]
    assert "no_log" not in spec["protector_id"]


def test_no_recovery_password_reaches_the_result():
    # Neither the volume's RecoveryPassword property nor the option's value is ever put into the result.
    for line in PS1.splitlines():
        if "$module.Result." in line or "FailJson(" in line:
            assert "RecoveryPassword" not in line and "$password" not in line, line
    assert "$null = Add-BitLockerKeyProtector" in PS1  # its output (the volume, with passwords) is dropped


def test_enable_refuses_before_it_enables_and_keeps_the_hardware_test():
    enable = PS1[PS1.index("function Invoke-Enable"):PS1.index("function Invoke-RemoveProtector")]
    assert enable.index("no recovery-password protector") < enable.index("Enable-BitLocker @enable")
    assert enable.index("if ($module.CheckMode) { return }") < enable.index("Enable-BitLocker @enable")
    code = "\n".join(line for line in enable.splitlines() if not line.lstrip().startswith("#"))
    assert "SkipHardwareTest" not in code and "UsedSpaceOnly" not in code


def test_remove_refuses_tpm_and_last_recovery_protector():
    remove = PS1[PS1.index("function Invoke-RemoveProtector"):PS1.index("switch ($state)")]
    for refusal in ("it is what unlocks the disk at boot", "last recovery-password protector",
                    "last key protector"):
        assert remove.index(refusal) < remove.index("Remove-BitLockerKeyProtector"), refusal
