"""A TPM 2.0 for each lab laptop VM: one swtpm emulator per VM, its state in the VM's own folder.

The lab laptop measures its boot like a real one (SeaBIOS extends PCRs 0-7 into this TPM), so the
disk_encryption role's `tpm2` unlock can be proven in the lab. Layout, beside the VM's disk overlay:

    <vm dir>/tpm/          swtpm's permanent state (the TPM's seeds: this VM's identity)
    <vm dir>/swtpm.sock    the control socket qemu's `-tpmdev emulator` talks to
    <vm dir>/swtpm.pid     swtpm's PID (it also exits by itself when qemu closes the socket: --terminate)

A booted snapshot carries the TPM too: qemu's tpm-emulator migrates swtpm's permanent and volatile state
with the RAM, so a laptop restored from a snapshot has the snapshot's TPM (same seeds, same PCRs). A laptop
that must be *another machine* cold-boots with an empty `tpm/` folder (a fresh TPM). See docs/lab-vm.md.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from ..errors import LabError

SWTPM = "swtpm"
START_TIMEOUT = 10.0  # seconds for swtpm to create its control socket (well under 1 s measured)

# The TPM device every lab laptop has (part of the fixed virtual hardware, so of the snapshot key too).
DEVICE_ARGS = ("-device", "tpm-tis,tpmdev=tpm0")


def state_dir(rundir: Path) -> Path:
    return rundir / "tpm"


def socket_path(rundir: Path) -> Path:
    return rundir / "swtpm.sock"


def pid_file(rundir: Path) -> Path:
    return rundir / "swtpm.pid"


def qemu_args(rundir: Path) -> list[str]:
    """The backend half of qemu's TPM (the device half is DEVICE_ARGS)."""
    return ["-chardev", f"socket,id=chrtpm,path={socket_path(rundir)}",
            "-tpmdev", "emulator,id=tpm0,chardev=chrtpm"]


def check_tools() -> None:
    import shutil

    if not shutil.which(SWTPM):
        raise LabError("swtpm is not installed (every lab laptop VM has an emulated TPM); run `bash .ci/setup`")


def start(rundir: Path, fresh: bool = False) -> int:
    """Start this VM's swtpm (daemonized) on its state in `rundir`; returns its PID. `fresh` discards the
    TPM state first: a new TPM, as if the disk had been moved into another machine."""
    check_tools()
    stop(rundir)
    tpm = state_dir(rundir)
    if fresh and tpm.exists():
        import shutil

        shutil.rmtree(tpm)
    tpm.mkdir(mode=0o700, exist_ok=True)
    sock = socket_path(rundir)
    sock.unlink(missing_ok=True)
    pid_file(rundir).unlink(missing_ok=True)
    argv = [SWTPM, "socket", "--tpm2", "--tpmstate", f"dir={tpm}",
            "--ctrl", f"type=unixio,path={sock}", "--log", f"file={rundir / 'swtpm.log'},level=1",
            "--pid", f"file={pid_file(rundir)}", "--terminate", "--daemon"]
    proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise LabError(f"swtpm did not start for {rundir.name}: {last}")
    deadline = time.monotonic() + START_TIMEOUT
    while not (sock.exists() and pid_file(rundir).exists()):
        if time.monotonic() > deadline:
            raise LabError(f"swtpm for {rundir.name} made no control socket within {START_TIMEOUT:.0f} s; "
                           f"see {rundir / 'swtpm.log'}")
        time.sleep(0.05)
    pid = running_pid(rundir)
    if pid is None:
        raise LabError(f"swtpm for {rundir.name} exited right after starting; see {rundir / 'swtpm.log'}")
    return pid


def running_pid(rundir: Path) -> int | None:
    """The PID of *this VM's* swtpm if it runs: the PID file's process must be swtpm on this state folder
    (a recycled PID is never taken for it)."""
    try:
        pid = int(pid_file(rundir).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if not cmdline or os.path.basename(cmdline[0]) != SWTPM.encode():
        return None
    if f"dir={state_dir(rundir)}".encode() not in cmdline:
        return None
    return pid


def stop(rundir: Path, timeout: float = 10.0) -> None:
    """Stop this VM's swtpm if it still runs (normally it has exited with its qemu). Idempotent."""
    pid = running_pid(rundir)
    if pid is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if running_pid(rundir) != pid:
                return
            time.sleep(0.05)
