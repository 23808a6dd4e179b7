"""Lab images built only from Debian packages, cached under the user's cache folder by recipe hash.

A build goes to `<name>-<hash>.partial` and is renamed into place only when complete, so an interrupted
build is never mistaken for a good one; the next build removes the leftover and starts again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import LabError
from ..fsutil import file_lock
from .paths import cache_dir

# Debian releases the lab builds laptops from; the first is the default (Debian 13, stable since 2025).
SUITES = ("trixie", "bookworm")
DEFAULT_SUITE = SUITES[0]
SUITE_NAMES = {"trixie": "Debian 13 (trixie)", "bookworm": "Debian 12 (bookworm)"}
# Everything a lab laptop needs is baked in: installing packages under TCG takes minutes.
LAPTOP_PACKAGES = (
    "linux-image-amd64", "systemd-sysv", "udev", "dbus", "dbus-user-session", "kmod", "procps", "iproute2",
    "iputils-ping", "openssh-server", "openssh-sftp-server", "sudo", "python3", "python3-apt",
    "cryptsetup", "cryptsetup-initramfs", "busybox", "initramfs-tools", "usbguard", "usbutils",
    "wireguard-tools", "wireguard-go", "unattended-upgrades", "apt-utils", "ca-certificates",
    "dconf-cli", "dconf-gsettings-backend", "gsettings-desktop-schemas", "ufw", "nftables", "less",
    "libpam-pwquality", "python3-cryptography",
    # Not in trixie's minbase any more (bookworm's had it): mkfs.ext4 for the installer VM, fsck at boot.
    "e2fsprogs",
    # The TPM path (issue 21): tpm2_pcrread for the lab's checks, clevis's TPM2 pin and its initramfs hook
    # for the disk_encryption role's `tpm2` unlock.
    "tpm2-tools", "clevis", "clevis-luks", "clevis-tpm2", "clevis-initramfs",
)
# What one release needs beside those. Trixie's ping has no file capability: an unprivileged ping relies on
# net.ipv4.ping_group_range from linux-sysctl-defaults, which iputils-ping, procps and systemd recommend (so a
# real install has it) but the lab installs without recommends.
SUITE_PACKAGES = {"trixie": ("linux-sysctl-defaults",), "bookworm": ()}


def check_suite(suite: str) -> str:
    if suite not in SUITES:
        raise LabError(f"unknown Debian suite {suite!r}; the lab builds {', '.join(SUITES)}")
    return suite


def files_dir():
    return resources.files("deskguard.lab") / "files"


def debian_mirror() -> str:
    """The Debian mirror this machine's apt already uses (the lab reaches no other)."""
    if os.environ.get("DESKGUARD_LAB_MIRROR"):
        return os.environ["DESKGUARD_LAB_MIRROR"]
    candidates = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in candidates:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        for line in text.splitlines():
            if line.lstrip().startswith("#"):
                continue
            match = re.search(r"(https?://\S+/debian)(?:\s|$)", line)
            if match:
                return match.group(1)
    return "http://deb.debian.org/debian"


def recipe_hash(*parts: object) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def build_lock():
    """Serialise image builds (one debootstrap at a time on this machine's cache)."""
    return file_lock(cache_dir() / "build.lock")


def run(cmd: list[str], log: Path, what: str, **kw) -> None:
    """Run a build step with its output in a log file; on failure, one line that names the log."""
    with open(log, "ab") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n".encode())
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, **kw)
    if proc.returncode != 0:
        raise LabError(f"{what} failed (exit {proc.returncode}); see {log}")


@contextmanager
def partial_dir(final: Path):
    """Yield a fresh `<final>.partial` folder; rename it to `final` only if the body completes."""
    partial = final.with_name(final.name + ".partial")
    if partial.exists():
        remove_tree(partial)
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        remove_tree(partial)
        raise
    os.replace(partial, final)


def remove_tree(path: Path) -> None:
    # A chroot build may leave proc/sys/dev mounted if it was killed: unmount before deleting.
    for mnt in ("dev/pts", "dev", "proc", "sys"):
        target = path / "rootfs" / mnt
        if os.path.ismount(target):
            subprocess.run(["umount", "-l", str(target)], check=False)
    shutil.rmtree(path, ignore_errors=True)


def build_log(final: Path) -> Path:
    """Kept beside the cache entry, not inside it, so a failed build's log survives the clean-up."""
    log = final.with_name(final.name + ".log")
    log.write_text("")
    return log


def lab_key() -> Path:
    """The lab's SSH key pair (lab only: it opens every lab host and nothing else)."""
    return ssh_key_pair(cache_dir() / "keys" / "lab_ed25519", "deskguard-lab")


def ssh_key_pair(key: Path, comment: str) -> Path:
    """An ed25519 key pair at `key` and `key`.pub, made once into the cache. Generated beside it and renamed
    into place, public half first: a killed run leaves no private key without its public one. The cache is
    shared by every lab on the machine: two labs starting at once make it one at a time (a lock on the folder
    itself, so it holds nothing but the pair), and the second finds it made."""
    if not key.exists():
        import fcntl

        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(key.parent, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not key.exists():
                tmp = key.with_name(key.name + ".tmp")
                tmp_pub = key.with_name(key.name + ".tmp.pub")
                for p in (tmp, tmp_pub):
                    p.unlink(missing_ok=True)
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(tmp)],
                               check=True)
                os.replace(tmp_pub, key.with_name(key.name + ".pub"))
                os.replace(tmp, key)
        finally:
            os.close(fd)
    return key


@dataclass(frozen=True)
class Rootfs:
    path: Path  # the image folder; the tree itself is path/"rootfs"

    @property
    def tree(self) -> Path:
        return self.path / "rootfs"

    @property
    def suite(self) -> str:
        """The Debian suite, from the folder name `rootfs-<suite>-<hash>`."""
        return self.path.name.split("-")[1]


def rootfs_recipe(suite: str = DEFAULT_SUITE) -> dict:
    return {
        "suite": check_suite(suite),
        "packages": LAPTOP_PACKAGES + SUITE_PACKAGES[suite],
        "setup": (files_dir() / "rootfs-setup.sh").read_text(),
        "pubkey": lab_key().with_suffix(".pub").read_text().strip(),
    }


def ensure_rootfs(suite: str = DEFAULT_SUITE) -> Rootfs:
    """The Debian laptop tree of `suite` shared by containers (read-only, overlaid) and VM images; cached as
    `rootfs-<suite>-<recipe hash>` (the suite is in the recipe too, so the hash alone keeps releases apart)."""
    for tool in ("debootstrap", "chroot"):
        if not shutil.which(tool):
            raise LabError(f"{tool} is not installed; run `bash .ci/setup` first")
    recipe = rootfs_recipe(suite)
    final = cache_dir() / f"rootfs-{suite}-{recipe_hash(recipe)}"
    with build_lock():
        if final.exists():
            return Rootfs(final)
        with partial_dir(final) as work:
            log = build_log(final)
            tree = work / "rootfs"
            run(["debootstrap", "--variant=minbase", suite, str(tree), debian_mirror()], log, "debootstrap")
            mirror = debian_mirror()
            (tree / "etc/apt/sources.list").write_text(
                f"deb {mirror} {suite} main\ndeb {mirror} {suite}-updates main\n"
                f"deb {mirror}-security {suite}-security main\n")
            setup = tree / "root/rootfs-setup.sh"
            shutil.copyfile(files_dir() / "rootfs-setup.sh", setup)
            with chroot_mounts(tree):
                run(["chroot", str(tree), "/bin/sh", "/root/rootfs-setup.sh", *recipe["packages"]], log,
                    "laptop image set-up", env={**os.environ, "LAB_PUBKEY": recipe["pubkey"]})
            setup.unlink()
            (work / "recipe.json").write_text(json.dumps(recipe, indent=2, default=str))
        return Rootfs(final)


@contextmanager
def chroot_mounts(tree: Path):
    mounted = []
    try:
        for fstype, src, mnt in (("proc", "proc", "proc"), ("sysfs", "sys", "sys"), (None, "/dev", "dev"),
                                 (None, "/dev/pts", "dev/pts")):
            target = tree / mnt
            target.mkdir(exist_ok=True)
            cmd = ["mount", "-t", fstype, src, str(target)] if fstype else ["mount", "--bind", src, str(target)]
            subprocess.run(cmd, check=True)
            mounted.append(target)
        yield
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-l", str(target)], check=False)


# ---------------------------------------------------------------------------------------------------------
# Laptop VM image: the rootfs on a LUKS2-encrypted disk, booted by qemu with the kernel and initrd beside it.
#
# Built without device-mapper on the host: the LUKS2 header is formatted on a plain file here (header
# operations need no mapping), the initramfs is built natively in a chroot over an overlay of the rootfs, the
# tree becomes a plain ext4 image (`mkfs.ext4 -d`), and a short-lived installer VM, whose init is
# files/vm-install.sh, opens the encrypted disk with real dm-crypt, makes the file system and copies the tree.
# See docs/lab-vm.md.
# ---------------------------------------------------------------------------------------------------------

LAPTOP_DISK_SIZE = 4 << 30
# Light PBKDF for the lab only: argon2id costs ~60 s per luksFormat and ~13 s per unlock under TCG.
LAB_PBKDF = ("--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000")
LUKS_FORMAT_ARGS = ("--type", "luks2", "--cipher", "aes-xts-plain64", "--key-size", "512", "--hash", "sha256",
                    "--sector-size", "4096", *LAB_PBKDF)
INSTALL_TIMEOUT = 1200  # seconds; the copy takes ~1-2 min under TCG
INSTALL_OK = "DESKGUARD-INSTALL-OK"
QEMU = "qemu-system-x86_64"


@dataclass(frozen=True)
class LaptopImage:
    """A cached laptop image folder: base disk, kernel, initrd, installer passphrase and facts."""

    path: Path

    @property
    def disk(self) -> Path:
        return self.path / "disk.qcow2"

    @property
    def kernel(self) -> Path:
        return self.path / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.path / "initrd.img"

    @property
    def passphrase_file(self) -> Path:
        """Slot 0's passphrase (no trailing newline), 0600: what an installer would have typed."""
        return self.path / "installer.passphrase"

    def facts(self) -> dict:
        return json.loads((self.path / "image.json").read_text())


def _tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.splitlines()[0].strip() if out else ""


def qemu_version() -> str:
    return _tool_version([QEMU, "--version"])


def check_vm_tools() -> None:
    for tool in (QEMU, "qemu-img", "cryptsetup", "mkfs.ext4"):
        if not shutil.which(tool):
            raise LabError(f"{tool} is not installed (the laptop VM tier needs it); run `bash .ci/setup` first")


def laptop_recipe(rootfs: Rootfs) -> dict:
    return {
        "rootfs": rootfs.path.name,  # the rootfs folder name carries its suite and its own recipe hash
        "disk_size": LAPTOP_DISK_SIZE,
        "luks": LUKS_FORMAT_ARGS,
        "setup": (files_dir() / "vm-image-setup.sh").read_text(),
        "install": (files_dir() / "vm-install.sh").read_text(),
        "qemu": qemu_version(),
        "cryptsetup": _tool_version(["cryptsetup", "--version"]),
    }


def unmount_under(path: Path) -> None:
    """Unmount whatever a killed build left mounted inside `path` (deepest first, stacked mounts too)."""
    prefix = os.path.realpath(path)
    for _ in range(32):
        try:
            lines = Path("/proc/self/mountinfo").read_text().splitlines()
        except OSError:
            return
        targets = {m for m in (line.split()[4].replace("\\040", " ") for line in lines)
                   if m == prefix or m.startswith(prefix + "/")}
        if not targets:
            return
        for mnt in sorted(targets, key=len, reverse=True):
            subprocess.run(["umount", "-l", mnt], check=False, stderr=subprocess.DEVNULL)


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL if the build process dies (Ctrl-C, kill -9), so no orphan qemu
    keeps writing into a cache folder that the next build removes."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _kernel_version(tree: Path) -> str:
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise LabError(f"the laptop rootfs {tree} has no kernel; remove it to rebuild: rm -rf {tree.parent}")
    return kernels[-1].name[len("vmlinuz-"):]


def _step(log: Path, what: str, started: float) -> float:
    import time

    now = time.monotonic()
    with open(log, "a") as fh:
        fh.write(f"# {what}: {now - started:.1f} s\n")
    return now


def ensure_laptop_image(rootfs: Rootfs, log=print) -> LaptopImage:
    """The encrypted laptop image for `rootfs`, built once and cached as `laptop-<hash>/`."""
    check_vm_tools()
    recipe = laptop_recipe(rootfs)
    final = cache_dir() / f"laptop-{rootfs.suite}-{recipe_hash(recipe)}"
    if (final / "image.json").exists():
        return LaptopImage(final)
    with file_lock(cache_dir() / "laptop.lock"):
        if (final / "image.json").exists():
            return LaptopImage(final)
        if final.exists():  # a folder without its facts file is not a finished image
            remove_tree(final)
        # Holding the lock, no other laptop build runs: any .partial (of this recipe or an older one) is
        # what an interrupted build left behind.
        for stale in cache_dir().glob("laptop-*.partial"):
            unmount_under(stale)
            remove_tree(stale)
        log(f"building the encrypted laptop image {final.name} (a few minutes, once)")
        with partial_dir(final) as work:
            _build_laptop_image(rootfs, work, build_log(final), recipe)
        return LaptopImage(final)


def _build_laptop_image(rootfs: Rootfs, work: Path, log: Path, recipe: dict) -> None:
    import secrets
    import time
    import uuid

    t0 = t = time.monotonic()
    # The initrd carries the unlock key and the snapshot's RAM state the volume key: root only.
    work.chmod(0o700)
    kver = _kernel_version(rootfs.tree)
    luks_uuid, src_uuid = str(uuid.uuid4()), str(uuid.uuid4())
    upper, ovl_work, merged = work / "upper", work / "ovl-work", work / "merged"
    for d in (upper, ovl_work, merged):
        d.mkdir()
    src_img, raw = work / "tree.ext4", work / "disk.raw"

    # 1. The laptop tree: an overlay over the shared rootfs, with the key, crypttab, fstab and initramfs.
    try:
        run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={rootfs.tree},upperdir={upper},workdir={ovl_work}", str(merged)], log, "overlay mount")
        keys = merged / "etc/keys"
        keys.mkdir(mode=0o700, exist_ok=True)
        key = keys / "root.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(64))
        shutil.copyfile(files_dir() / "vm-image-setup.sh", merged / "root/vm-image-setup.sh")
        with chroot_mounts(merged):
            run(["chroot", str(merged), "/bin/sh", "/root/vm-image-setup.sh", luks_uuid, kver], log,
                "laptop initramfs build")
        (merged / "root/vm-image-setup.sh").unlink()
        installer = merged / "deskguard-install"
        shutil.copyfile(files_dir() / "vm-install.sh", installer)
        installer.chmod(0o755)
        t = _step(log, "initramfs built natively", t)
        shutil.copyfile(merged / f"boot/vmlinuz-{kver}", work / "vmlinuz")
        shutil.copyfile(merged / f"boot/initrd.img-{kver}", work / "initrd.img")
        run(["mkfs.ext4", "-q", "-F", "-d", str(merged), "-U", src_uuid, "-L", "dg-tree", "-E", "root_owner=0:0",
             str(src_img), "3G"], log, "mkfs.ext4 -d (laptop tree)")
        t = _step(log, "tree image made", t)

        # 2. The LUKS2 header, on a plain file: slot 0 the installer passphrase, slot 1 the keyfile.
        passphrase = work / "installer.passphrase"
        fd = os.open(passphrase, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(24))
        with open(raw, "wb") as fh:
            fh.truncate(LAPTOP_DISK_SIZE)
        run(["cryptsetup", "luksFormat", "--batch-mode", *LUKS_FORMAT_ARGS, "--uuid", luks_uuid,
             "--key-slot", "0", "--key-file", str(passphrase), str(raw)], log, "luksFormat")
        run(["cryptsetup", "luksAddKey", "--batch-mode", *LAB_PBKDF, "--key-slot", "1",
             "--key-file", str(passphrase), str(raw), str(key)], log, "luksAddKey (keyfile)")
        run(["cryptsetup", "open", "--test-passphrase", "--key-slot", "0", "--key-file", str(passphrase),
             str(raw)], log, "passphrase check")
        run(["cryptsetup", "open", "--test-passphrase", "--key-slot", "1", "--key-file", str(key), str(raw)],
            log, "keyfile check")
        t = _step(log, "LUKS2 header formatted", t)
    finally:
        unmount_under(merged)

    # 3. The installer VM: real dm-crypt opens the disk, mkfs, copy, close.
    _run_installer(work, raw, src_img, luks_uuid, src_uuid, log)
    t = _step(log, "installer VM", t)

    # 4. Compact base disk; drop the build's scratch.
    run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(work / "disk.qcow2")], log, "qemu-img convert")
    for scratch in (raw, src_img):
        scratch.unlink()
    shutil.rmtree(upper)
    shutil.rmtree(ovl_work)
    merged.rmdir()
    t = _step(log, "qcow2 written", t)
    facts = {"luks_uuid": luks_uuid, "kernel": kver, "suite": rootfs.suite, "recipe": recipe,
             "build_seconds": round(time.monotonic() - t0, 1), "built": time.time()}
    (work / "image.json").write_text(json.dumps(facts, indent=2, default=str))


def _run_installer(work: Path, raw: Path, src_img: Path, luks_uuid: str, src_uuid: str, log: Path) -> None:
    serial = work / "install-serial.log"
    argv = [QEMU, "-nodefaults", "-no-user-config", "-name", "deskguard-lab-installer",
            "-accel", "tcg,thread=multi,tb-size=256", "-smp", "2", "-m", "1024",
            "-display", "none", "-no-reboot",
            "-kernel", str(work / "vmlinuz"), "-initrd", str(work / "initrd.img"),
            "-append", f"root=UUID={src_uuid} ro rootfstype=ext4 fsck.mode=skip init=/deskguard-install"
                       f" deskguard.luks={luks_uuid} console=ttyS0 panic=1 loglevel=4",
            "-drive", f"file={raw},format=raw,if=none,id=target,cache=unsafe,discard=unmap",
            "-device", "virtio-blk-pci,drive=target,serial=dg-target",
            "-drive", f"file={src_img},format=raw,if=none,id=tree,readonly=on",
            "-device", "virtio-blk-pci,drive=tree,serial=dg-tree",
            "-serial", f"file:{serial}"]
    with open(log, "ab") as fh:
        fh.write(f"\n$ {' '.join(argv)}\n".encode())
        fh.flush()
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        try:
            rc = proc.wait(timeout=INSTALL_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise LabError(f"laptop image install VM did not finish within {INSTALL_TIMEOUT} s; see {log}") from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    text = serial.read_text(errors="replace") if serial.exists() else ""
    with open(log, "a") as fh:
        fh.write("\n--- installer VM serial console ---\n" + text + "\n--- end ---\n")
    if rc != 0 or INSTALL_OK not in text:
        said = [ln for ln in text.splitlines() if ln.startswith("deskguard-install:")]
        why = said[-1].split(":", 1)[1].strip() if said else f"qemu exit {rc}, no success marker"
        raise LabError(f"laptop image install VM failed ({why}); see {log}")

