"""Lab images built only from Debian packages, cached under the user's cache folder by recipe hash.

A build goes to `<name>-<hash>.partial` and is renamed into place only when complete, so an interrupted
build is never mistaken for a good one; the next build removes the leftover and starts again.
"""

from __future__ import annotations

import fcntl
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
from .paths import cache_dir

SUITE = "bookworm"
# Everything a lab laptop needs is baked in: installing packages under TCG takes minutes.
LAPTOP_PACKAGES = (
    "linux-image-amd64", "systemd-sysv", "udev", "dbus", "dbus-user-session", "kmod", "procps", "iproute2",
    "iputils-ping", "openssh-server", "openssh-sftp-server", "sudo", "python3", "python3-apt",
    "cryptsetup", "cryptsetup-initramfs", "busybox", "initramfs-tools", "usbguard", "usbutils",
    "wireguard-tools", "wireguard-go", "unattended-upgrades", "apt-utils", "ca-certificates",
    "dconf-cli", "dconf-gsettings-backend", "gsettings-desktop-schemas", "ufw", "nftables", "less",
)


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


@contextmanager
def build_lock():
    cache_dir().mkdir(parents=True, exist_ok=True)
    fd = os.open(cache_dir() / "build.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


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
    key = cache_dir() / "keys" / "lab_ed25519"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = key.with_name(key.name + ".tmp")
        for p in (tmp, tmp.with_suffix(".tmp.pub")):
            p.unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deskguard-lab", "-f", str(tmp)],
                       check=True)
        os.replace(tmp.with_suffix(".tmp.pub"), key.with_suffix(".pub"))
        os.replace(tmp, key)
    return key


@dataclass(frozen=True)
class Rootfs:
    path: Path  # the image folder; the tree itself is path/"rootfs"

    @property
    def tree(self) -> Path:
        return self.path / "rootfs"

    def kernel(self) -> Path:
        return self.tree / "vmlinuz"

    def initrd(self) -> Path:
        return self.tree / "initrd.img"


def rootfs_recipe() -> dict:
    return {
        "suite": SUITE,
        "packages": LAPTOP_PACKAGES,
        "setup": (files_dir() / "rootfs-setup.sh").read_text(),
        "pubkey": lab_key().with_suffix(".pub").read_text().strip(),
    }


def ensure_rootfs() -> Rootfs:
    """The Debian 12 laptop tree shared by containers (read-only, overlaid) and VM images."""
    for tool in ("debootstrap", "chroot"):
        if not shutil.which(tool):
            raise LabError(f"{tool} is not installed; run `bash .ci/setup` first")
    recipe = rootfs_recipe()
    final = cache_dir() / f"rootfs-{recipe_hash(recipe)}"
    with build_lock():
        if final.exists():
            return Rootfs(final)
        with partial_dir(final) as work:
            log = build_log(final)
            tree = work / "rootfs"
            run(["debootstrap", "--variant=minbase", SUITE, str(tree), debian_mirror()], log, "debootstrap")
            mirror = debian_mirror()
            (tree / "etc/apt/sources.list").write_text(
                f"deb {mirror} {SUITE} main\ndeb {mirror} {SUITE}-updates main\n"
                f"deb {mirror}-security {SUITE}-security main\n")
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
