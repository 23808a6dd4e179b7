"""`deskguard demo`: the README's "run the main job" command. The steps are in deskguard/lab/demo.py; this prints."""

from __future__ import annotations

import sys

import click

from .lab import DEFAULT_SUITE, SUITES

LAB_SECRET = ("LAB SECRET: the demo site's officer passphrase is in {path} (0600). It opens the escrowed "
              "recovery keys of this throw-away demo only; never use it, or this site, for real laptops.")


class Printer:
    """What the demo shows while it runs: steps on stdout, the lab's own messages and live progress on stderr."""

    def step(self, text: str) -> None:
        click.secho(f"\n== {text}", bold=True)

    def lab(self, text: str) -> None:
        click.echo(f"lab: {text}", err=True)

    def secret(self, path) -> None:
        from ..term import color

        click.secho(LAB_SECRET.format(path=path), fg="yellow", bold=True, color=color())

    def progress(self, title: str, hosts: int):
        from ..progress import progress_factory

        return progress_factory(title, hosts)

    def onboarded(self, laptop, result) -> None:
        from rich.console import Console
        from rich.table import Table

        from ..progress import print_summary

        print_summary(result)
        table = Table(title=f"{laptop.name} ({laptop.kind}): controls")
        for col in ("control", "state", "next"):
            table.add_column(col)
        for r in laptop.rows:
            table.add_row(r["control"], r["state"], r["next"])
        Console().print(table)


def _print_outcome(out) -> None:
    from ..lab.demo import fleet_summary

    click.secho("\n== the nightly run", bold=True)
    hosts = out.run.hosts
    for lap in out.laptops:
        h = hosts.get(lap.name)
        if lap.error:
            click.echo(f"  {lap.name} ({lap.kind}): not onboarded: {lap.error}")
        elif h is not None:
            na = sorted(c for c, r in h["results"].items() if r["status"] == "not_applicable")
            state = "compliant" if h["compliant"] else f"NOT compliant ({h['state']})"
            score = "-" if h["score"] is None else f"{h['score']:.0f}%"
            unchecked = sorted(c for c, r in h["results"].items() if r["status"] == "not_checked")
            click.echo(f"  {lap.name} ({lap.kind}, onboarded): {state}, score {score}; not applicable here: "
                       f"{', '.join(na) or 'none'}" + (f"; not checked here: {', '.join(unchecked)}" if unchecked else ""))
    if out.fleet:
        counts = fleet_summary(out)
        click.echo(f"  the rest of the fleet ({len(out.fleet)} hosts, never onboarded): "
                   + ", ".join(f"{n} {state}" for state, n in counts.items() if n)
                   + " - expected: nothing was ever applied to them, and the demo only reads them")
    click.echo(f"\nreports: {out.report_html}\n         {out.report_json}")
    click.echo("time: " + ", ".join(f"{phase} {secs:.0f} s" for phase, secs in out.seconds.items()))
    click.secho("\n== what to try next", bold=True)
    for what, cmd in out.next_steps:
        click.echo(f"  # {what}\n  {_as_invoked(cmd)}")


def _as_invoked(command: str) -> str:
    """`deskguard …` spelt the way the user started the demo (e.g. .venv/bin/deskguard), so it can be pasted."""
    import re
    from pathlib import Path

    prog = sys.argv[0] if Path(sys.argv[0]).name == "deskguard" else "deskguard"
    return re.sub(r"(^|&& )deskguard ", lambda m: f"{m.group(1)}{prog} ", command)


@click.command()
@click.option("--laptops", type=int, default=1, show_default=True, help="Laptop VMs (qemu, root on LUKS2).")
@click.option("--containers", type=int, default=1, show_default=True, help="Laptop containers (nspawn).")
@click.option("--fleet", "fleet_hosts", type=int, default=20, show_default=True,
              help="Light fleet hosts: checked by the nightly run, never onboarded.")
@click.option("--suite", type=click.Choice(SUITES), default=DEFAULT_SUITE, show_default=True,
              help="Debian release of the lab laptops the demo starts (trixie: Debian 13, bookworm: Debian 12).")
@click.option("--dir", "folder", type=click.Path(file_okay=False), default=None,
              help="Demo folder: its site, the lab passphrase, the reports (default: demo/ in the lab's run folder). "
                   "Replaced by the next demo.")
def demo(laptops, containers, fleet_hosts, suite, folder):
    """Run the kit's real jobs on the built-in lab: onboard every lab laptop into a throw-away demo site, run the
    nightly compliance check over them and the never-onboarded fleet, write the reports.

    Exit codes: 0 the onboarded laptops are compliant (the fleet failing is expected); 1 a laptop failed
    onboarding or is not compliant; 2 bad input (counts, folder, a lab up with other counts or another
    release); 3 a laptop did not answer; 4 the machine cannot run the lab (not root, missing tools)."""
    from ..lab.demo import DemoRequest, run
    from .lab import _inventory_dir

    out = run(DemoRequest(laptops, containers, fleet_hosts, folder, _inventory_dir(), suite), Printer())
    _print_outcome(out)
    if out.problem:
        from ..errors import DeskguardError

        raise DeskguardError(out.problem, exit_code=out.exit_code)
    click.secho("\ndemo: every onboarded laptop is compliant", fg="green")
    sys.exit(0)
