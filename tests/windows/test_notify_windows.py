"""The operator's restart toasts on Windows (issue 23), checked without Windows: deskguard-notify.ps1 (run at each
logon as the user by the scheduled task deskguard-notify) shows the texts the Linux notifier shows, from the
same catalogs, with the same policy defaults; the toast it builds is well-formed ToastGeneric XML whatever the
text; the task runs as the logged-on user, never as SYSTEM; the agent gives the operator's folder nothing of
the posture but the pending restart. Whether Windows shows the toast is not verified here (docs/operators.md)."""

from __future__ import annotations

import html
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "plugins" / "module_utils"))
import deskguard_operator_catalog  # noqa: E402
import deskguard_operator_notify as notify  # noqa: E402

pytestmark = pytest.mark.windows
NOTIFY = (REPO / "roles/endpoint_agent/files/deskguard-notify.ps1").read_text(encoding="utf-8")
INSTALL = (REPO / "plugins/modules/deskguard_agent_install_windows.ps1").read_text(encoding="utf-8")
AGENT = (REPO / "roles/endpoint_agent/files/deskguard-agent.ps1").read_text(encoding="utf-8")


def ps_string(name: str) -> str:
    """The single-quoted string assigned to $name at the top level of the notify script."""
    (value,) = re.findall(rf"^\${name} = '((?:[^']|'')*)'$", NOTIFY, re.M)
    return value.replace("''", "'")


def test_the_toasts_say_what_the_linux_notifications_say_from_the_same_catalog():
    assert ps_string("RebootSummary") == notify.REBOOT_SUMMARY
    assert ps_string("RebootBody") == notify.REBOOT_BODY
    assert ps_string("RebootOverdue") == notify.REBOOT_OVERDUE
    shipped = json.loads((REPO / "roles/endpoint_agent/files/operator-catalog.json").read_text(encoding="utf-8"))
    assert shipped == deskguard_operator_catalog.CATALOG
    for language in ("en", "ja"):
        for message in (notify.REBOOT_SUMMARY, notify.REBOOT_BODY, notify.REBOOT_OVERDUE):
            assert shipped[language][message], (language, message)
    (defaults,) = re.findall(r"^\$Defaults = @\{ (.*) \}$", NOTIFY, re.M)
    pairs = dict(re.findall(r"(\w+) = ('[^']*'|\d+)", defaults))
    assert {k: (v.strip("'") if v.startswith("'") else int(v)) for k, v in pairs.items()} == notify.DEFAULTS


def test_placeholders_are_filled_the_way_python_fills_them():
    # Get-OperatorText replaces '%(name)s' with the value: for every translation the notifier uses, that gives
    # what Python's `%` operator gives (no other format in these messages).
    (replace,) = re.findall(r"\$text\.Replace\('%\(' \+ \$name \+ '\)s', \[string\]\$Params\[\$name\]\)", NOTIFY)
    assert replace
    for language, table in deskguard_operator_catalog.CATALOG.items():
        for message in (notify.REBOOT_BODY, notify.REBOOT_OVERDUE):
            text = table[message]
            assert text.replace("%(deadline)s", "2026-12-10 09:00") == text % {"deadline": "2026-12-10 09:00"}


@pytest.mark.parametrize("title, body, urgency", [
    ("パソコンを再起動してください。", "セキュリティ更新のため再起動が必要です。2026-12-10 09:00までに…", "normal"),
    ("Please restart the laptop.", "A <b>restart</b> & \"quotes\" 'too'", "critical"),
])
def test_the_toast_is_well_formed_toastgeneric_xml_with_the_text_escaped(title, body, urgency):
    """New-ToastXml's template, filled as PowerShell fills it (-f, SecurityElement.Escape = the five XML
    entities), parses as a toast with the title and the text, unchanged, in two text elements."""
    (template,) = re.findall(r"return \('(<toast.*?)' \+\s*'(.*?)'\) -f", NOTIFY, re.S)
    fmt = "".join(template)

    def escape(text):   # System.Security.SecurityElement.Escape
        return html.escape(text, quote=True).replace("&#x27;", "&apos;")

    duration = "long" if urgency == "critical" else "short"
    toast = ET.fromstring(fmt.replace("{0}", duration).replace("{1}", escape(title)).replace("{2}", escape(body)))
    assert toast.tag == "toast" and toast.get("duration") == duration
    binding = toast.find("visual/binding")
    assert binding.get("template") == "ToastGeneric"
    assert [t.text for t in binding.findall("text")] == [title, body]


def test_the_toast_task_runs_as_the_logged_on_user_never_as_system():
    section = INSTALL.split("$notifyName = 'deskguard-notify'", 1)[1].split("$module.Result.changed", 1)[0]
    assert "New-ScheduledTaskPrincipal -GroupId 'S-1-5-32-545' -RunLevel Limited" in section   # BUILTIN\Users
    assert "New-ScheduledTaskTrigger -AtLogOn" in section
    assert "S-1-5-18" not in section and "Highest" not in section and "ServiceAccount" not in section
    assert "-WindowStyle Hidden" in section and "-MultipleInstances Parallel" in section
    # Users may read the operator folder and nothing more: no write, no inherited ProgramData rights.
    acl = INSTALL.split("function Set-OperatorAcl", 1)[1].split("\n}\n", 1)[0]
    assert "Set-PrivateAcl $Dir" in acl and "'S-1-5-32-545'" in acl and "'ReadAndExecute'" in acl
    assert "Write" not in acl.split("'S-1-5-32-545'", 1)[1]


def test_the_agent_gives_the_operator_folder_only_the_pending_restart():
    save = AGENT.split("function Save-OperatorStatus", 1)[1].split("\n}\n", 1)[0]
    (data,) = re.findall(r"\$data = @\{ (.*) \}", save)
    assert sorted(k for k, _ in re.findall(r"(\w+) = (\$?\w+)", data)) == [
        "reboot_pending", "reboot_pending_since", "v", "written"]
    # The deadline counts from the first run that saw the restart pending, as on Linux.
    assert "$previous.reboot_pending_since" in save
    assert "$out.operator_status = Save-OperatorStatus $posture $operatorDir" in AGENT
