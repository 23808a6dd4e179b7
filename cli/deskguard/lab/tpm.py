"""A TPM 2.0 for each lab laptop VM: one swtpm emulator per VM, its state in the VM's own folder.

The lab laptop measures its boot like a real one (SeaBIOS extends PCRs 0-7 into this TPM), so the
disk_encryption role's `tpm2` unlock can be proven in the lab. Layout, beside the VM's disk overlay:

    <vm dir>/tpm/          swtpm's permanent state (the TPM's seeds: this VM's identity)
    <vm dir>/swtpm.sock    the control socket qemu's `-tpmdev emulator` talks to
    <vm dir>/swtpm.pid     swtpm's PID (it also exits by itself when qemu closes the socket: --terminate)
    <vm dir>/swtpm.log     swtpm's log: errors only, or every command and response (`start(log_commands=True)`)

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

# swtpm's log level that writes every command and its response in hex (" SWTPM_IO_Read: length N", then
# " SWTPM_IO_Write: length N", 16 bytes a line; swtpm 0.7). Level 1, the default, logs errors only.
COMMAND_LOG_LEVEL = 20
CC_LOAD, CC_UNSEAL = 0x157, 0x15E  # TPM2_Load, TPM2_Unseal: what clevis's TPM2 pin sends to get the disk's key

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


def log_path(rundir: Path) -> Path:
    return rundir / "swtpm.log"


def start(rundir: Path, fresh: bool = False, log_commands: bool = False) -> int:
    """Start this VM's swtpm (daemonized) on its state in `rundir`; returns its PID. `fresh` discards the
    TPM state first: a new TPM, as if the disk had been moved into another machine. `log_commands` logs every
    command and response of this run (read back with `commands()`), the log started afresh: for a test that
    must see what the TPM refused; off by default, since the log would grow on every boot."""
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
            "--ctrl", f"type=unixio,path={sock}", "--log", f"file={log_path(rundir)},"
            + (f"level={COMMAND_LOG_LEVEL},truncate" if log_commands else "level=1"),
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


def commands(log: Path) -> list[tuple[int, int]]:
    """(command code, response code) of each command in a swtpm log written with `log_commands`, in order.
    A command's code is bytes 6-9 of its header, a response's code bytes 6-9 of its own; other lines (the
    control channel's "Ctrl Cmd", libtpms's) end a message. An incomplete last line (swtpm still writing) is
    left for the next read, and a command without its response yet is not listed."""
    try:
        lines = log.read_text(errors="replace").split("\n")[:-1]
    except FileNotFoundError:
        return []
    pairs: list[tuple[int, int]] = []
    pending: int | None = None  # the command code waiting for its response
    kind, data = "", bytearray()

    def end() -> None:
        nonlocal pending, kind
        if len(data) >= 10:
            code = int.from_bytes(data[6:10], "big")
            if kind == "cmd":
                pending = code
            elif kind == "rsp" and pending is not None:
                pairs.append((pending, code))
                pending = None
        kind = ""
        data.clear()

    for line in lines:
        if line.startswith(" SWTPM_IO_Read:") or line.startswith(" SWTPM_IO_Write:"):
            end()
            kind = "cmd" if "Read" in line else "rsp"
        elif kind and line.startswith(" "):
            try:
                data.extend(bytes.fromhex(line))
            except ValueError:
                end()
        else:
            end()
    end()
    return pairs


def is_error(rc: int) -> bool:
    """A response code that refuses the command. Warnings are not: format-zero codes with the warning bit
    (0x900-0x97F), such as TPM_RC_RETRY (0x922), ask the caller to send it again, and the TSS does (a bound
    lab boot's Load was answered 0x922, then 0)."""
    return rc != 0 and rc & 0x980 != 0x900


def refusals(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The TPM's errors to clevis's TPM2 pin among `commands()`: a Load (another TPM: the sealed object is not
    its own) or an Unseal (changed PCRs: the policy fails, 0x99D). Nothing else in a lab boot sends either
    (a bound boot's log shows only clevis's, answered 0 in the end: tests/vm/test_tpm_vm.py)."""
    return [(cc, rc) for cc, rc in pairs if cc in (CC_LOAD, CC_UNSEAL) and is_error(rc)]
