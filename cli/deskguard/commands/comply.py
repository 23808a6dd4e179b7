"""`deskguard comply`: the nightly compliance run."""

from __future__ import annotations

import io
import sys

import click

from .common import output_option, stream_output, write_output

FORMATS = ("table", "json", "junit", "csv", "html")


def _write(text: str, output) -> None:
    if output:
        write_output(output, text if text.endswith("\n") else text + "\n", "the compliance report")
    else:
        click.echo(text)


TABLE_HOSTS = 50   # the terminal table's hosts without --all: the worst ones (10,000 rows help nobody)


def _report(run, drift, history, fmt, output, fix=None, show_all=False):
    from ..compliance import report

    if fmt == "json":
        stream_output(output, lambda out: report.write_json(out, run, drift, history, fix), "the compliance report")
    elif fmt == "junit":
        stream_output(output, lambda out: report.write_junit(out, run), "the compliance report")
    elif fmt == "csv":
        stream_output(output, lambda out: report.write_csv(out, run), "the compliance report")
    elif fmt == "html":
        from ..compliance import html

        _write(html.render(run, drift, history), output)
    else:
        from rich.console import Console
        from rich.table import Table

        score = run.run["score"]
        table = Table(title=f"compliance run {run.run['id'][:8]}: {len(run.hosts)} host(s), fleet score "
                            f"{'-' if score is None else f'{score:.0f}%'}")
        rows = report.table_rows(run)
        hidden = 0 if show_all else max(len(rows) - TABLE_HOSTS, 0)
        rows = rows[:len(rows) - hidden]
        warned = any(r["warnings"] != "-" for r in rows)   # the column only when a control passed with a warning
        for col in ("host", "state", "score", "failing controls") + (("passed with a warning",) if warned else ()):
            table.add_column(col)
        for r in rows:
            table.add_row(r["host"], r["state"], r["score"], r["failing"], *((r["warnings"],) if warned else ()))
        buffer = io.StringIO() if output else None
        console = Console(file=buffer, width=120 if output else None)
        console.print(table)
        if hidden:
            console.print(f"{report.host_counts(run)}. The table shows the worst {len(rows)}; {hidden:,} more "
                          "host(s) not shown (`--all` lists every host).", markup=False, highlight=False)
        if drift:
            console.print("drift since the previous run:")
            for d in drift:
                console.print(f"  {d['host']} {d['control']}: {d['before'] or '-'} -> {d['after']} ({d['change']})")
        if fix is not None:
            for line in report.fix_lines(fix):
                console.print(line, markup=False, highlight=False)
        if output:
            _write(buffer.getvalue(), output)


@click.command()
@click.option("--limit", default=None, help="A host or Ansible host pattern (default: every laptop).")
@click.option("--fix", is_flag=True, help="Repair the failing controls on the failing hosts, then check again.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@output_option("Write the report to this file (atomically; says where; a missing folder is made).")
@click.option("--since", "since", default=None, help="Drift against this earlier run id (default: the previous run).")
@click.option("--all", "show_all", is_flag=True,
              help=f"The terminal table lists every host (default: the worst {TABLE_HOSTS} and the counts).")
@click.option("--site", default=None, help="Site folder (default: DESKGUARD_SITE or the checkout).")
def comply(limit, fix, fmt, as_json, output, since, show_all, site):
    """Score every control on every laptop, record the run, report drift.

    Exit codes: 0 every host compliant (a pass with a warning is compliant); 1 a host not compliant or not
    collected, or with --fix a control still failing after the repair; 2 bad input (policy, --limit, --output);
    3 a host unreachable with no check-in fresh enough to judge it from."""
    from ..compliance import command, report, runs
    from ..errors import UsageError
    from ..progress import progress_factory
    from ..site import inventory, site_dir
    from ..store import Store

    if as_json:
        if fmt not in ("table", "json"):
            raise UsageError(f"--json and --format {fmt} contradict each other: pick one")
        fmt = "json"
    root = site_dir(site)
    with Store.open(root) as store:  # a folder that is no site yet is told to run `deskguard init`
        if since and runs.load(store, since) is None:
            raise UsageError(f"--since {since}: no such run (see the JSON report's history)")
    inventory.play_hosts(root, limit)   # a limit that matches no laptop: one line, exit 2, before anything runs
    quiet = fmt != "table" and not output
    progress = None if quiet else (lambda n: progress_factory("comply", n))
    _result, run, prev = command.run_once(root, limit, progress)
    outcome = None
    if fix:
        targets = command.fix_targets(run)
        skipped = command.never_onboarded(run)
        if not quiet:
            # The managed laptops first; the never-onboarded hosts (maybe hundreds) named briefly.
            if targets:
                click.echo("fixing: " + "; ".join(f"{h}: {', '.join(r)}" for h, r in targets.items()))
            if skipped:
                click.echo(f"not fixed (never onboarded; `deskguard onboard` them first): {report.some(skipped)}")
        plays, before = [], run
        if targets:
            plays = command.fix(root, targets, None if quiet else (lambda n: progress_factory("comply --fix", n)))
            prev = run
            # The repaired hosts are seen live: their check-ins predate the repair.
            _result, run, _ = command.run_once(root, limit, progress, force_live=targets)
        outcome = command.fix_outcome(before, run, targets, plays, skipped)
    with Store.open(root) as store:
        history = runs.history(store)
        if since:
            prev = runs.load(store, since)
    _report(run, runs.drift(prev, run), history, fmt, output, outcome, show_all)
    problem = command.checkpoint_audit(root)
    if problem:
        click.echo(f"deskguard: {problem}", err=True)
    code = report.exit_code(run)
    sys.exit(code or (1 if outcome and outcome["still_failing"] else 0))
