"""Live progress for playbook runs: a rich display on a terminal, plain lines elsewhere (CI, logs)."""

from __future__ import annotations

import sys
import time

from .runner import EventCollector, PlaybookResult
from .term import quiet, verbosity


class LiveProgress:
    """Context manager wrapped around a run; `refresh()` is called on every ansible-runner event."""

    def __init__(self, collector: EventCollector, title: str, total_hosts: int, stream=None):
        self.collector = collector
        self.title = title
        self.total = total_hosts
        self.stream = stream or sys.stderr
        # --verbose prints every task as a line, even on a terminal (the live display would hide them).
        self.interactive = self.stream.isatty() and verbosity() == 0
        self._live = None
        self._steps_shown = 0
        self._failures_shown = 0
        self._start = time.monotonic()

    def _counts(self) -> dict[str, int]:
        counts = {"ok": 0, "changed": 0, "failed": 0, "unreachable": 0}
        for outcome in self.collector.hosts.values():
            counts[outcome.state] += 1
        return counts

    def render(self):
        from rich.table import Table

        c = self._counts()
        table = Table.grid(padding=(0, 2))
        table.add_row(f"[bold]{self.title}[/]", f"{time.monotonic() - self._start:5.0f} s")
        table.add_row(
            f"hosts seen {len(self.collector.hosts)}/{self.total}",
            f"[green]ok {c['ok']}[/]  [yellow]changed {c['changed']}[/]  "
            f"[red]failed {c['failed']}[/]  [magenta]unreachable {c['unreachable']}[/]",
        )
        # The last step that ran: a task Ansible skips is started too, but it did not run.
        table.add_row("last step", (self.collector.steps or ["(starting)"])[-1])
        return table

    def __enter__(self):
        if self.interactive:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self.render(), console=Console(file=self.stream), refresh_per_second=4,
                              transient=False)
            self._live.__enter__()
        else:
            print(f"== {self.title}: {self.total} host(s)", file=self.stream, flush=True)
        return self

    def refresh(self) -> None:
        if self._live:
            self._live.update(self.render())
            return
        for step in self.collector.steps[self._steps_shown:]:
            c = self._counts()
            print(f"   [{time.monotonic() - self._start:6.1f}s] {step}  "
                  f"(failed {c['failed']}, unreachable {c['unreachable']})", file=self.stream, flush=True)
        self._steps_shown = len(self.collector.steps)
        self._print_failures()

    def _print_failures(self) -> None:
        """Each failure where the user is looking: the host, the task, and why (never only the task's name)."""
        for host, task, reasons in self.collector.failures[self._failures_shown:]:
            print(f"   FAILED {host}: {task}", file=self.stream, flush=True)
            for reason in reasons or ["(the task gave no reason)"]:
                print(f"      {reason}", file=self.stream, flush=True)
        self._failures_shown = len(self.collector.failures)

    def __exit__(self, *exc):
        if self._live:
            self._live.update(self.render())
            self._live.__exit__(*exc)
            self._print_failures()
        return False


def progress_factory(title: str, total_hosts: int, stream=None):
    """The display for a run, or None under --quiet (the runner then shows nothing while it runs)."""
    if quiet():
        return None
    return lambda collector: LiveProgress(collector, title, total_hosts, stream)


def print_summary(result: PlaybookResult, stream=None) -> None:
    """One line per host, worst first, then the totals."""
    from rich.console import Console
    from rich.table import Table

    order = {"unreachable": 0, "failed": 1, "changed": 2, "ok": 3}
    table = Table(title=f"{result.playbook}: {result.seconds:.1f} s")
    for col in ("host", "state", "ok", "changed", "failed", "module calls", "detail"):
        table.add_column(col)
    for name, h in sorted(result.hosts.items(), key=lambda kv: (order[kv[1].state], kv[0])):
        detail = (h.failed_tasks[:1] or h.messages[:1] or [""])[0]
        table.add_row(name, h.state, str(h.ok), str(h.changed), str(h.failed), str(h.module_calls),
                      detail[:80])
    console = Console(file=stream or sys.stdout, width=140)
    console.print(table)
    # The table's cell is short; every failure's whole reason follows it.
    for name, h in sorted(result.hosts.items()):
        for task, reasons in h.failures:
            console.print(f"{name}: {task} failed: " + ("; ".join(reasons) or "the task gave no reason"),
                          markup=False, highlight=False)
