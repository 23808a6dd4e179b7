"""What the progress display and the run summary say: task names as Ansible rendered them (never a raw
`{{ }}`), only steps that ran, no internal steps, and a failure's reason under the failing task."""

from __future__ import annotations

import io
import textwrap

import pytest

from deskguard.progress import LiveProgress, print_summary, progress_factory
from deskguard.runner import EventCollector, run_playbook

pytestmark = pytest.mark.unit


def feed(events: list[tuple[str, dict]]) -> str:
    """The plain (non-terminal) progress lines for a stream of ansible-runner events."""
    out = io.StringIO()
    collector = EventCollector()
    display = LiveProgress(collector, "onboard lt-1", 1, stream=out)
    with display:
        for kind, data in events:
            collector({"event": kind, "event_data": {"host": "lt-1", **data}})
            display.refresh()
    return out.getvalue()


def task(name: str, action: str = "ansible.builtin.command", uuid: str | None = None) -> tuple[str, dict]:
    return "playbook_on_task_start", {"task": name, "task_action": action, "task_uuid": uuid or name}


def result(kind: str, name: str, action: str = "ansible.builtin.command", uuid: str | None = None, **res):
    return kind, {"task": name, "task_action": action, "task_uuid": uuid or name, "res": res}


def test_a_meta_task_that_ansible_did_not_render_is_never_shown_with_its_raw_template():
    name = "GUARD | AUDIT | Close the persistent connection ({{ __guard_after }})"
    out = feed([task(name, "ansible.builtin.meta"),
                task("GUARD | AUDIT | Log in again ({{ __guard_after }})", "ansible.builtin.ping"),
                result("runner_on_ok", "GUARD | AUDIT | Log in again ({{ __guard_after }})", "ansible.builtin.ping")])
    assert "{{" not in out and "}}" not in out, out
    assert "GUARD | AUDIT | Log in again" in out and "()" not in out, out


def test_a_name_ansible_could_not_render_loses_its_error_marker():
    name = "LCK-001 | PATCH | lock for << error 1 - 'nope' is undefined >>"
    out = feed([task(name), result("runner_on_ok", name)])
    assert "<<" not in out and "undefined" not in out and "LCK-001 | PATCH | lock for" in out, out


def test_skipped_tasks_are_not_shown_as_steps_that_ran():
    out = feed([task("GUARD | AUDIT | Log in again over WinRM (firewall)"),
                result("runner_on_skipped", "GUARD | AUDIT | Log in again over WinRM (firewall)"),
                task("GUARD | PATCH | keep the VPN change (screen_lock)"),
                result("runner_on_skipped", "GUARD | PATCH | keep the VPN change (screen_lock)"),
                task("GUARD | AUDIT | Log in again (firewall)"),
                result("runner_on_ok", "GUARD | AUDIT | Log in again (firewall)")])
    assert "WinRM" not in out and "VPN change" not in out, out
    assert "Log in again (firewall)" in out, out


def test_argument_validation_is_not_a_step():
    name = "Validating arguments against arg spec 'main' - Screen lock"
    out = feed([task(name, "ansible.builtin.validate_argument_spec"),
                result("runner_on_ok", name, "ansible.builtin.validate_argument_spec")])
    assert "arg spec" not in out, out


def test_a_failure_prints_its_reason_under_the_failing_task():
    name = "ACC-001 | AUDIT | the operator account exists"
    why = "the operator account 'bars' does not exist on this laptop: create it first"
    out = feed([task(name), result("runner_on_failed", name, msg=why)])
    assert name in out and why in out, out


def test_a_censored_failure_stays_censored():
    name = "VPN-001 | PATCH | key file"
    out = feed([task(name), result("runner_on_failed", name, censored="the output has been hidden due to the "
                                   "fact that 'no_log: true' was specified for this result")])
    assert name in out and "no_log" in out, out


def test_the_summary_names_each_failure_with_its_reason(tmp_path):
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "t.yml").write_text(textwrap.dedent("""\
        - hosts: all
          gather_facts: false
          tasks:
            - name: ACC-001 | AUDIT | the operator account exists
              ansible.builtin.fail:
                msg: "the operator account 'bars' does not exist on this laptop: create it first (useradd bars)"
        """))
    inv = tmp_path / "hosts.yml"
    inv.write_text('all: {hosts: {h: {ansible_connection: local, ansible_python_interpreter: '
                   '"{{ ansible_playbook_python }}"}}}\n')
    live = io.StringIO()
    res = run_playbook(tmp_path, "t.yml", [inv], progress=progress_factory("onboard h", 1, stream=live))
    summary = io.StringIO()
    print_summary(res, stream=summary)
    for text in (live.getvalue(), summary.getvalue()):
        assert "ACC-001 | AUDIT | the operator account exists" in text, text
        assert "the operator account 'bars' does not exist on this laptop: create it first (useradd bars)" in \
            " ".join(text.split()), text


def test_a_task_skipped_in_a_real_run_is_not_shown(tmp_path):
    """ansible-runner sends `runner_on_start` for every host a task is queued for, before its `when:` is
    evaluated: a skipped task was shown as if it ran (seen in the demo's printed `wipe` step on a Debian VM:
    "… signs its acknowledgement (Windows)"). A real run, so the real event sequence is what is judged."""
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "t.yml").write_text(textwrap.dedent("""\
        - hosts: all
          gather_facts: false
          tasks:
            - name: WIPE | AUDIT | signs its acknowledgement (Windows)
              ansible.builtin.command: "true"
              when: false
            - name: WIPE | AUDIT | signs its acknowledgement
              ansible.builtin.command: "true"
        """))
    inv = tmp_path / "hosts.yml"
    inv.write_text('all: {hosts: {h: {ansible_connection: local, ansible_python_interpreter: '
                   '"{{ ansible_playbook_python }}"}}}\n')
    live = io.StringIO()
    run_playbook(tmp_path, "t.yml", [inv], progress=progress_factory("wipe h", 1, stream=live))
    assert "(Windows)" not in live.getvalue(), live.getvalue()
    assert "WIPE | AUDIT | signs its acknowledgement" in live.getvalue(), live.getvalue()
