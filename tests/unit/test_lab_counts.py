"""`lab up` bounds: bad counts are one line on stderr, exit 2, and nothing of the lab is started.
Also the lab's address plan and host names (pure functions)."""

from __future__ import annotations

import os
from pathlib import Path

import clirun
import pytest

pytestmark = pytest.mark.unit


def lab_snapshot(own: Path) -> dict:
    """Machine-wide traces a started lab would leave: the bridge, lab namespaces, and processes that use
    the test's own runtime or cache folder (every lab process names one of them on its command line)."""
    netns = sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []
    procs = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(own) in cmd:
            procs.append(pid)
    bridges = sorted(n for n in os.listdir("/sys/class/net") if n.startswith("dglab"))
    return {"bridges": bridges, "netns": [n for n in netns if n.startswith("lab")],
            "procs": sorted(procs)}


@pytest.mark.parametrize("args, word", [
    (("--laptops", "-1"), "--laptops"),
    (("--fleet", "100000"), "--fleet"),
    (("--containers", "-5"), "--containers"),
    (("--containers", "51"), "--containers"),
    (("--fleet", "1001", "--containers", "1"), "--fleet"),
])
def test_out_of_bounds_counts_are_refused_before_anything_starts(args, word, tmp_path):
    env = {**os.environ, "DESKGUARD_LAB_RUN": str(tmp_path / "run"), "DESKGUARD_LAB_CACHE": str(tmp_path / "cache")}
    before = lab_snapshot(tmp_path)
    proc = clirun.deskguard("lab", "up", *args, timeout=60, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("deskguard: "), proc.stderr
    assert word in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""
    # Nothing started: no state, no cache (no image build, no key), no new bridge, namespace or process.
    assert not (tmp_path / "run" / "state.json").exists()
    assert not (tmp_path / "cache").exists()
    assert lab_snapshot(tmp_path) == before


def test_manager_check_counts_bounds():
    from deskguard.errors import UsageError
    from deskguard.lab import manager

    manager.check_counts(0, 0, 0)
    manager.check_counts(manager.MAX_LAPTOPS, manager.MAX_CONTAINERS, manager.MAX_FLEET)
    for bad in ((-1, 0, 0), (0, -1, 0), (0, 0, -1), (0, 0, manager.MAX_FLEET + 1),
                (0, manager.MAX_CONTAINERS + 1, 0), (manager.MAX_LAPTOPS + 1, 0, 0)):
        with pytest.raises(UsageError):
            manager.check_counts(*bad)


def test_address_plan(monkeypatch):
    from deskguard.lab import network

    monkeypatch.delenv("DESKGUARD_LAB_RUN", raising=False)  # the default lab
    assert network.container_address(1) == "10.213.1.1"
    assert network.fleet_address(0) == "10.213.2.1"
    assert network.fleet_address(249) == "10.213.2.250"
    assert network.fleet_address(250) == "10.213.3.1"
    assert network.fleet_address(999) == "10.213.5.250"
    from deskguard.lab import manager

    # Every address the bounds allow is distinct, inside 10.213.0.0/16 and never the host's own.
    addrs = [network.fleet_address(i) for i in range(manager.MAX_FLEET)]
    addrs += [network.container_address(n) for n in range(1, manager.MAX_CONTAINERS + 1)]
    assert len(set(addrs)) == len(addrs)
    assert network.host_address() == "10.213.0.1" and network.lab_network() == "10.213.0.0/16"
    assert network.host_address() not in addrs
    for a in addrs:
        octets = [int(x) for x in a.split(".")]
        assert octets[:2] == [10, 213] and 1 <= octets[3] <= 254


def test_host_and_interface_names(monkeypatch):
    from deskguard.lab import container, fleet, manager

    monkeypatch.delenv("DESKGUARD_LAB_RUN", raising=False)  # the default lab
    assert fleet.host_name(1) == "lab-f001"
    assert fleet.host_name(999) == "lab-f999"
    assert fleet.host_name(1000) == "lab-f1000"
    assert fleet.host_number("lab-f1000") == 1000
    for n in (1, 999, manager.MAX_FLEET):
        assert len(fleet.veth_name(fleet.host_name(n))) <= 15  # IFNAMSIZ - 1
    # systemd-nspawn names the host side vb-<machine> only while that fits in 15 characters.
    assert len(container.veth_name(container.container_name(manager.MAX_CONTAINERS))) <= 15
