"""The runner drives real ansible-playbook runs (local connection, plus one host that refuses SSH)."""

from __future__ import annotations

import io
import socket
import textwrap

import pytest

from deskguard.errors import EXIT_HOST_FAILED, EXIT_OK, EXIT_UNREACHABLE
from deskguard.progress import print_summary, progress_factory
from deskguard.runner import run_playbook

pytestmark = pytest.mark.unit

PLAY = textwrap.dedent("""\
    - hosts: all
      gather_facts: false
      tasks:
        - name: T1 | AUDIT | read something
          ansible.builtin.command: "true"
          changed_when: false
        - name: T2 | PATCH | change something
          ansible.builtin.command: "true"
          changed_when: true
        - name: T3 | AUDIT | controller-only step
          ansible.builtin.set_fact:
            x: 1
        - name: T4 | PATCH | break one host
          ansible.builtin.fail:
            msg: "broken on purpose"
          when: inventory_hostname == 'bad'
    """)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_site(tmp_path, hosts: str):
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "t.yml").write_text(PLAY)
    inv = tmp_path / "hosts.yml"
    inv.write_text(hosts)
    return tmp_path, inv


def test_per_host_outcomes_and_module_calls(tmp_path):
    site, inv = make_site(tmp_path, textwrap.dedent("""\
        all:
          hosts:
            good: {ansible_connection: local, ansible_python_interpreter: "{{ ansible_playbook_python }}"}
        """))
    result = run_playbook(site, "t.yml", [inv])
    assert result.exit_code == EXIT_OK
    good = result.hosts["good"]
    assert (good.state, good.changed, good.failed) == ("changed", 1, 0)
    # T1 and T2 reach the host; set_fact runs on the controller; T4 is skipped.
    assert good.module_calls == 2
    assert good.skipped == 1


def test_failed_and_unreachable_hosts_set_exit_codes(tmp_path):
    site, inv = make_site(tmp_path, textwrap.dedent(f"""\
        all:
          vars: {{ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"}}
          hosts:
            good: {{ansible_connection: local}}
            bad: {{ansible_connection: local}}
            gone: {{ansible_host: 127.0.0.1, ansible_port: {closed_port()}, ansible_user: nobody}}
        """))
    out = io.StringIO()
    result = run_playbook(site, "t.yml", [inv], progress=progress_factory("test", 3, stream=out))
    assert result.hosts["bad"].state == "failed"
    assert result.hosts["bad"].failed_tasks == ["T4 | PATCH | break one host"]
    assert result.hosts["gone"].state == "unreachable"
    assert result.hosts["good"].state == "changed"
    assert result.exit_code == EXIT_UNREACHABLE  # unreachable outranks failed
    # Plain (non-terminal) progress names the tasks as they start.
    assert "T2 | PATCH | change something" in out.getvalue()
    summary = io.StringIO()
    print_summary(result, stream=summary)
    lines = summary.getvalue().splitlines()
    assert [n for n in ("gone", "bad", "good") if any(f" {n} " in l for l in lines)] == ["gone", "bad", "good"]
    assert next(i for i, l in enumerate(lines) if " gone " in l) < next(i for i, l in enumerate(lines) if " good " in l)


def test_check_mode_changes_nothing(tmp_path):
    marker = tmp_path / "marker"
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "t.yml").write_text(textwrap.dedent(f"""\
        - hosts: all
          gather_facts: false
          tasks:
            - ansible.builtin.copy: {{content: "x", dest: "{marker}"}}
        """))
    inv = tmp_path / "hosts.yml"
    inv.write_text('all: {hosts: {h: {ansible_connection: local, ansible_python_interpreter: "{{ ansible_playbook_python }}"}}}\n')
    result = run_playbook(tmp_path, "t.yml", [inv], check=True)
    assert result.hosts["h"].changed == 1 and not marker.exists()
    assert run_playbook(tmp_path, "t.yml", [inv]).exit_code == EXIT_OK and marker.read_text() == "x"


def test_failed_host_exit_code(tmp_path):
    site, inv = make_site(tmp_path, 'all: {hosts: {bad: {ansible_connection: local, ansible_python_interpreter: "{{ ansible_playbook_python }}"}}}\n')
    assert run_playbook(site, "t.yml", [inv]).exit_code == EXIT_HOST_FAILED


def test_controls_keep_their_worst_state_and_findings():
    from deskguard.runner import EventCollector

    c = EventCollector()

    def ev(kind, task, **res):
        c({"event": kind, "event_data": {"host": "h", "task": task, "task_action": "x", "res": res}})

    ev("runner_on_ok", "UPD-001 | PATCH | policy", changed=True)
    ev("runner_on_ok", "UPD-001 | AUDIT | reboot", changed=False, finding="reboot pending")
    ev("runner_on_ok", "LCK-001 | PATCH | lock", changed=False)
    ev("runner_on_failed", "LCK-001 | PATCH | again", msg="boom")
    ev("runner_on_skipped", "FW-001 | PATCH | fw")
    ev("runner_on_ok", "BASE | AUDIT | facts", changed=False)  # no control ID: not a control
    h = c.hosts["h"]
    assert h.controls == {"UPD-001": "applied", "LCK-001": "failed", "FW-001": "skipped"}
    assert h.findings == {"UPD-001": ["reboot pending"]}
    assert h.messages == ["boom"] and h.module_calls == 5


def test_a_step_that_cannot_apply_is_not_applicable_never_compliant():
    from deskguard.runner import EventCollector

    c = EventCollector()
    c({"event": "runner_on_ok", "event_data": {"host": "h", "task": "USB-001 | PATCH | in force", "task_action": "x",
                                               "res": {"changed": False, "not_applicable": True,
                                                       "finding": "USB control not applicable: a container"}}})
    c({"event": "runner_on_ok", "event_data": {"host": "h", "task": "USB-001 | AUDIT | later", "task_action": "x",
                                               "res": {"changed": False}}})
    assert c.hosts["h"].controls == {"USB-001": "not_applicable"}
    assert c.hosts["h"].findings == {"USB-001": ["USB control not applicable: a container"]}



def test_quiet_is_not_handed_to_ansible(tmp_path, monkeypatch):
    """`deskguard -q` is the kit's own verbosity (-1): it once reached ansible-playbook as a bare "-" argument,
    which failed every run under -q before any host was contacted."""
    from deskguard import term

    monkeypatch.setattr(term, "_verbosity", 0)
    term.set_verbosity(0, True)
    site, inv = make_site(tmp_path, textwrap.dedent("""\
        all:
          hosts:
            good: {ansible_connection: local, ansible_python_interpreter: "{{ ansible_playbook_python }}"}
        """))
    result = run_playbook(site, "t.yml", [inv])
    assert result.exit_code == EXIT_OK and result.hosts["good"].state == "changed", (result.rc, result.status)
