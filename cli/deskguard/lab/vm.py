"""Laptop VMs: qemu-system-x86_64 under TCG (never KVM on these machines), root on LUKS2 (real dm-crypt).

Each VM runs on its own copy-on-write overlay in `runtime_dir()/vm/<name>/`. The first VM ever started from
an image cold-boots once to make the image's *booted snapshot* (disk + RAM state, cached beside the image);
every VM after that starts from it: a fresh overlay on top of the snapshot disk, and qemu `-incoming` reading
the saved RAM state, so a laptop answers SSH in seconds instead of about a minute. See docs/lab-vm.md.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from ..errors import LabError
from . import tpm
from .paths import runtime_dir
from .state import is_alive, same_process, wait_gone

KIND = "vm"
MEMORY_MB = 768
SMP = 2
COLD_BOOT_TIMEOUT = 480.0  # seconds to SSH after a cold boot (~50 s measured; the host may be busy)
RESTORE_TIMEOUT = 120.0  # seconds to SSH after a snapshot restore (~3 s measured)
SNAPSHOT_VERSION = 2  # bump when the snapshot procedure changes: old snapshots are then ignored (2: panic=5)


# ----------------------------------------------------------------------------------------------- helpers

def port_base() -> int:
    """VM i listens on port_base() + i; tests take their own ports from offsets of it. Each lab has its own
    block: 2220 for the default lab, 2220 + 1000 k for lab k (identity.py)."""
    raw = os.environ.get("DESKGUARD_LAB_PORT_BASE")
    if raw is None or raw == "":
        from .identity import lab_index, port_base as lab_port_base

        return lab_port_base(lab_index())
    try:
        value = int(raw)
    except ValueError:
        raise LabError(f"DESKGUARD_LAB_PORT_BASE must be a port number (got {raw!r})") from None
    if not 1024 <= value <= 65000:
        raise LabError(f"DESKGUARD_LAB_PORT_BASE must be between 1024 and 65000 (got {value})")
    return value


def vm_dir(name: str) -> Path:
    return runtime_dir() / "vm" / name


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class PortBusy(LabError):
    """The VM's SSH port is taken by a program the lab did not start."""


def _port_busy_error(port: int) -> LabError:
    return PortBusy(f"port 127.0.0.1:{port} is in use by another program; free it or set DESKGUARD_LAB_PORT_BASE")


def _opt(path: Path | str) -> str:
    """A path inside a qemu option string (commas are doubled)."""
    return str(path).replace(",", ",,")


def _qemu_img_overlay(backing: Path, overlay: Path, relative: bool = False) -> None:
    backing_ref = os.path.relpath(backing, overlay.parent) if relative else str(backing)
    proc = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing_ref,
                           str(overlay)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise LabError(f"qemu-img create {overlay} failed: {_last_line(proc.stderr)}")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


class _Probe:
    """What access.wait_for_ssh needs to know about a host."""

    def __init__(self, name: str, port: int):
        self.name, self.address, self.port, self.user = name, "127.0.0.1", port, "dgadmin"


def ssh(host, command: str, timeout: float = 120.0, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run a shell command on a lab VM as its management user (a single round trip)."""
    from .access import run_ssh

    return run_ssh(host, command, timeout=timeout, stdin=stdin)


# ------------------------------------------------------------------------------------------ qemu command

def machine_args() -> list[str]:
    """The virtual hardware. Identical for cold boots and snapshot restores (a restore needs the same
    devices in the same order), so it is also part of the snapshot's cache key."""
    return ["-nodefaults", "-no-user-config", "-machine", "pc",
            "-accel", "tcg,thread=multi,tb-size=256", "-smp", str(SMP), "-m", str(MEMORY_MB), "-rtc", "base=utc",
            "-device", "virtio-blk-pci,drive=disk0,serial=dg-root",
            "-device", "virtio-net-pci,netdev=net0",
            "-device", "qemu-xhci,id=xhci", *tpm.DEVICE_ARGS,
            "-display", "none"]


def kernel_cmdline(name: str) -> str:
    # panic=5: under software emulation an early boot has panicked in an interrupt handler (seen once in CI, a
    # boot in some hundreds); the VM then hung until a 900 s timeout. Now it reboots itself and each boot's log
    # line says so (`panic_note`): the retry is the machine's, never hidden.
    return f"root=/dev/mapper/root ro console=ttyS0 panic=5 systemd.hostname={name}"


def panic_note(serial_log: Path) -> str:
    """"" or a note for the boot's log line when its serial console shows a kernel panic (and the reboot)."""
    text = serial_log.read_text(errors="replace") if serial_log.exists() else ""
    count = text.count("Kernel panic - not syncing")
    return f" (after {count} kernel panic(s) and reboot(s) on its console: {serial_log})" if count else ""


def qemu_argv(name: str, image, disk: Path, port: int, rundir: Path, incoming: str | None = None,
              daemon: bool = True, console_input: bool = False) -> list[str]:
    """With console_input, the serial console also takes input on `serial.sock` (console_type): a boot that
    stops at the initramfs passphrase prompt can be answered, as an operator would at the keyboard."""
    from .image import QEMU

    serial = ["-serial", f"file:{_opt(rundir / 'serial.log')}"]
    if console_input:
        chardev = (f"socket,id=ser0,path={_opt(rundir / 'serial.sock')},server=on,wait=off,"
                   f"logfile={_opt(rundir / 'serial.log')}")
        serial = ["-chardev", chardev, "-serial", "chardev:ser0"]

    argv = [QEMU, "-name", f"{name},process=deskguard-{name}", *machine_args(),
            "-kernel", str(image.kernel), "-initrd", str(boot_initrd(image, rundir)), "-append", kernel_cmdline(name),
            "-drive", f"file={_opt(disk)},format=qcow2,if=none,id=disk0,cache=unsafe,discard=unmap",
            "-netdev", f"user,id=net0,hostfwd={ssh_forward_rule(port)}",
            *tpm.qemu_args(rundir),
            "-qmp", f"unix:{_opt(rundir / 'qmp.sock')},server=on,wait=off", *serial]
    if incoming:
        argv += ["-incoming", incoming]
    if daemon:
        argv += ["-daemonize", "-pidfile", str(rundir / "qemu.pid")]
    return argv


def ssh_forward_rule(port: int) -> str:
    """qemu's user-network forward of the controller's loopback `port` to the laptop's SSH."""
    return f"tcp:127.0.0.1:{port}-:22"


def set_ssh_forward(host, present: bool) -> None:
    """Remove or put back, in the running qemu, the forward that is the controller's only way to the laptop's
    SSH outside a tunnel: without it the laptop is as a home router leaves it (it can still dial out). Through
    the monitor (`hostfwd_remove` / `hostfwd_add`), which answers with text: nothing when a rule was added,
    "host forwarding rule for … removed" when one was removed (qemu 8-10), anything else is a failure."""
    from .qmp import monitor

    rule = ssh_forward_rule(host.port)
    line = f"hostfwd_add net0 {rule}" if present else f"hostfwd_remove net0 {rule.split('-')[0]}"
    with monitor(Path(host.extra["qmp"]), host.name) as mon:
        answer = mon.cmd("human-monitor-command", **{"command-line": line}).strip()
    if answer and not (not present and answer.endswith(" removed")):
        raise LabError(f"{host.name}: `{line}` failed: {_last_line(answer)}")


def boot_initrd(image, rundir: Path) -> Path:
    """The initrd qemu boots: the laptop's own (rundir/initrd.img, taken by take_guest_initrd after the laptop
    rebuilt it, as a bootloader would load /boot/initrd.img) or, until then, the image's."""
    own = rundir / "initrd.img"
    return own if own.exists() else image.initrd


def take_guest_initrd(host) -> Path:
    """Copy the running laptop's /boot/initrd.img-<its kernel> to be what its next boot_again boots (the lab's
    bootloader). The image's kernel is the laptop's kernel, so only the initrd can differ. 0600: it may carry
    key material."""
    rundir = Path(host.extra["dir"])
    dest = rundir / "initrd.img"
    tmp = rundir / "initrd.img.tmp"
    from .access import host_argv

    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
        proc = subprocess.run(host_argv(host, ['sudo -n cat "/boot/initrd.img-$(uname -r)"']), stdout=fh,
                              stderr=subprocess.PIPE, timeout=600, check=False)
    if proc.returncode != 0 or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        raise LabError(f"{host.name}: could not copy its initrd: {_last_line(proc.stderr.decode(errors='replace'))}")
    os.replace(tmp, dest)
    return dest


def _launch_error(name: str, port: int, stderr: str) -> LabError:
    if "host forwarding" in stderr or "hostfwd" in stderr:
        return _port_busy_error(port)
    return LabError(f"{name}: qemu did not start: {_last_line(stderr)}")


def _daemonize(name: str, argv: list[str], rundir: Path, port: int) -> tuple[int, int]:
    """Start a daemonized qemu; returns (pid, start time)."""
    from .state import proc_start_time

    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise LabError(f"{name}: qemu did not daemonize within 120 s") from None
    if proc.returncode != 0:
        raise _launch_error(name, port, proc.stderr)
    try:
        pid = int((rundir / "qemu.pid").read_text().strip())
    except (OSError, ValueError):
        raise LabError(f"{name}: qemu started but wrote no PID file in {rundir}") from None
    start = proc_start_time(pid)
    if start is None:
        raise LabError(f"{name}: qemu exited right after starting; see {rundir / 'serial.log'}")
    return pid, start


# ------------------------------------------------------------------------------------- booted snapshot

def snapshot_key(image) -> str:
    from .image import qemu_version, recipe_hash

    return recipe_hash(image.path.name, machine_args(), qemu_version(), SNAPSHOT_VERSION)


def snapshot_dir(image) -> Path:
    return image.path / f"booted-{snapshot_key(image)}"


def snapshot_ready(image) -> bool:
    d = snapshot_dir(image)
    return all((d / f).exists() for f in ("disk.qcow2", "vmstate", "snapshot.json"))


def discard_snapshot(image) -> None:
    from .image import remove_tree

    remove_tree(snapshot_dir(image))


def build_snapshot(image, name: str, port: int, log=print) -> Path:
    """Cold-boot a laptop once, wait until systemd has settled, and save its disk and RAM state.

    The builder qemu is a child of this process (killed with it: an interrupted build leaves only a
    `.partial` folder, which the next build removes). Its disk lives in the partial folder, so no copy is
    needed: the snapshot disk is that overlay (backing file `../disk.qcow2`, relative) frozen after the save.
    """
    from .access import wait_for_ssh
    from ..fsutil import file_lock
    from .image import die_with_parent, partial_dir, unmount_under
    from .qmp import monitor

    final = snapshot_dir(image)
    with file_lock(image.path / "snapshot.lock"):
        if snapshot_ready(image):
            return final
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)
        unmount_under(final.with_name(final.name + ".partial"))
        rundir = _fresh_rundir(name)
        log(f"{name}: cold boot to make the booted snapshot (about a minute, once per image)")
        t0 = time.monotonic()
        with partial_dir(final) as work:
            work.chmod(0o700)  # the RAM state holds the LUKS volume key
            disk = work / "disk.qcow2"
            _qemu_img_overlay(image.disk, disk, relative=True)
            argv = qemu_argv(name, image, disk, port, rundir, daemon=False)
            tpm.start(rundir)  # its state goes into the snapshot's RAM state with the rest of the machine
            with open(rundir / "qemu.log", "wb") as out:
                proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        preexec_fn=die_with_parent)
            try:
                alive = lambda: proc.poll() is None  # noqa: E731
                probe = _Probe(name, port)
                try:
                    boot = wait_for_ssh(probe, COLD_BOOT_TIMEOUT, alive=alive)
                except LabError:
                    if proc.poll() is not None:
                        err = (rundir / "qemu.log").read_text(errors="replace")
                        if proc.returncode != 0 and err.strip():
                            raise _launch_error(name, port, err) from None
                    raise LabError(f"{name} did not boot to SSH within {COLD_BOOT_TIMEOUT:.0f} s; see its serial "
                                   f"console {rundir / 'serial.log'}; if the image is damaged, remove "
                                   f"{image.path}") from None
                # Let boot-time jobs finish so every restored laptop starts quiet, then flush the guest.
                ssh(probe, "systemctl is-system-running --wait >/dev/null 2>&1; sync", timeout=300)
                state_file = work / "vmstate"
                with monitor(rundir / "qmp.sock", name) as mon:
                    mon.cmd("stop")
                    mon.cmd("migrate-set-parameters", **{"max-bandwidth": 16 << 30})
                    mon.cmd("migrate", uri=f"exec:cat > {shlex.quote(str(state_file))}")
                    deadline = time.monotonic() + 300
                    while True:
                        info = mon.cmd("query-migrate")
                        status = info.get("status")
                        if status == "completed":
                            break
                        if status in ("failed", "cancelled") or time.monotonic() > deadline:
                            raise LabError(f"{name}: saving the booted snapshot failed "
                                           f"({info.get('error-desc', status)})")
                        time.sleep(0.1)
                    mon.quit()
                proc.wait(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            meta = {"name": name, "boot_to_ssh_seconds": round(boot, 1),
                    "build_seconds": round(time.monotonic() - t0, 1), "taken": time.time(),
                    "vmstate_bytes": state_file.stat().st_size, "key": snapshot_key(image)}
            (work / "snapshot.json").write_text(json.dumps(meta, indent=2))
        shutil.rmtree(rundir, ignore_errors=True)
        log(f"{name}: booted snapshot saved (cold boot to SSH {boot:.0f} s)")
        return final


# ------------------------------------------------------------------------------------------- lifecycle

def _record(state, name: str, image, port: int, pid: int, start: int, rundir: Path, how: str):
    from .state import LabHost

    host = LabHost(name=name, kind=KIND, address="127.0.0.1", port=port, user="dgadmin", pid=pid,
                   pid_start=start,
                   extra={"dir": str(rundir), "qmp": str(rundir / "qmp.sock"), "overlay": str(rundir / "disk.qcow2"),
                          "serial_log": str(rundir / "serial.log"), "boot": how, "image": str(image.path),
                          "hostvars": {"ansible_become": "true"}, "suite": image.facts().get("suite")})
    state.hosts[name] = host
    state.save()
    return host


def _fresh_rundir(name: str) -> Path:
    rundir = vm_dir(name)
    shutil.rmtree(rundir, ignore_errors=True)
    rundir.mkdir(parents=True)
    os.chmod(rundir, 0o700)
    return rundir


def _restore(state, name: str, image, port: int, log=print):
    """Start `name` from the image's booted snapshot; returns its LabHost once it answers SSH."""
    from .access import wait_for_ssh
    from .qmp import monitor

    snap = snapshot_dir(image)
    t0 = time.monotonic()
    rundir = _fresh_rundir(name)
    disk = rundir / "disk.qcow2"
    _qemu_img_overlay(snap / "disk.qcow2", disk)
    # `-incoming defer`: qemu daemonizes (PID file written, recorded in the state) before it reads the
    # state file, so a broken snapshot shows up as a recorded VM that exits, never as an unknown process.
    argv = qemu_argv(name, image, disk, port, rundir, incoming="defer")
    tpm.start(rundir)  # empty: the snapshot's TPM state arrives with its RAM state
    pid, start = _daemonize(name, argv, rundir, port)
    host = _record(state, name, image, port, pid, start, rundir, "snapshot")
    alive = lambda: same_process(pid, start)  # noqa: E731
    with monitor(rundir / "qmp.sock", name) as mon:
        mon.cmd("migrate-incoming", uri=f"exec:cat {shlex.quote(str(snap / 'vmstate'))}")
        # The snapshot was saved from a stopped VM, so the restored one arrives paused: continue it.
        st = mon.wait_status({"paused", "running", "postmigrate"}, RESTORE_TIMEOUT, alive=alive)
        if st != "running":
            mon.cmd("cont")
            mon.wait_status({"running"}, 30, alive=alive)
    wait_for_ssh(host, RESTORE_TIMEOUT, alive=alive)
    ssh_at = time.monotonic() - t0
    _after_boot(host)
    host.extra["ssh_seconds"] = round(ssh_at, 1)
    host.extra["boot_seconds"] = round(time.monotonic() - t0, 1)
    state.save()
    log(f"{name}: up from the booted snapshot in {time.monotonic() - t0:.1f} s (ssh -p {port} dgadmin@127.0.0.1)")
    return host


def _after_boot(host, timeout: float = 60.0) -> None:
    """Set the clock (it stopped when the snapshot was saved), the name and a fresh machine id.

    One SSH round trip; the host's time is sent only once the guest script runs (see vm-after-boot.sh).
    """
    import select

    from .access import host_argv
    from .image import files_dir

    script = (files_dir() / "vm-after-boot.sh").read_text()
    argv = host_argv(host, [f"sudo -n sh -c {shlex.quote(script)} vm-after-boot {shlex.quote(host.name)}"])
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        if line.strip() == "ready":
            proc.stdin.write(f"{time.time():.6f}\n")
            proc.stdin.flush()
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise LabError(f"{host.name}: setting the clock and name after boot took over {timeout:.0f} s") from None
    if proc.returncode != 0 or "done" not in out:
        raise LabError(f"{host.name}: setting the clock and name after boot failed: {_last_line(err)}")


def _cold_boot(state, name: str, image, port: int, log=print):
    """Boot `name` from the base image (the fallback when no snapshot can be made or restored)."""
    from .access import wait_for_ssh

    t0 = time.monotonic()
    rundir = _fresh_rundir(name)
    disk = rundir / "disk.qcow2"
    _qemu_img_overlay(image.disk, disk)
    tpm.start(rundir)
    pid, start = _daemonize(name, qemu_argv(name, image, disk, port, rundir), rundir, port)
    host = _record(state, name, image, port, pid, start, rundir, "cold")
    try:
        wait_for_ssh(host, COLD_BOOT_TIMEOUT, alive=lambda: same_process(pid, start))
    except LabError as exc:
        raise LabError(f"{exc}; see its serial console {rundir / 'serial.log'}") from None
    _after_boot(host)
    host.extra["boot_seconds"] = round(time.monotonic() - t0, 1)
    state.save()
    log(f"{name}: up after a cold boot in {time.monotonic() - t0:.0f} s (ssh -p {port} dgadmin@127.0.0.1)"
        f"{panic_note(rundir / 'serial.log')}")
    return host


def boot_again(name: str, wait_ssh: bool = True, log=print, fresh_tpm: bool = False,
               extra_args: tuple[str, ...] = (), console_input: bool = False, tpm_log: bool = False):
    """Cold-boot a stopped laptop VM from *its own* disk overlay (kept, unlike `lab up`'s fresh start): what a
    wipe or lock test needs, since a snapshot would revert the LUKS header. The serial log is started afresh.
    With wait_ssh=False it returns as soon as qemu runs (a wiped laptop never answers). Returns the LabHost.
    The VM keeps its own TPM unless `fresh_tpm` (the disk moved into another machine); `extra_args` adds
    qemu arguments for this boot only (a tampered boot: hardware the firmware measures differently);
    `console_input` lets console_type answer a prompt on the serial console; `tpm_log` logs this boot's TPM
    commands and responses (`tpm.commands`: what the TPM refused)."""
    from .access import wait_for_ssh
    from .image import LaptopImage
    from .state import LabState, locked

    with locked():
        state = LabState.load()
        host = state.hosts.get(name)
        if host is None or host.kind != KIND:
            raise LabError(f"no lab laptop VM named {name}; start it with `deskguard lab up --laptops 1`")
        if is_alive(host):
            raise LabError(f"{name} is still running; power it off first")
        rundir = Path(host.extra["dir"])
        disk = rundir / "disk.qcow2"
        if not disk.exists():
            raise LabError(f"{name} has no disk overlay left in {rundir}")
        image = LaptopImage(Path(host.extra["image"]))
        (rundir / "serial.log").unlink(missing_ok=True)
        (rundir / "qmp.sock").unlink(missing_ok=True)
        t0 = time.monotonic()
        tpm.start(rundir, fresh=fresh_tpm, log_commands=tpm_log)
        argv = qemu_argv(name, image, disk, host.port, rundir, console_input=console_input)
        if extra_args:
            argv[argv.index("-kernel"):argv.index("-kernel")] = list(extra_args)
        pid, start = _daemonize(name, argv, rundir, host.port)
        host = _record(state, name, image, host.port, pid, start, rundir, "cold (own disk)")
    if wait_ssh:
        wait_for_ssh(host, COLD_BOOT_TIMEOUT, alive=lambda: same_process(pid, start))
        log(f"{name}: up again from its own disk in {time.monotonic() - t0:.0f} s{panic_note(rundir / 'serial.log')}")
    return host


def console_type(host, text: str, linger: float = 8.0) -> None:
    """Type `text` on the serial console of a VM booted with console_input (the secret never enters an argv).
    The connection stays open `linger` seconds: qemu reads from it only as fast as the emulated UART takes
    bytes, and drops what it has not read when the client hangs up (seen in the lab: text sent on a connection
    closed at once never reached the guest). End a line with "\r", as the Enter key does."""
    sock_path = Path(host.extra["dir"]) / "serial.sock"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(sock_path))
            s.sendall(text.encode())
            time.sleep(linger)
    except OSError as exc:
        raise LabError(f"{host.name}: cannot type on its serial console ({sock_path}): {exc}") from None


def _start_one(state, name: str, image, port: int, log=print):
    for attempt in (1, 2):
        if not snapshot_ready(image):
            build_snapshot(image, name, port, log=log)
        try:
            return _restore(state, name, image, port, log=log)
        except PortBusy:
            raise
        except LabError as exc:
            _forget(state, name)
            if attempt == 2:
                log(f"{name}: the fresh booted snapshot does not restore ({exc}); cold-booting instead")
                discard_snapshot(image)
                break
            log(f"{name}: the booted snapshot does not restore ({exc}); rebuilding it")
            discard_snapshot(image)
    try:
        return _cold_boot(state, name, image, port, log=log)
    except BaseException:
        _forget(state, name)
        raise


def _forget(state, name: str) -> None:
    host = state.hosts.pop(name, None)
    if host is not None:
        stop_vm(host)
        state.save()


def start_vms(state, count: int, rootfs, log=print) -> None:
    """Make sure laptop VMs lab-vm1..count run (those already alive are left alone)."""
    from .image import ensure_laptop_image

    if count <= 0:
        return
    base = port_base()
    image = None
    for i in range(1, count + 1):
        name = f"lab-vm{i}"
        host = state.hosts.get(name)
        if host is not None and is_alive(host):
            continue
        if host is not None:  # dead: clean up what it left
            _forget(state, name)
        port = base + i
        if not _port_free(port):
            raise _port_busy_error(port)
        if image is None:
            image = ensure_laptop_image(rootfs, log=log)
        try:
            _start_one(state, name, image, port, log=log)
        except BaseException:
            _forget(state, name)
            raise


def stop_vm(host) -> None:
    """Stop a laptop VM the lab started and remove its overlay folder. Idempotent."""
    from .qmp import monitor

    if is_alive(host):
        sock = Path(host.extra.get("qmp") or vm_dir(host.name) / "qmp.sock")
        try:
            with monitor(sock, host.name, timeout=5) as mon:
                mon.quit()
        except LabError:
            pass
        if not wait_gone(host.pid, host.pid_start, 15):
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                if not same_process(host.pid, host.pid_start):  # re-checked right before each signal
                    break
                try:
                    os.kill(host.pid, sig)
                except ProcessLookupError:
                    break
                if wait_gone(host.pid, host.pid_start, wait):
                    break
    # A killed qemu's leader can look dead (a zombie) while its other threads still hold the SSH port for a
    # moment: wait for that, as long as the process is still there in some form.
    from .state import proc_start_time

    deadline = time.monotonic() + 10
    while (host.pid and host.pid_start and proc_start_time(host.pid) == host.pid_start
           and not _port_free(host.port) and time.monotonic() < deadline):
        time.sleep(0.1)
    rundir = Path(host.extra.get("dir") or vm_dir(host.name))
    root = (runtime_dir() / "vm").resolve()
    try:
        inside = rundir.resolve().is_relative_to(root) and rundir.resolve() != root
    except OSError:
        inside = False
    tpm.stop(rundir)  # normally gone already: swtpm exits when its qemu closes the socket
    if inside:
        shutil.rmtree(rundir, ignore_errors=True)
