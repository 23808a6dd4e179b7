"""`lab up / down / status`: brings the three tiers up and down and keeps the lab inventory in step."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from ..fsutil import atomic_write
from . import container, fleet, identity, network, orders_server, vm
from .image import DEFAULT_SUITE, SUITE_NAMES, ensure_rootfs, lab_key
from .sites import LAB_SSH_ARGS
from .state import LabHost, LabState, is_alive, locked, off_release

# Bounds that keep a 2-core, 24 GiB machine usable; see docs/lab.md for the measurements behind them.
MAX_LAPTOPS = 2  # CPU-bound under TCG: more than two busy VMs starve each other
MAX_CONTAINERS = 50
MAX_FLEET = 1000

# Where the controller's SSH comes from, as a laptop VM sees it (qemu's user network, the same in every VM).
QEMU_USER_NETWORK = "10.0.2.0/24"


def management_networks() -> tuple[str, str]:
    """Where the controller's SSH comes from, as this lab's hosts see it: its bridge's range, qemu's network."""
    return (network.lab_network(), QEMU_USER_NETWORK)

GROUPS = {"vm": "lab_laptops", "container": "lab_containers", "fleet": "lab_fleet"}


def inventory_dir(site: Path) -> Path:
    """Where this lab's inventory goes in a site: inventory/lab for the default lab, inventory/lab-<8 hex digits
    of its run folder's path> for another, so two labs that share a site (two CI runs from one worktree) never
    overwrite each other's. Known without claiming an index (a refused command makes nothing)."""
    tag = identity.run_tag()
    return Path(site) / "inventory" / (f"lab-{tag}" if tag else "lab")


def check_counts(laptops: int, containers: int, fleet_hosts: int) -> None:
    for name, value, bound in (("--laptops", laptops, MAX_LAPTOPS), ("--containers", containers, MAX_CONTAINERS),
                               ("--fleet", fleet_hosts, MAX_FLEET)):
        if value < 0 or value > bound:
            raise UsageError(f"{name} must be between 0 and {bound} on this machine (got {value})")


def up(laptops: int = 0, containers: int = 0, fleet_hosts: int = 0, inventory_dir: Path | None = None,
       log=print, suite: str = DEFAULT_SUITE) -> LabState:
    """Make the lab have at least the requested hosts of each kind running; returns the state. New laptop VMs
    and containers run Debian `suite`; hosts already running are left as they are."""
    check_counts(laptops, containers, fleet_hosts)
    with locked():
        state = LabState.load()
        forget_dead(state)
        if laptops or containers:
            mixed = other_release(state, suite)
            if mixed:
                log(mixed)
        if containers or fleet_hosts:
            network.ensure_bridge(state)
        rootfs = ensure_rootfs(suite) if (laptops or containers) else None
        if laptops:
            vm.start_vms(state, laptops, rootfs, log=log)
        if containers:
            container.start_containers(state, containers, rootfs, log=log)
        if fleet_hosts:
            fleet.start_fleet(state, fleet_hosts, log=log)
        state.save()
        if inventory_dir is not None:
            write_inventory(state, inventory_dir)
        return state


def ensure_bridge() -> None:
    """The lab bridge without any host on it (the demo's orders server listens on its address)."""
    with locked():
        state = LabState.load()
        network.ensure_bridge(state)
        state.save()


STOPPERS = {"vm": vm.stop_vm, "container": container.stop_container, "fleet": fleet.stop_fleet_host}


def down(inventory_dir: Path | None = None, log=print, names: list[str] | None = None) -> int:
    """Stop the hosts the lab started (all, or only `names`), by PID, and remove their namespaces, mounts and
    overlays; with no names, the bridge and the demo's orders server too. Idempotent."""
    with locked():
        state = LabState.load()
        stopped = 0
        for host in sorted(state.hosts.values(), key=lambda h: h.name):
            if names is not None and host.name not in names:
                continue
            STOPPERS[host.kind](host)
            del state.hosts[host.name]
            stopped += 1
            state.save()  # after each host, so an interrupted `down` resumes where it stopped
        if names is None:
            if orders_server.stop():   # the demo's `deskguard serve`, which listens on the bridge
                log("the demo's orders server (deskguard serve) stopped")
            # Every recorded host is stopped, so anything of the lab still around now is a leftover of an
            # interrupted run that the state file never recorded: remove those too, so `down` always leaves
            # nothing behind.
            keep = set(state.hosts)
            container.sweep_strays(keep)
            fleet.sweep_strays(keep)
            network.remove_bridge(state)
            identity.release()  # nothing of the lab carries its index any more
        state.save()
        if inventory_dir is not None:
            if names is None:
                (inventory_dir / "hosts.yml").unlink(missing_ok=True)
            else:
                write_inventory(state, inventory_dir)
        return stopped


def other_release(state: LabState, suite: str) -> str | None:
    """What to tell someone asking for laptops on `suite` while laptops of another release run (they are kept,
    so counts already met start nothing new); None if every running laptop is on `suite`."""
    kept = off_release(state.hosts.values(), suite)
    if not kept:
        return None
    running = "; ".join(f"{', '.join(names)} {'run' if len(names) > 1 else 'runs'} "
                        f"{SUITE_NAMES.get(release, release or 'an unrecorded release')}"
                        for release, names in kept.items())
    return (f"{running}, not the {SUITE_NAMES[suite]} asked for: running laptops are kept "
            f"(`deskguard lab down` first to have every laptop on {SUITE_NAMES[suite]})")


def forget_dead(state: LabState) -> None:
    """A host whose process died (qemu crashed, container killed) is cleaned up and started again by `up`."""
    for host in list(state.hosts.values()):
        if not is_alive(host):
            STOPPERS[host.kind](host)
            del state.hosts[host.name]


def status() -> list[tuple[LabHost, bool]]:
    state = LabState.load()
    return [(h, is_alive(h)) for h in sorted(state.hosts.values(), key=lambda h: (h.kind, h.name))]


def inventory_text(state: LabState) -> str:
    """The lab's hosts (YAML); their shared connection settings are in group_vars/lab.yml."""
    lines = ["# Written by `deskguard lab up`; do not edit (rewritten on every lab change).", "all:",
             "  children:", "    lab:", "      children:"]
    for kind, group in GROUPS.items():
        hosts = state.of_kind(kind)
        lines.append(f"        {group}:")
        if not hosts:
            lines.append("          hosts: {}")
            continue
        lines.append("          hosts:")
        for h in hosts:
            lines.append(f"            {h.name}:")
            lines.append(f"              ansible_host: {h.address}")
            lines.append(f"              ansible_port: {h.port}")
            lines.append(f"              ansible_user: {h.user}")
            for k, v in sorted(h.extra.get("hostvars", {}).items()):
                lines.append(f"              {k}: {v}")
    return "\n".join(lines) + "\n"


def lab_group_vars_text() -> str:
    """Lab only: host keys are not pinned, because every lab host is rebuilt often."""
    return "\n".join([
        "# Written by `deskguard lab up`; do not edit.",
        f"ansible_ssh_private_key_file: {lab_key()}",
        f"ansible_ssh_common_args: {LAB_SSH_ARGS}",
        "# The controller's SSH reaches lab hosts from the lab bridge (containers, fleet) and qemu's user network (VMs).",
        f"firewall_management_sources: {list(management_networks())}",
    ]) + "\n"


def write_inventory(state: LabState, inventory_dir: Path) -> Path:
    """The lab inventory shares the site's policy and host vars (Ansible reads them beside each inventory)."""
    path = inventory_dir / "hosts.yml"
    atomic_write(path, inventory_text(state))
    # group_vars/lab.yml outranks group_vars/all (the policy), which inventory-file group vars would not.
    atomic_write(inventory_dir / "group_vars" / "lab.yml", lab_group_vars_text())
    for link, target in ((inventory_dir / "group_vars" / "all", Path("..", "..", "group_vars", "all")),
                         (inventory_dir / "host_vars", Path("..", "host_vars"))):
        if not link.is_symlink():
            link.symlink_to(target)
    return path
