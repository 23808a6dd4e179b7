"""Laptop VM tier: the cheap bad-input and fault paths, without starting a VM."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from deskguard.errors import LabError
from deskguard.lab import usb, vm
from deskguard.lab.state import LabHost, LabState, is_alive, proc_start_time

pytestmark = pytest.mark.unit


@pytest.fixture
def lab_run(tmp_path, monkeypatch):
    """A private lab runtime folder, so these tests never see (or touch) a real lab."""
    run = tmp_path / "run"
    monkeypatch.setenv("DESKGUARD_LAB_RUN", str(run))
    monkeypatch.delenv("DESKGUARD_LAB_PORT_BASE", raising=False)
    run.mkdir()
    return run


def _save(*hosts: LabHost) -> None:
    state = LabState()
    for h in hosts:
        state.hosts[h.name] = h
    state.save()


def _vm_host(run: Path, name: str = "lab-vm1", pid=None, pid_start=None) -> LabHost:
    d = run / "vm" / name
    return LabHost(name=name, kind="vm", address="127.0.0.1", port=2221, user="dgadmin", pid=pid,
                   pid_start=pid_start, extra={"dir": str(d), "qmp": str(d / "qmp.sock")})


def test_usb_plug_unknown_host(lab_run):
    _save()
    with pytest.raises(LabError, match="no lab host named 'lab-vm9'"):
        usb.plug("lab-vm9", serial="X1")


def test_usb_plug_into_a_container_is_refused(lab_run):
    _save(LabHost(name="lab-ct1", kind="container", address="10.0.0.2"))
    with pytest.raises(LabError, match="lab-ct1 is a lab container, not a laptop VM"):
        usb.plug("lab-ct1", kind="keyboard")


def test_usb_plug_and_unplug_with_missing_qmp_socket(lab_run):
    _save(_vm_host(lab_run))
    with pytest.raises(LabError) as err:
        usb.plug("lab-vm1", serial="DG1")
    msg = str(err.value)
    assert "lab-vm1's QMP socket" in msg and "is missing" in msg and "deskguard lab up --laptops 1" in msg
    assert "\n" not in msg
    with pytest.raises(LabError, match="QMP socket .* is missing"):
        usb.unplug("lab-vm1", "usb1")


def test_usb_plug_into_a_crashed_vm(lab_run):
    host = _vm_host(lab_run, pid=2 ** 22 + 7, pid_start=1)  # recorded, but its qemu is gone
    sock = Path(host.extra["qmp"])
    sock.parent.mkdir(parents=True)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    s.close()
    _save(host)
    with pytest.raises(LabError, match=r"lab-vm1 is not running \(its qemu exited; QMP socket .* is stale\); "
                                       r"run `deskguard lab up --laptops 1`"):
        usb.plug("lab-vm1", kind="mouse")


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "printer"}, "unknown USB device kind 'printer'"),
    ({"serial": "bad serial!"}, "USB serial"),
    ({"device_id": "1-starts-with-digit"}, "device id"),
])
def test_usb_plug_bad_arguments(lab_run, kwargs, match):
    _save(_vm_host(lab_run))
    with pytest.raises(LabError, match=match):
        usb.plug("lab-vm1", **kwargs)


def test_stale_qmp_socket_is_one_clear_line(lab_run):
    from deskguard.lab.qmp import monitor

    sock = lab_run / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    s.close()  # the file stays, nobody listens: what a crashed qemu leaves behind
    with pytest.raises(LabError, match="lab-vm1's QMP socket .* does not answer"):
        with monitor(sock, "lab-vm1", timeout=5):
            pass


def test_busy_port_is_reported_before_anything_starts(lab_run, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        monkeypatch.setenv("DESKGUARD_LAB_PORT_BASE", str(busy - 1))
        state = LabState()
        with pytest.raises(LabError) as err:
            vm.start_vms(state, 1, rootfs=None)
    assert str(err.value) == (f"port 127.0.0.1:{busy} is in use by another program; free it or set "
                              f"DESKGUARD_LAB_PORT_BASE")
    assert state.hosts == {}


def test_bad_port_base(lab_run, monkeypatch):
    monkeypatch.setenv("DESKGUARD_LAB_PORT_BASE", "twenty")
    with pytest.raises(LabError, match="DESKGUARD_LAB_PORT_BASE must be a port number"):
        vm.start_vms(LabState(), 1, rootfs=None)


def test_stop_vm_is_idempotent_and_removes_the_overlay_folder(lab_run):
    host = _vm_host(lab_run, pid=2 ** 22 + 7, pid_start=1)  # no such process
    d = Path(host.extra["dir"])
    d.mkdir(parents=True)
    (d / "disk.qcow2").write_bytes(b"overlay")
    vm.stop_vm(host)
    assert not d.exists()
    vm.stop_vm(host)  # again: nothing left, no error
    vm.stop_vm(_vm_host(lab_run, name="lab-vm2"))  # never started: no PID, no folder


def test_stop_vm_never_kills_a_recycled_pid(lab_run):
    other = subprocess.Popen(["sleep", "60"])
    try:
        start = proc_start_time(other.pid)
        host = _vm_host(lab_run, pid=other.pid, pid_start=start + 1)  # same PID, another start time
        vm.stop_vm(host)
        assert other.poll() is None, "stop_vm killed a process the lab did not start"
        assert not is_alive(host)
    finally:
        other.kill()
        other.wait()


def test_stop_vm_leaves_folders_outside_the_lab_alone(lab_run, tmp_path):
    outside = tmp_path / "precious"
    outside.mkdir()
    host = _vm_host(lab_run)
    host.extra["dir"] = str(outside)
    vm.stop_vm(host)
    assert outside.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_a_killed_builds_mounts_are_removed_before_its_partial_folder(tmp_path):
    from deskguard.lab.image import unmount_under

    partial = tmp_path / "laptop-x.partial"
    merged = partial / "merged"
    merged.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(merged)], check=True)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(merged)], check=True)  # stacked, like proc over dev
        unmount_under(partial)
        assert not os.path.ismount(merged)
    finally:
        while os.path.ismount(merged):
            subprocess.run(["umount", "-l", str(merged)], check=False)


def test_ssh_forward_is_removed_and_put_back_through_the_monitor(lab_run, monkeypatch):
    """The home router of tests/vm/test_vpn_vm.py: qemu's monitor answers a removal with a sentence (seen in the
    lab: "host forwarding rule for tcp:127.0.0.1:35221 removed"), an addition with nothing; anything else, or a
    rule that is not there, is one LabError naming the VM."""
    import contextlib

    from deskguard.lab import qmp

    sent, answers = [], []

    class FakeMonitor:
        def cmd(self, command, **args):
            sent.append((command, args))
            return answers.pop(0)

    monkeypatch.setattr(qmp, "monitor", lambda sock, name: contextlib.nullcontext(FakeMonitor()))
    host = _vm_host(lab_run)
    answers[:] = ["host forwarding rule for tcp:127.0.0.1:2221 removed\r\n", ""]
    vm.set_ssh_forward(host, present=False)
    vm.set_ssh_forward(host, present=True)
    assert [a["command-line"] for _c, a in sent] == ["hostfwd_remove net0 tcp:127.0.0.1:2221",
                                                     "hostfwd_add net0 tcp:127.0.0.1:2221-:22"]
    assert {c for c, _a in sent} == {"human-monitor-command"}
    for answer, present in (("host forwarding rule for tcp:127.0.0.1:2221 not found\r\n", False),
                            ("Could not set up host forwarding rule 'tcp:127.0.0.1:2221-:22'\r\n", True)):
        answers[:] = [answer]
        with pytest.raises(LabError, match=r"^lab-vm1: `hostfwd_(remove|add) net0 .*` failed: "):
            vm.set_ssh_forward(host, present=present)
