"""Two labs on one machine (issue 21 item 6): two run folders (DESKGUARD_LAB_RUN), each with its own site, are
brought up at the same time with one laptop container and two fleet hosts each. Both answer over SSH and Ansible
at the same time, from address ranges, bridges, namespaces and veths of their own; then `lab down` of one leaves
the other fully working, and the other way round. The session's own lab (the tier's shared one) is never touched.

Every name and address the test checks is read from the lab's API (deskguard.lab.network, the lab state)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from deskguard.lab.access import run_ssh
from labsuite import lab_suite

pytestmark = pytest.mark.container

REPO = Path(__file__).resolve().parents[2]
# On the tier's release (Debian 13 in CI; Debian 12 by hand: docs/lab-vm.md).
COUNTS = ("--containers", "1", "--fleet", "2", "--suite", lab_suite())
HOSTS = {"lab-ct1", "lab-f001", "lab-f002"}


def lab_cli(lab: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`deskguard lab ARGS` in lab `lab` (its run folder, its site), as an admin would run it."""
    env = {**os.environ, "DESKGUARD_LAB_RUN": str(lab["run"]), "DESKGUARD_SITE": str(lab["site"])}
    return subprocess.run([sys.executable, "-m", "deskguard", "lab", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@contextlib.contextmanager
def inside(run: Path):
    """The lab API as seen from lab `run` (its DESKGUARD_LAB_RUN)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DESKGUARD_LAB_RUN", str(run))
        yield


def facts(run: Path) -> dict:
    """What lab `run` owns machine-wide, from its own API and state."""
    from deskguard.lab import network
    from deskguard.lab.state import LabState

    with inside(run):
        state = LabState.load()
        hosts = dict(state.hosts)
        return {"bridge": network.bridge(), "network": network.lab_network(), "hosts": hosts,
                "veths": {h.extra["veth"] for h in hosts.values() if h.extra.get("veth")},
                "netns": {h.extra["netns"] for h in hosts.values() if h.extra.get("netns")},
                "addresses": {h.address for h in hosts.values()}}


def link_master(name: str) -> str | None:
    try:
        return Path(f"/sys/class/net/{name}/master").resolve().name
    except OSError:
        return None


def netns_names() -> set[str]:
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


def ansible_ping(lab: dict) -> subprocess.Popen:
    from deskguard.lab.manager import inventory_dir

    with inside(lab["run"]):
        inventory = inventory_dir(lab["site"]) / "hosts.yml"
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.Popen([str(Path(sys.executable).parent / "ansible"), "-i", str(inventory), "lab", "-m",
                             "ping", "-o"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)


def pinged(proc: subprocess.Popen) -> set[str]:
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out[-3000:]
    return set(re.findall(r"^(lab-\S+) \| SUCCESS", out, re.M))


def assert_working(*labs: dict) -> None:
    """Each lab is whole (processes, bridge, veths on it, namespaces) and every host answers SSH, and Ansible
    reaches every host of every lab in runs made at the same time."""
    from deskguard.lab.state import is_alive

    procs = [ansible_ping(lab) for lab in labs]
    for lab in labs:
        f = facts(lab["run"])
        assert set(f["hosts"]) == HOSTS, f["hosts"]
        assert all(is_alive(h) for h in f["hosts"].values()), f["hosts"]
        assert Path("/sys/class/net", f["bridge"]).exists(), f["bridge"]
        assert {v: link_master(v) for v in f["veths"]} == {v: f["bridge"] for v in f["veths"]}
        assert f["netns"] <= netns_names()
        with ThreadPoolExecutor(max_workers=3) as pool:
            names = list(pool.map(lambda h: run_ssh(h, "hostname", timeout=60).stdout.strip(), f["hosts"].values()))
        assert sorted(names) == sorted(f["hosts"]), names
    for lab, proc in zip(labs, procs):
        assert pinged(proc) == HOSTS, lab["run"]


def assert_gone(before: dict, lab: dict) -> None:
    """Nothing of a lab that went down is left: its bridge, route, veths, namespaces, processes, index."""
    assert not Path("/sys/class/net", before["bridge"]).exists()
    assert [v for v in before["veths"] if Path("/sys/class/net", v).exists()] == []
    assert before["netns"] & netns_names() == set()
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout
    assert before["network"] not in routes
    assert not (lab["run"] / "lab-index").exists()  # its index is free again
    with inside(lab["run"]):
        from deskguard.lab.state import LabState

        assert LabState.load().hosts == {}


@pytest.fixture(scope="module")
def session_lab():
    """The tier's own lab as it is before the test (it may run hosts the other container tests use)."""
    from deskguard.lab import manager

    return {h.name: (h.pid, h.pid_start) for h, alive in manager.status() if alive}


@pytest.fixture(scope="module")
def labs(make_site, tmp_path_factory):
    root = tmp_path_factory.mktemp("twolabs")
    labs = []
    for name in ("a", "b"):
        run = root / name
        with inside(run):
            from deskguard.lab import network

            management = network.lab_network()
        labs.append({"run": run, "site": make_site(management=management)})
    yield labs
    for lab in labs:
        lab_cli(lab, "down")


def test_two_labs_run_side_by_side_and_each_goes_down_alone(labs, session_lab):
    from deskguard.lab.state import same_process

    a, b = labs
    # Both come up at the same time (two `lab up` in parallel: each lab has its own lock).
    with ThreadPoolExecutor(max_workers=2) as pool:
        ups = list(pool.map(lambda lab: lab_cli(lab, "up", *COUNTS), labs))
    for proc in ups:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    fa, fb = facts(a["run"]), facts(b["run"])
    assert fa["bridge"] != fb["bridge"] and fa["network"] != fb["network"]
    assert not (fa["veths"] & fb["veths"]) and not (fa["netns"] & fb["netns"])
    assert not (fa["addresses"] & fb["addresses"])
    assert_working(a, b)

    # `lab down` of A leaves B whole and working, and nothing of A behind.
    down = lab_cli(a, "down")
    assert down.returncode == 0 and "3 host(s) stopped" in down.stdout, down.stdout + down.stderr
    assert_gone(fa, a)
    assert_working(b)

    # And the other way round: A again beside B, then B goes.
    up = lab_cli(a, "up", *COUNTS)
    assert up.returncode == 0, up.stderr[-2000:]
    assert_working(a, b)
    fb = facts(b["run"])
    down = lab_cli(b, "down")
    assert down.returncode == 0 and "3 host(s) stopped" in down.stdout, down.stdout + down.stderr
    assert_gone(fb, b)
    assert_working(a)

    down = lab_cli(a, "down")
    assert down.returncode == 0, down.stderr
    # The tier's own lab kept every process it had.
    assert all(same_process(pid, start) for pid, start in session_lab.values()), session_lab
