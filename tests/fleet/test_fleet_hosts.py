"""Fleet hosts (network namespaces with their own sshd): reachable, manageable by Ansible, independent."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.fleet

sys.path.insert(0, str(Path(__file__).parent))
from labssh import ssh, ssh_all  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fleet(lab_fleet):
    hosts = lab_fleet.of_kind("fleet")
    assert len(hosts) >= 20, [h.name for h in hosts]
    return hosts[:20]


def test_every_fleet_host_answers_ssh_with_its_own_hostname(fleet):
    results = ssh_all(fleet, "hostname; cat /etc/hostname")
    failed = [(h.name, r.returncode, r.stderr.strip()) for h, r in zip(fleet, results) if r.returncode != 0]
    assert not failed
    for host, r in zip(fleet, results):
        assert r.stdout.split() == [host.name, host.name]


def test_hostnames_differ(fleet):
    names = [r.stdout.strip() for r in ssh_all(fleet, "hostname")]
    assert len(set(names)) == len(fleet) == 20


def test_ansible_ping_reaches_all_twenty(fleet, lab_inventory_dir):
    ansible = Path(sys.executable).parent / "ansible"
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run([str(ansible), "-i", str(lab_inventory_dir / "hosts.yml"), "lab_fleet", "-m", "ping"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pinged = set(re.findall(r"^(lab-f\d+) \| SUCCESS", proc.stdout, re.M))
    assert pinged >= {h.name for h in fleet}
    assert '"ping": "pong"' in proc.stdout


def test_each_host_has_its_own_etc(fleet):
    a, b = fleet[0], fleet[1]
    marker = f"/etc/deskguard-lab-test-{uuid.uuid4().hex[:12]}"
    token = uuid.uuid4().hex
    try:
        assert ssh(a, f"echo {token} > {marker}").returncode == 0
        assert ssh(a, f"cat {marker}").stdout.strip() == token
        other = ssh(b, f"test -e {marker}; echo $?")
        assert other.stdout.strip() == "1", "a file written in one host's /etc shows up in another's"
        assert not Path(marker).exists(), "a fleet host wrote into this machine's /etc"
    finally:
        ssh(a, f"rm -f {marker}")


def test_root_home_is_plain_and_private(fleet):
    """/root is an overlay over a plain home: no pyenv start-up (lab-notes gotcha 1), no host files."""
    r = ssh(fleet[0], "grep -c pyenv ~/.bashrc; ls -A /root; stat -c %a /root/.ssh")
    lines = r.stdout.split()
    assert lines[0] == "0"
    assert ".pyenv" not in lines and ".cache" not in lines
    assert lines[-1] == "700"


def test_fleet_network_is_isolated(fleet):
    """Only lab veths hang off the lab bridge, and the hosts have no route beyond the lab's /16."""
    from deskguard.lab import container, fleet as fleet_tier, network
    from deskguard.lab.state import LabState

    ports = subprocess.run(["ip", "-o", "link", "show", "master", network.bridge()], capture_output=True,
                           text=True).stdout
    names = re.findall(r"^\d+: ([^:@]+)", ports, re.M)
    hosts = LabState.load().hosts
    ours = {fleet_tier.veth_name(n) for n in hosts if n.startswith("lab-f")}
    ours |= {container.veth_name(n) for n in hosts if n.startswith("lab-ct")}
    assert names and set(names) <= ours, names
    routes = ssh(fleet[0], "ip -4 route").stdout.strip().splitlines()
    assert routes == [f"{network.lab_network()} dev eth0 proto kernel scope link src {fleet[0].address}"], routes
