"""Laptop containers (systemd-nspawn): systemd as PID 1, sshd, sudo, their own network namespace where
the firewall works without touching this machine's ruleset."""

from __future__ import annotations

import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from labsuite import lab_suite

pytestmark = pytest.mark.container


def ssh(host, command: str, timeout: float = 90) -> subprocess.CompletedProcess:
    from deskguard.lab.access import run_ssh

    return run_ssh(host, command, timeout=timeout)


@pytest.fixture(scope="module")
def containers(lab_container):
    hosts = lab_container.of_kind("container")
    assert len(hosts) >= 2, [h.name for h in hosts]
    return hosts[:2]


def host_ruleset() -> str:
    return subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout


def test_systemd_is_pid_1_and_the_system_is_up(containers):
    with ThreadPoolExecutor(len(containers)) as pool:
        results = list(pool.map(lambda h: ssh(h, "cat /proc/1/comm; timeout 60 systemctl is-system-running --wait"),
                                containers))
    for host, r in zip(containers, results):
        lines = r.stdout.split()
        assert lines[0] == "systemd", (host.name, r.stdout, r.stderr)
        assert lines[1] in ("running", "degraded"), (host.name, r.stdout)


def test_sshd_runs_as_a_service(containers):
    for host in containers:
        assert ssh(host, "systemctl is-active ssh.service").stdout.strip() == "active"


def test_dgadmin_has_passwordless_sudo(containers):
    for host in containers:
        r = ssh(host, "id -un; sudo -n id -u")
        assert r.stdout.split() == ["dgadmin", "0"], r.stderr


def test_own_hostname_address_and_machine_id(containers):
    seen_ids = set()
    for host in containers:
        r = ssh(host, "hostname; ip -o -4 addr show dev host0; cat /etc/machine-id")
        lines = r.stdout.splitlines()
        assert lines[0] == host.name
        assert f"inet {host.address}/16" in lines[1]
        assert len(lines[2]) == 32
        seen_ids.add(lines[2])
    assert len(seen_ids) == len(containers), "containers share a machine id"


def test_etc_is_per_container_and_the_shared_tree_is_untouched(containers):
    from deskguard.lab.image import ensure_rootfs

    a, b = containers
    name = f"deskguard-lab-test-{uuid.uuid4().hex[:12]}"
    assert ssh(a, f"sudo touch /etc/{name}").returncode == 0
    try:
        assert ssh(b, f"test -e /etc/{name}; echo $?").stdout.strip() == "1"
        assert not (ensure_rootfs(lab_suite()).tree / "etc" / name).exists()
    finally:
        ssh(a, f"sudo rm -f /etc/{name}")


def test_ufw_works_inside_and_leaves_the_host_ruleset_alone(containers):
    host = containers[-1]
    before = host_ruleset()
    try:
        r = ssh(host, "sudo ufw allow 22/tcp >/dev/null && sudo ufw --force enable && sudo ufw status verbose")
        assert r.returncode == 0, r.stderr
        assert "Status: active" in r.stdout
        assert "22/tcp" in r.stdout
        inside = ssh(host, "sudo nft list ruleset").stdout
        assert "ufw-user-input" in inside, "ufw's chains are not in the container's own ruleset"
        # Raw nft works too (own network namespace with network admin capability).
        t = ssh(host, "sudo nft add table inet dgtest && sudo nft list tables && sudo nft delete table inet dgtest")
        assert t.returncode == 0 and "inet dgtest" in t.stdout, t.stderr
        # A fresh connection still gets in through the allowed port.
        assert ssh(host, "true").returncode == 0
        assert host_ruleset() == before, "the container's firewall changed this machine's ruleset"
    finally:
        ssh(host, "sudo ufw --force reset >/dev/null")
    assert host_ruleset() == before


def test_kernel_wide_sysctls_are_refused_but_net_ones_work(containers):
    """Documented limit: kernel.* sysctls are host-wide; net.* ones belong to the container's namespace."""
    host = containers[0]
    host_value = Path("/proc/sys/kernel/kptr_restrict").read_text()
    wanted = "2" if host_value.strip() != "2" else "1"
    assert ssh(host, "sudo sysctl -w net.ipv4.conf.host0.rp_filter=1").returncode == 0
    assert ssh(host, f"sudo sysctl -w kernel.kptr_restrict={wanted}").returncode != 0
    assert Path("/proc/sys/kernel/kptr_restrict").read_text() == host_value
