"""PowerShell syntax gate: everything the kit ships or sends to Windows parses with tree-sitter-pwsh.
A syntax check, not a run: see docs/windows.md for what it cannot catch."""

from __future__ import annotations

import pytest
from pssources import inline_scripts, render, role_vars, script_files, sent_scripts, templates
from pssyntax import problems

pytestmark = pytest.mark.windows

# Known tree-sitter-pwsh gaps (lab notes: nested generic type literals, labelled `break`, `$x.m()[$i]` as a
# command argument). Keyed by the label the gate prints, with the reason. Kit code should avoid those
# constructs rather than grow this list; an entry that parses cleanly again fails the gate (stale).
ALLOWED = {
    # "plugins/modules/example.ps1": "[Dictionary[[String],[Object]]] literal, valid PowerShell",
}

SOURCES = script_files() + sent_scripts() + inline_scripts() + templates()


def test_the_gate_sees_the_kit_s_powershell():
    # The BitLocker module must be among the sources, or the gate is looking in the wrong place.
    assert "plugins/modules/deskguard_bitlocker.ps1" in dict(SOURCES)
    assert {"cli/deskguard/windows/ps/preflight.ps1", "cli/deskguard/windows/ps/preflight.ps1 (as sent)"} <= set(dict(SOURCES))


@pytest.mark.parametrize("label,text", SOURCES, ids=[label for label, _ in SOURCES])
def test_powershell_parses(label, text):
    found = problems(text)
    if label in ALLOWED:
        assert found, f"{label} parses cleanly now: remove it from ALLOWED ({ALLOWED[label]})"
        return
    if found:
        pytest.fail(f"{label}:\n  " + "\n  ".join(found), pytrace=False)


BROKEN = {
    "missing paren and brace": 'if ($v.ProtectionStatus -eq "Off" {\n  Enable-BitLocker C:\n',
    "unterminated string": '$msg = "escrow failed\nWrite-Output $msg\n',
    "extra closing brace": "function Get-X {\n  1\n}\n}\n",
    "try without catch": "try {\n  Remove-BitLockerKeyProtector -MountPoint C: -KeyProtectorId $id\n}\n",
    "unclosed subexpression": '"value: $($a.b"\n',
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_gate_fails_on_broken_scripts(kind):
    assert problems(BROKEN[kind]), f"the gate let a script with a {kind} through"


def test_gate_reports_line_of_the_error():
    found = problems("Write-Output 1\nWrite-Output 2\nif ($x -eq 1 {\n")
    assert found and found[0].startswith("3:"), found


def test_inline_scripts_are_found_in_task_yaml(tmp_path):
    tasks = tmp_path / "roles" / "demo" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "Windows.yml").write_text(
        "- name: DEMO-001 | AUDIT | inline\n"
        "  block:\n"
        "    - name: inner\n"
        "      ansible.windows.win_powershell:\n"
        "        script: |\n"
        "          $x = '{{ demo_value }}'\n"
        "          if ($x -eq 1 {\n"
        "    - name: free form\n"
        "      ansible.windows.win_shell: Get-Tpm | ConvertTo-Json\n")
    (tmp_path / "plugins").mkdir()
    found = dict(inline_scripts(tmp_path))
    assert set(found) == {"roles/demo/tasks/Windows.yml task 'inner'",
                          "roles/demo/tasks/Windows.yml task 'free form'"}
    assert problems(found["roles/demo/tasks/Windows.yml task 'inner'"])
    assert not problems(found["roles/demo/tasks/Windows.yml task 'free form'"])


def test_templates_are_rendered_with_role_defaults(tmp_path):
    role = tmp_path / "roles" / "demo"
    (role / "defaults").mkdir(parents=True)
    (role / "templates").mkdir()
    (role / "defaults" / "main.yml").write_text("demo_minutes: 5\ndemo_on: true\n")
    (role / "templates" / "lock.ps1.j2").write_text(
        "{{ ansible_managed | comment }}\n"
        "$seconds = {{ demo_minutes | int * 60 }}\n"
        "{% if demo_on | bool %}\nif ($seconds -gt 0) {\n{% endif %}\n  Write-Output $seconds\n")
    text = dict(templates(tmp_path))["roles/demo/templates/lock.ps1.j2"]
    assert "$seconds = 300" in text
    # The `if` opened by the template is never closed: rendered, the script must fail the gate.
    assert problems(text)
    assert not problems(render(role / "templates" / "lock.ps1.j2", role_vars(role, {"demo_on": False})))
