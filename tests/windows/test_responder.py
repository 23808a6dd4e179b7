"""The loopback responder speaks enough WS-Management for pywinrm and for Ansible's winrm connection, and
records what it was asked to run. Basic over HTTP on 127.0.0.1 only: see inventory.yml."""

from __future__ import annotations

import json

import pytest
import winrm
from payload import module_call
from responder import Responder
from winrm.exceptions import InvalidCredentialsError, WSManFaultError

pytestmark = pytest.mark.windows
AUTH = ("deskguard-test", "loopback-only")


def session(r, auth=AUTH):
    return winrm.Session(r.url, auth=auth, transport="basic", message_encryption="never")


def test_run_ps_sends_the_decoded_script_and_gets_its_output():
    def host(argv, script, stdin):
        assert script is not None and script.startswith("Get-BitLockerVolume")
        return json.dumps({"MountPoint": "C:", "VolumeStatus": "FullyEncrypted"}).encode(), b"", 0

    with Responder(script_handler=host) as r:
        out = session(r).run_ps("Get-BitLockerVolume -MountPoint C: | ConvertTo-Json")
    assert out.status_code == 0 and json.loads(out.std_out)["VolumeStatus"] == "FullyEncrypted"
    assert r.scripts == ["Get-BitLockerVolume -MountPoint C: | ConvertTo-Json"]
    assert r.actions == ["Create", "Command", "Receive", "Signal", "Delete"]


def test_powershell_errors_come_back_as_clixml_and_an_exit_code():
    clixml = (b'#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
              b'<S S="Error">Access is denied._x000D__x000A_</S></Objs>')
    with Responder(script_handler=lambda argv, script, stdin: (b"", clixml, 1)) as r:
        out = session(r).run_ps("Get-Tpm")
    assert out.status_code == 1 and out.std_err == b"Access is denied."


def test_wrong_password_is_rejected():
    with Responder() as r, pytest.raises(InvalidCredentialsError):
        session(r, auth=("deskguard-test", "wrong")).run_cmd("hostname")
    assert r.actions == []


def test_an_unknown_shell_is_a_soap_fault_not_a_dropped_connection():
    with Responder() as r:
        p = winrm.Protocol(r.url, transport="basic", username=AUTH[0], password=AUTH[1],
                           message_encryption="never")
        with pytest.raises(WSManFaultError, match="cannot handle this Command"):
            p.run_command("NO-SUCH-SHELL", "hostname")


def test_protocol_streams_stdin_with_send():
    seen = []
    with Responder(script_handler=lambda argv, script, stdin: (seen.append(stdin) or b"ok", b"", 0)) as r:
        p = winrm.Protocol(r.url, transport="basic", username=AUTH[0], password=AUTH[1],
                           message_encryption="never")
        shell = p.open_shell()
        command = p.run_command(shell, "powershell", ["-Command", "-"], console_mode_stdin=False)
        p.send_command_input(shell, command, b"first ")
        p.send_command_input(shell, command, b"second", end=True)
        stdout, stderr, rc = p.get_command_output(shell, command)
        p.cleanup_command(shell, command)
        p.close_shell(shell)
    assert (stdout, rc, seen) == (b"ok", 0, [b"first second"])
    assert r.actions == ["Create", "Command", "Send", "Send", "Receive", "Signal", "Delete"]


def test_exec_wrapper_payload_is_decoded():
    manifest = {"scripts": {}, "signed_hashlist": [], "actions": [{"name": "module_wrapper.ps1", "params": {
        "Script": "win_regedit.ps1", "ForModule": True, "Variables": [{"Name": "complex_args", "Scope": "Global",
        "Value": {"path": "HKLM:\\X", "_ansible_check_mode": True, "_ansible_module_name": "ansible.windows.win_regedit"}}]}}]}
    stdin = (json.dumps({"name": "exec_wrapper", "script": "", "params": {}}) + "\n\0\0\0\0\n"
             + json.dumps(manifest)).encode()
    call = module_call(stdin)
    assert (call.module, call.short, call.args, call.check_mode) == (
        "ansible.windows.win_regedit", "win_regedit", {"path": "HKLM:\\X"}, True)
    assert module_call(b"not a payload") is None


def test_ansible_runs_record_modules_in_order_with_scripted_answers(responder, play):
    responder.answers["win_regedit"] = lambda call: {"changed": call.args["name"] == "AUOptions"}
    proc = play("role.yml", deskguard_test_role="auto_update")
    names = [c.args["name"] for c in responder.calls]
    assert names[:2] == ["NoAutoUpdate", "AUOptions"] and len(names) == 6
    assert "changed=1" in proc.stdout  # the scripted answer reached Ansible


def test_check_mode_reaches_the_module(responder, play):
    play("role.yml", check=True, deskguard_test_role="screen_lock")
    assert [c.check_mode for c in responder.calls] == [True]


def test_a_failed_answer_fails_the_task(responder, play):
    responder.answers["*"] = {"failed": True, "msg": "Access is denied"}
    proc = play("role.yml", expect_rc=2, deskguard_test_role="firewall")
    assert "Access is denied" in proc.stdout
