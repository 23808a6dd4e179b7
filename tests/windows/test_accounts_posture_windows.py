"""The Windows accounts posture (Ansible.ModuleUtils.DeskguardPostureAccounts.psm1) against the Linux section
and the ACC judges: the same keys where they mean the same thing. Syntax is the gate's job (test_ps_syntax);
what Windows returns at run time is not verified here (no Windows host)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from pssources import script_files

REPO = Path(__file__).resolve().parents[2]
PSM1 = "plugins/module_utils/Ansible.ModuleUtils.DeskguardPostureAccounts.psm1"
sys.path.insert(0, str(REPO / "plugins" / "module_utils"))

pytestmark = pytest.mark.windows


def returned_keys() -> set[str]:
    text = (REPO / PSM1).read_text()
    table = text[text.rindex("return @{"):]
    return set(re.findall(r"^\s+(\w+)\s+=", table, re.M))


def test_the_syntax_gate_covers_the_module_util():
    assert PSM1 in dict(script_files())


def test_the_module_util_exports_the_section_function():
    text = (REPO / PSM1).read_text()
    assert "Export-ModuleMember -Function Get-DeskguardPostureAccounts" in text


def test_windows_keys_are_the_linux_ones_the_judges_read_plus_windows_only_ones(tmp_path):
    import deskguard_accounts

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("tanaka:x:1000:1000::/home/tanaka:/bin/bash\n")
    linux = set(deskguard_accounts.collect(str(tmp_path), {"operator": "tanaka", "management_user": "it"}))
    windows = returned_keys()
    linux_only = {"sshd", "management_authorized_keys", "management_sudo_rules", "password_minclass",
                  "password_credits", "password_retry", "password_enforce_for_root", "password_quality_in_pam",
                  "password_history_in_pam", "lockout_in_pam", "display_managers"}
    assert linux - linux_only <= windows, sorted(linux - linux_only - windows)
    assert windows - linux == {"password_complexity", "management_channel", "management_is_admin",
                               "winrm_allow_unencrypted", "winrm_basic_auth"}
