"""The demo: the kit's real jobs, end to end, on the built-in lab, as an admin would run them.

lab up → a throw-away demo site (the real `init`, a generated officer passphrase, the lab's management
networks and the check-in agent in the policy) → its orders server (`deskguard serve`, in the background, as a
site runs it all the time) → every lab laptop onboarded through the same library call as `deskguard onboard`
→ the agents' first check-ins → the nightly compliance run over the laptops and the never-onboarded fleet
hosts → JSON and HTML reports in the demo folder → what to try next. Fleet hosts are only ever read: they
share this machine's /usr and /etc.

The caller gives a `show` object that prints (see commands/demo.py): this module decides, it never prints.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EXIT_HOST_FAILED, EXIT_OK, EXIT_UNREACHABLE, LabError, UsageError
from .image import DEFAULT_SUITE, SUITE_NAMES
from .state import LAPTOP_KINDS, off_release

OPERATOR = "tanaka"          # every lab laptop has this operator account (docs/lab.md)
MARK = ".deskguard-demo"     # a folder holding this file was made by the demo and may be replaced by the next one
PASSPHRASE_FILE = "officer-passphrase.txt"
SERVER_LOG = "orders-server.log"
FIRST_CHECKIN_TIMEOUT = 240.0        # seconds: one agent run on the TCG laptop VM takes 20-60 s


def default_folder() -> Path:
    """Beside the lab's own run folder, so isolated labs (DESKGUARD_LAB_RUN) keep isolated demos."""
    from .paths import runtime_dir

    return runtime_dir() / "demo"


@dataclass
class DemoRequest:
    laptops: int = 1
    containers: int = 1
    fleet: int = 20
    folder: Path | None = None
    inventory_dir: Path | None = None   # where the lab writes its own inventory (as `lab up` does)
    suite: str = DEFAULT_SUITE          # the Debian release of the laptops the demo starts


@dataclass
class LaptopOutcome:
    name: str
    kind: str
    exit_code: int
    rows: list[dict]                 # onboarding.summary_rows: control, state, next
    error: str | None = None         # onboarding refused before the play (preflight), one line


@dataclass
class DemoOutcome:
    folder: Path
    site: Path
    passphrase_file: Path
    server: dict | None = None       # the orders server's record (lab/orders_server.py)
    laptops: list[LaptopOutcome] = field(default_factory=list)
    fleet: list[str] = field(default_factory=list)
    run: object | None = None        # compliance.runs.Run
    report_html: Path | None = None
    report_json: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)   # phase -> wall seconds
    exit_code: int = EXIT_OK
    problem: str | None = None       # one line when exit_code != 0
    next_steps: list[tuple[str, str]] = field(default_factory=list)   # (what, command)
    suite: str = DEFAULT_SUITE


# ------------------------------------------------------------------------------------------ checks first

def check_request(req: DemoRequest) -> None:
    """Everything refusable before anything is started or written (one line each)."""
    from . import manager

    manager.check_counts(req.laptops, req.containers, req.fleet)
    if req.laptops + req.containers == 0:
        raise UsageError("the demo onboards lab laptops: give --laptops 1 and/or --containers 1 or more")
    if os.geteuid() != 0:
        raise LabError("the demo runs the lab, which needs root (namespaces, mounts, qemu networking); run it as root")
    folder = Path(req.folder)
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not (folder / MARK).exists())):
        raise UsageError(f"{folder} exists and is not a demo folder; give another --dir (the demo replaces only "
                         f"its own folder)")


def running_hosts() -> list:
    """The lab hosts running now (dead ones are restarted by `lab up`, so they do not count)."""
    from .state import LabState, is_alive

    return [host for host in LabState.load().hosts.values() if is_alive(host)]


def check_lab(req: DemoRequest) -> bool:
    """True if the lab already runs exactly the requested hosts; False if it runs none. A lab up with other
    counts, or with laptops of another Debian release, is refused: the demo would onboard (and so change)
    laptops someone else is using, or say it ran on a release it did not run on."""
    hosts = running_hosts()
    have = {"vm": 0, "container": 0, "fleet": 0}
    for host in hosts:
        have[host.kind] += 1
    want = {"vm": req.laptops, "container": req.containers, "fleet": req.fleet}
    if not hosts:
        return False

    def say(c):
        return f"{c['vm']} laptop VM(s), {c['container']} container(s), {c['fleet']} fleet host(s)"
    if have != want:
        raise UsageError(f"the lab already runs {say(have)}, the demo asked for {say(want)}: run `deskguard lab down` "
                         f"first, or ask for exactly those counts")
    # Laptops started before the lab recorded their release have none: unknown is not taken for the one asked.
    other = sorted(release or "an unrecorded release" for release in off_release(hosts, req.suite))
    if other:
        instead = f", or ask for --suite {other[0]}" if len(other) == 1 and other[0] in SUITE_NAMES else ""
        raise UsageError(f"the lab's laptops run {' and '.join(SUITE_NAMES.get(o, o) for o in other)}, the demo "
                         f"asked for {SUITE_NAMES[req.suite]}: run `deskguard lab down` first{instead}")
    return True


# ------------------------------------------------------------------------------------------------ steps

def _fresh_folder(folder: Path) -> Path:
    """The previous demo's folder (marked as such) is replaced: its laptops are reset below, its site is stale."""
    if (folder / MARK).exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)   # the site's keys and the lab passphrase live here
    (folder / MARK).write_text("Made by `deskguard demo`; the next demo replaces this folder.\n")
    return folder


def _lab_up(req: DemoRequest, already_up: bool, show):
    """The lab with the requested hosts. When it already ran them, the laptops are restarted first (VMs from
    their clean booted snapshot, containers on a fresh overlay): an earlier demo onboarded them into a site that
    no longer exists, and its keyslots and config would count against the new one."""
    from . import manager
    from .state import LabState

    if already_up:
        names = [h.name for h in _laptops(LabState.load())]
        show.step(f"lab: restarting {', '.join(names)} from clean images (a demo starts from new laptops)")
        manager.down(req.inventory_dir, log=show.lab, names=names)
    show.step(f"lab: {req.laptops} laptop VM(s), {req.containers} laptop container(s) on "
              f"{SUITE_NAMES[req.suite]}, {req.fleet} fleet host(s)")
    state = manager.up(req.laptops, req.containers, req.fleet, req.inventory_dir, log=show.lab, suite=req.suite)
    if not (req.containers or req.fleet):
        manager.ensure_bridge()   # the orders server listens on the bridge, which only those need otherwise
    return state


def _laptops(state) -> list:
    return [h for kind in LAPTOP_KINDS for h in state.of_kind(kind)]


def _make_site(folder: Path, show) -> tuple[Path, Path]:
    """The demo's own site, made by the real init; the officer passphrase is generated and kept 0600 beside it."""
    from ..fsutil import atomic_write
    from . import orders_server
    from .manager import management_networks
    from .sites import enable_agent, set_management_networks
    from ..site.init import init_site

    site = folder / "site"
    secret = folder / PASSPHRASE_FILE
    passphrase = secrets.token_urlsafe(24)
    atomic_write(secret, passphrase + "\n", mode=0o600)
    init_site(site, passphrase.encode())
    networks = management_networks()
    set_management_networks(site, networks)
    enable_agent(site, orders_server.url())
    show.step(f"site: {site} (store, escrow and order keys, example policy; management networks "
              f"{', '.join(networks)}; check-in agent on, calling {orders_server.url()})")
    show.secret(secret)
    return site, secret


def _start_server(site: Path, folder: Path, show) -> dict:
    """The site's `deskguard serve`, left running after the demo (the agents check in every 15 minutes, and a
    wipe of a laptop that is off waits there for its next check-in); `deskguard lab down` stops it."""
    import shlex

    from . import orders_server

    rec = orders_server.start(site, folder / SERVER_LOG)
    show.step(f"orders server: `{shlex.join(orders_server.command(site))}` runs in the background (log "
              f"{rec['log']}): the agents fetch their orders from it and check in to it; `deskguard lab down` "
              f"stops it")
    return rec


def _onboard(site: Path, host, show) -> LaptopOutcome:
    """`deskguard onboard NAME --os debian --address … --port … --user tanaka --ssh-key <lab key>`, as a library call."""
    from ..errors import DeskguardError
    from .image import lab_key
    from ..onboarding.onboard import OnboardRequest, onboard, summary_rows

    req = OnboardRequest(host.name, "debian", host.address, OPERATOR, ssh_user=host.user, port=host.port,
                         ssh_key=lab_key())
    show.step(f"onboard {host.name} ({host.kind}), as `deskguard onboard {host.name} --os debian --address "
              f"{host.address} --port {host.port} --user {OPERATOR} --ssh-key {req.ssh_key}` does")
    try:
        result, device = onboard(site, req, progress=show.progress(f"onboard {host.name} ({host.kind})", 1))
    except DeskguardError as exc:
        return LaptopOutcome(host.name, host.kind, exc.exit_code, [], error=str(exc))
    if result.interrupted:   # Ctrl-C stops the demo, it does not go on to the next laptop
        raise KeyboardInterrupt
    outcome = LaptopOutcome(device["hostname"], host.kind, result.exit_code,
                            summary_rows(result, device["hostname"], False))
    show.onboarded(outcome, result)
    return outcome


def _first_checkins(site: Path, laptops: list[LaptopOutcome], show) -> None:
    """Wait for each onboarded laptop's first check-in (its agent runs as soon as its timer is enabled), so the
    nightly run judges AGT-001 on an agent that has reported, as it would the next night. A laptop that does
    not check in in time is left to the nightly run, which says so (AGT-001 fails)."""
    from ..store import Store

    names = [lap.name for lap in laptops if lap.exit_code == EXIT_OK and not lap.error]
    if not names:
        return
    show.step(f"waiting for the first check-in of {', '.join(names)} (their agents run once installed)")
    with Store.open(site) as store:
        uuids = {store.require_device(n).uuid: n for n in names}
    start = time.monotonic()
    waiting = dict(uuids)
    while waiting and time.monotonic() - start < FIRST_CHECKIN_TIMEOUT:
        with Store.open(site) as store:
            seen = store.latest_checkins(list(waiting))
        for uuid in seen:
            show.lab(f"{waiting.pop(uuid)}: first check-in after {time.monotonic() - start:.0f} s")
        if waiting:
            time.sleep(2)
    for name in waiting.values():
        show.lab(f"{name}: no check-in within {FIRST_CHECKIN_TIMEOUT:.0f} s (the nightly run shows AGT-001; "
                 f"`deskguard lab ssh {name} journalctl -u deskguard-agent` says why)")


def _add_fleet(site: Path, fleet_hosts) -> list[str]:
    """The rest of the fleet: in the inventory (so the nightly run checks it), never registered or onboarded."""
    from ..site.inventory import add_host
    from .sites import unmanaged_hostvars

    for host in fleet_hosts:
        add_host(site, host.name, unmanaged_hostvars(host))
    return [h.name for h in fleet_hosts]


def _comply(site: Path, folder: Path, hosts: int, show):
    from ..compliance import command, html, report, runs
    from ..fsutil import atomic_write
    from ..store import Store

    show.step(f"the nightly compliance run over {hosts} host(s), as `deskguard comply --site {site}` does")
    _result, run, prev = command.run_once(site, None, lambda n: show.progress("comply (the nightly run)", n))
    with Store.open(site) as store:
        history = runs.history(store)
    drift = runs.drift(prev, run)
    atomic_write(folder / "report.json", report.to_json(run, drift, history) + "\n")
    atomic_write(folder / "report.html", html.render(run, drift, history))
    return run, folder / "report.html", folder / "report.json"


# --------------------------------------------------------------------------------------------- verdict

def verdict(out: DemoOutcome) -> tuple[int, str | None]:
    """0 when every laptop was onboarded and is compliant; the fleet failing is expected (never onboarded)."""
    for lap in out.laptops:
        if lap.error or lap.exit_code != EXIT_OK:
            why = lap.error or f"onboarding failed (exit {lap.exit_code}); see the summary above"
            return (lap.exit_code or EXIT_HOST_FAILED), f"{lap.name}: {why}"
    hosts = out.run.hosts if out.run is not None else {}
    for lap in out.laptops:
        h = hosts.get(lap.name)
        if h is None:
            return EXIT_HOST_FAILED, f"{lap.name}: the nightly run has no result for it"
        if h["state"] in ("unreachable", "stale"):
            return EXIT_UNREACHABLE, f"{lap.name}: {h['state']} in the nightly run ({h.get('message') or 'no answer'})"
        if not h["compliant"]:
            bad = sorted(c for c, r in h["results"].items() if r["status"] in ("fail", "error"))
            return EXIT_HOST_FAILED, (f"{lap.name} is not compliant after onboarding ({', '.join(bad) or h['state']}); "
                                      f"see {out.report_html}")
    return EXIT_OK, None


def fleet_summary(out: DemoOutcome) -> dict[str, int]:
    """The never-onboarded fleet hosts by how the nightly run found them."""
    counts = {"compliant": 0, "not compliant": 0, "unreachable": 0, "failed": 0}
    for name in out.fleet:
        h = (out.run.hosts if out.run is not None else {}).get(name)
        state = "failed" if h is None else ("compliant" if h["compliant"] else "not compliant") \
            if h["state"] == "ok" else ("unreachable" if h["state"] in ("unreachable", "stale") else "failed")
        counts[state] += 1
    return counts


def next_steps(out: DemoOutcome) -> list[tuple[str, str]]:
    site = f"--site {out.site}"
    names = [lap.name for lap in out.laptops]
    laptop = names[0]
    vm = next((lap.name for lap in out.laptops if lap.kind == "vm"), None)
    # comply's exit code is the whole run's: 1 while any host fails, and the fleet hosts were never onboarded.
    exit_1 = " (exit 1: the never-onboarded fleet hosts are not compliant)" if out.fleet else ""
    steps = [
        ("break a control by hand, then see the nightly run catch it and repair it (fleet hosts are never "
         f"touched: they were not onboarded{'; so exit 1, as they are not compliant' if out.fleet else ''})",
         f"deskguard lab ssh {laptop} sudo ufw --force disable && deskguard comply {site} --fix"),
        ("the network check a helpdesk runs for an operator", f"deskguard netcheck {laptop} {site}"),
        (f"the report again, as a table or for a mail{exit_1}",
         f"deskguard comply {site} --format html --output report.html"),
    ]
    if vm:
        steps += [
            (f"wipe the VM for good (type {vm} when asked): a signed order, delivered now over SSH; its agent "
             f"acknowledges it before it crypto-erases the LUKS root, then the VM powers off (docs/wipe.md)",
             f"deskguard wipe {vm} --reason 'demo: lost on the train' {site}"),
            (f"the order as the agent acknowledged it, and the audit trail (order, acknowledgement, {vm}'s escrowed "
             f"key destroyed)",
             f"deskguard orders list {site} && deskguard audit log --target {vm} {site}"),
            ("stop the lab and the demo's orders server when done", "deskguard lab down"),
        ]
    else:
        steps += [
            ("stop the lab and the demo's orders server when done", "deskguard lab down"),
            ("then, to try a wipe: the default demo has a laptop VM with its root on LUKS2",
             "deskguard demo" + ("" if out.suite == DEFAULT_SUITE else f" --suite {out.suite}")),
        ]
    return steps


# ------------------------------------------------------------------------------------------------- run

def run(req: DemoRequest, show) -> DemoOutcome:
    req.folder = Path(req.folder or default_folder()).resolve()
    check_request(req)
    already_up = check_lab(req)
    # The demo's store is the SQLite file in its own site, never a shared database the environment points at.
    if os.environ.pop("DESKGUARD_DB_URL", None):
        show.step("DESKGUARD_DB_URL is ignored: the demo keeps its own SQLite store")
    start = time.monotonic()
    from . import orders_server

    orders_server.stop()   # the previous demo's: its site is about to be replaced
    folder = _fresh_folder(req.folder)
    state = _lab_up(req, already_up, show)
    marks = {"lab up": time.monotonic()}
    site, secret = _make_site(folder, show)
    out = DemoOutcome(folder, site, secret, suite=req.suite)
    out.server = _start_server(site, folder, show)
    for host in _laptops(state):
        out.laptops.append(_onboard(site, host, show))
    marks["onboarding"] = time.monotonic()
    _first_checkins(site, out.laptops, show)
    marks["first check-ins"] = time.monotonic()
    out.fleet = _add_fleet(site, state.of_kind("fleet"))
    out.run, out.report_html, out.report_json = _comply(site, folder, len(out.laptops) + len(out.fleet), show)
    marks["nightly run"] = time.monotonic()
    previous = start
    for phase, at in marks.items():
        out.seconds[phase] = round(at - previous, 1)
        previous = at
    out.seconds["total"] = round(previous - start, 1)
    out.exit_code, out.problem = verdict(out)
    out.next_steps = next_steps(out)
    return out
