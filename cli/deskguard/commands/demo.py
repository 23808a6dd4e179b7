"""`deskguard demo`: the README's "run the main job" command, on the built-in lab."""

from __future__ import annotations

import sys

import click


def identities(events) -> dict[str, tuple[str, str]]:
    """host -> (kernel release, root device), from the lab check's LAB-002 task."""
    found = {}
    for ev in events:
        data = ev.get("event_data") or {}
        if ev.get("event") == "runner_on_ok" and data.get("task", "").startswith("LAB-002"):
            lines = (data.get("res") or {}).get("stdout_lines") or []
            if len(lines) >= 2:
                found[data["host"]] = (lines[0], lines[1])
    return found


@click.command()
@click.option("--laptops", type=int, default=1, show_default=True, help="Laptop VMs (qemu, root on LUKS2).")
@click.option("--containers", type=int, default=1, show_default=True, help="Laptop containers (nspawn).")
@click.option("--fleet", "fleet_hosts", type=int, default=20, show_default=True, help="Light fleet hosts.")
def demo(laptops, containers, fleet_hosts):
    """Bring the lab up and run a real play against every lab host, with live progress."""
    from ..lab import manager
    from ..progress import print_summary, progress_factory
    from ..runner import run_playbook
    from ..site import site_dir
    from .lab import _inventory_dir, _log, _require_root

    _require_root()
    site = site_dir()
    state = manager.up(laptops, containers, fleet_hosts, _inventory_dir(), log=_log)
    result = run_playbook(site, "lab_check.yml", [_inventory_dir() / "hosts.yml"], keep_events=True,
                          progress=progress_factory("lab check", len(state.hosts)))
    print_summary(result)
    for host, (kernel, root) in sorted(identities(result.events).items()):
        if host in state.hosts and state.hosts[host].kind != "fleet":
            click.echo(f"{host}: kernel {kernel}, root filesystem on {root}")
    missing = set(state.hosts) - set(result.hosts)
    if missing:
        click.echo(f"deskguard: no result for {', '.join(sorted(missing))}", err=True)
    sys.exit(result.exit_code or (1 if missing else 0))
