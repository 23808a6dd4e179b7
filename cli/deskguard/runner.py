"""Run a playbook through ansible-runner, show live progress, and return per-host outcomes.

Every command that touches laptops goes through `run_playbook`; nothing parses ansible-playbook's text.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .errors import EXIT_HOST_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_UNREACHABLE
from .site import KIT_ROOT, ansible_cfg
from .term import verbosity
from .windows.vault import runner_env as vault_env

# Actions that run on the controller only; they are not round trips to the laptop.
CONTROLLER_ACTIONS = frozenset(
    a
    for name in (
        "set_fact", "assert", "debug", "fail", "meta", "include_tasks", "import_tasks", "include_role",
        "import_role", "include_vars", "add_host", "group_by", "validate_argument_spec", "set_stats", "pause",
    )
    for a in (name, f"ansible.builtin.{name}")
) | {"deskguard_order_ack"}   # the kit's own controller-only step (records an acknowledgement in the store)


# Steps the kit's display does not show: Ansible's own argument validation, and meta tasks (never rendered).
INTERNAL_ACTIONS = frozenset(a for name in ("validate_argument_spec", "meta") for a in (name, f"ansible.builtin.{name}"))
# What Ansible leaves in a name it did not (or could not) render: `{{ var }}`, `<< error 1 - 'x' is undefined >>`.
UNRENDERED = re.compile(r"\{\{.*?\}\}|<< error .*?>>")

# Task names start with a control ID: "LCK-001 | PATCH | ...".
CONTROL_TASK = re.compile(r"^([A-Z]{2,4}-\d{3}) \| ")
# warning: met, but a step named a finding (a weak PBKDF, a pending reboot): never "compliant" beside a finding.
# "applied" outranks it: what the run changed is shown, with the findings beside it.
CONTROL_RANK = {"failed": 6, "noncompliant": 5, "applied": 4, "warning": 3, "not_applicable": 2, "compliant": 1,
                "skipped": 0}


@dataclass
class HostOutcome:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    unreachable: bool = False
    module_calls: int = 0
    failed_tasks: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    # (failed task, its reasons), in the order they failed: what the terminal prints under the task
    failures: list[tuple[str, list[str]]] = field(default_factory=list)
    # control ID -> failed | noncompliant | warning | applied | not_applicable | compliant | skipped (the worst)
    controls: dict[str, str] = field(default_factory=dict)
    # control ID -> one-line notes that read-only (AUDIT) steps returned as `finding`
    findings: dict[str, list[str]] = field(default_factory=dict)

    def record_control(self, cid: str | None, state: str, finding: str | None = None) -> None:
        """Keep the worst state seen for control `cid` (None: the task belongs to no control)."""
        if cid is None:
            return
        if state == "compliant" and finding:
            state = "warning"
        if CONTROL_RANK[state] >= CONTROL_RANK.get(self.controls.get(cid, "skipped"), 0):
            self.controls[cid] = state
        if finding:
            self.findings.setdefault(cid, []).append(finding)

    @property
    def state(self) -> str:
        if self.unreachable:
            return "unreachable"
        if self.failed:
            return "failed"
        return "changed" if self.changed else "ok"


def display_name(task: str) -> str:
    """A task name as the user should read it: Ansible renders names before it runs a task, but not a meta
    task's, and marks what it could not render; those parts are left out rather than shown raw."""
    name = UNRENDERED.sub("", task or "")
    name = re.sub(r"\(\s*\)|\[\s*\]", "", name)
    return re.sub(r"\s+", " ", name).strip()


def control_id(task: str) -> str | None:
    match = CONTROL_TASK.match(task or "")
    return match.group(1) if match else None


@dataclass
class PlaybookResult:
    playbook: str
    rc: int
    status: str
    seconds: float
    hosts: dict[str, HostOutcome]
    events: list[dict] = field(default_factory=list)
    interrupted: bool = False
    notices: list[str] = field(default_factory=list)   # "deskguard: …" lines the kit's plugins printed

    @property
    def exit_code(self) -> int:
        # ansible-runner turns SIGINT into a cancel; ansible-playbook exits 99 when the user interrupts it.
        if self.interrupted or self.status == "canceled" or self.rc == 99:
            return EXIT_INTERRUPTED
        if any(h.unreachable for h in self.hosts.values()):
            return EXIT_UNREACHABLE
        if any(h.failed for h in self.hosts.values()) or self.rc != 0:
            return EXIT_HOST_FAILED
        if any("noncompliant" in h.controls.values() for h in self.hosts.values()):
            return EXIT_HOST_FAILED
        return EXIT_OK

    @property
    def module_calls(self) -> int:
        return sum(h.module_calls for h in self.hosts.values())

    def task_result(self, action: str) -> dict | None:
        """The result of the last task that ran `action` successfully (the run needs keep_events=True)."""
        found = None
        for event in self.events:
            data = event.get("event_data") or {}
            if event.get("event") == "runner_on_ok" and data.get("task_action") == action:
                found = data.get("res")
        return found


class EventCollector:
    """Turns ansible-runner events into per-host outcomes; knows nothing about display."""

    def __init__(self, keep_events: bool = False):
        self.hosts: dict[str, HostOutcome] = {}
        self.steps: list[str] = []          # tasks that ran (not skipped, not internal) on some host, in order
        self._stepped: set[str] = set()
        self.failures: list[tuple[str, str, list[str]]] = []   # (host, task, reasons) as they happen
        self.keep_events = keep_events
        self.events: list[dict] = []
        self.notices: list[str] = []

    def host(self, name: str) -> HostOutcome:
        return self.hosts.setdefault(name, HostOutcome())

    def __call__(self, event: dict) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind.startswith("runner_on_") and data.get("host"):
            self._on_host_event(kind, data)
        elif kind == "playbook_on_stats":
            for name in data.get("processed", {}):
                self.host(name)
            for name in data.get("dark", {}) or {}:
                self.host(name).unreachable = True
        if not kind.startswith("runner_on_"):
            # What the kit's callback/plugins say outside a task result (e.g. "the run was NOT recorded: …").
            self.notices += [line.split("deskguard: ", 1)[1] for line in (event.get("stdout") or "").splitlines()
                             if "deskguard: " in line]
        if self.keep_events:
            self.events.append(event)
        return False  # do not let ansible-runner keep events in memory/artifacts for us

    def _on_host_event(self, kind: str, data: dict) -> None:
        h = self.host(data["host"])
        action = data.get("task_action", "")
        res = data.get("res") or {}
        if kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable") and action not in CONTROLLER_ACTIONS:
            # A loop makes one round trip per item that ran.
            # An action plugin that calls modules itself says how many times (deskguard_escrow).
            items = res.get("results")
            if isinstance(res.get("module_calls"), int):
                h.module_calls += res["module_calls"]
            elif isinstance(items, list):
                h.module_calls += sum(1 for r in items if not (isinstance(r, dict) and r.get("skipped")))
            else:
                h.module_calls += 1
        task = display_name(data.get("task", ""))
        key = data.get("task_uuid") or task
        # A step is shown once a host has a result for it: ansible-runner sends `runner_on_start` before a task's
        # `when:` is evaluated, so a task skipped everywhere would otherwise read as one that ran.
        ran = kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable")
        if ran and action not in INTERNAL_ACTIONS and key not in self._stepped and task:
            self._stepped.add(key)
            self.steps.append(task)
        cid = control_id(task)
        # One step may report several controls at once: {"ENC-001": {"state": ..., "findings": [...]}, ...}
        for other, rep in (res.get("deskguard_controls") or {}).items():
            if isinstance(rep, dict) and rep.get("state") in CONTROL_RANK:
                findings = [str(f) for f in rep.get("findings") or []]
                h.record_control(other, "warning" if rep["state"] == "compliant" and findings else rep["state"])
                h.findings.setdefault(other, []).extend(findings)
        if kind == "runner_on_ok":
            h.ok += 1
            h.changed += bool(res.get("changed"))
            # A step that found its control cannot apply here (USB in a container) says so: never "compliant".
            state = "applied" if res.get("changed") else "not_applicable" if res.get("not_applicable") else "compliant"
            h.record_control(cid, state, str(res["finding"]) if res.get("finding") else None)
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            h.failed += 1
            h.record_control(cid, "failed")
            h.failed_tasks.append(task)
            reasons = failure_messages(res)
            h.messages.extend(reasons)
            h.failures.append((task, reasons))
            self.failures.append((data["host"], task, reasons))
        elif kind == "runner_on_unreachable":
            h.unreachable = True
            h.messages.extend(failure_messages(res))
        elif kind == "runner_on_skipped":
            h.skipped += 1
            h.record_control(cid, "skipped")


def run_on_host(site: Path, playbook: str, host: str) -> tuple[str, PlaybookResult]:
    """Run a read-only report playbook on one laptop of the inventory, keeping its events (UsageError, exit 2,
    for a host the inventory does not have). Returns (the validated host name, the result)."""
    from .errors import UsageError
    from .site.inventory import hosts_file, list_hosts, validate_hostname

    hostname = validate_hostname(host)
    if hostname not in list_hosts(site):
        raise UsageError(f"{hostname} is not in the inventory (see `deskguard devices list`)")
    return hostname, run_playbook(site, playbook, [hosts_file(site)], limit=hostname,
                                  extravars={"deskguard_hosts": hostname}, keep_events=True)


def failure_messages(res: dict) -> list[str]:
    """The messages that say why: a loop's own message ("One or more items failed") says nothing."""
    if res.get("censored"):
        return ["the reason is hidden: the task's result is no_log"]   # censored stays censored
    items = [r for r in res.get("results") or [] if isinstance(r, dict) and r.get("failed")
             and (r.get("msg") or r.get("censored"))]
    if items:
        return [_reason(r) for r in items]
    return [_reason(res)] if res.get("msg") else []


def _reason(res: dict) -> str:
    """A result's msg; a module that crashed says only "MODULE FAILURE", so its error's last line is added."""
    if res.get("censored"):
        return "the reason is hidden: the task's result is no_log"
    msg = str(res.get("msg") or "")
    if msg.startswith("MODULE FAILURE"):
        tail = [line.strip() for line in str(res.get("module_stderr") or res.get("module_stdout") or "").splitlines()
                if line.strip()]
        if tail:
            return f"MODULE FAILURE: {tail[-1]}"
    return msg


def playbook_dir(site: Path, playbook: str) -> Path:
    """A site may carry its own playbooks; otherwise the kit's are used (a site holds inventory and state)."""
    own = site / "playbooks"
    return own if (own / playbook).exists() else KIT_ROOT / "playbooks"


def _ansible_env(site: Path, extra: dict | None) -> dict:
    bindir = str(Path(sys.executable).parent)
    env = {
        "ANSIBLE_CONFIG": str(ansible_cfg(site)),
        "DESKGUARD_SITE": str(site),  # action plugins open the site's store and keys
        # ansible-runner sets this variable to its own callback folder, which hides ansible.cfg's
        # callback_plugins; it keeps what is already there, so ours goes in first (the run recorder).
        "ANSIBLE_CALLBACK_PLUGINS": str(KIT_ROOT / "plugins" / "callback"),
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
        "ANSIBLE_FORCE_COLOR": "0",
        "PYTHONUNBUFFERED": "1",
    }
    # Vault-encrypted host_vars (the Windows management password) open with the site's vault password file.
    env.update(vault_env(site))
    env.update(extra or {})
    return env


def run_playbook(
    site: Path,
    playbook: str,
    inventory: Iterable[Path],
    *,
    limit: str | None = None,
    extravars: dict | None = None,
    check: bool = False,
    envvars: dict | None = None,
    forks: int | None = None,
    tags: str | None = None,
    progress: Callable[[EventCollector], object] | None = None,
    keep_events: bool = False,
) -> PlaybookResult:
    """Run `playbooks/<playbook>` against `inventory`; `progress` builds a display around the collector.
    The site's policy is checked first (deskguard.site.policyfile.check): a bad one reaches no laptop."""
    import ansible_runner

    from .site.policyfile import check as check_policy

    check_policy(site)

    collector = EventCollector(keep_events=keep_events)
    display = progress(collector) if progress else None
    private = Path(tempfile.mkdtemp(prefix="deskguard-run-"))
    cmdline = "--check --diff" if check else None
    start = time.monotonic()
    interrupted = False
    try:
        if display:
            display.__enter__()
        try:
            runner = ansible_runner.run(
                private_data_dir=str(private),
                project_dir=str(playbook_dir(site, playbook)),
                playbook=playbook,
                inventory=[str(p) for p in inventory],
                limit=limit,
                extravars=extravars or {},
                envvars=_ansible_env(site, envvars),
                cmdline=cmdline,
                forks=forks,
                tags=tags,
                quiet=True,
                # --verbose: Ansible's -v, -vv… in the collected messages; --quiet (-1) is ours alone, never
                # Ansible's: a negative count became a bare "-" on its command line.
                verbosity=max(verbosity(), 0) or None,
                suppress_env_files=True,
                event_handler=lambda ev: (collector(ev), display and display.refresh())[0],
            )
            rc, status = runner.rc, runner.status
        except KeyboardInterrupt:
            interrupted, rc, status = True, EXIT_INTERRUPTED, "canceled"
    finally:
        if display:
            display.__exit__(None, None, None)
        # Artifacts hold task results; they are not kept on the controller.
        shutil.rmtree(private, ignore_errors=True)
    return PlaybookResult(playbook, rc, status, time.monotonic() - start, collector.hosts,
                          collector.events, interrupted, collector.notices)
