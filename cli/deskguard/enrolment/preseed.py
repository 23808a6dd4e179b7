"""`deskguard installer preseed`: a Debian installer preseed for a laptop that will enrol itself
(docs/enrolment.md, "Installer preseed"): the whole disk encrypted (LUKS2, Argon2id keyslots, checked before the install ends),
LVM inside with root and swap, the packages the enrolment package needs, and the enrolment package installed at
the end (its first-boot unit is then enabled for the laptop's first start).

The installer passphrase, if given, is written into the preseed only (0600): never into the store, a log or the
command's output. It is the disk's first key; onboarding escrows a recovery key and removes it (docs/disk-encryption.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UsageError

# What the enrolment package depends on (package.control's Depends and Recommends), installed by the installer.
PACKAGES = ("openssh-server", "sudo", "python3", "python3-cryptography", "wireguard-tools", "wireguard-go",
            "cryptsetup", "lvm2")
DEB_PATH = "/root/deskguard-enrol.deb"


@dataclass(frozen=True)
class PreseedInput:
    package_url: str                    # where the installer fetches the enrolment package (https://…/x.deb)
    hostname: str
    disk: str = ""                      # empty: the installer's choice (the only disk)
    swap_mb: int = 4096
    boot_mb: int = 1024
    locale: str = "en_US.UTF-8"
    keymap: str = "us"
    timezone: str = "UTC"
    mirror: str = "deb.debian.org"
    suite: str = "trixie"
    passphrase: str | None = None       # the disk's installer passphrase; None: the installer asks for it


def check(inp: PreseedInput) -> None:
    if not re.fullmatch(r"https://[A-Za-z0-9.:\[\]/_%~+-]+\.deb", inp.package_url or "") and \
            not re.fullmatch(r"http://[A-Za-z0-9.:\[\]/_%~+-]+\.deb", inp.package_url or ""):
        raise UsageError(f"--package-url {inp.package_url[:80]!r}: an http(s):// URL of the enrolment .deb")
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", inp.hostname or ""):
        raise UsageError(f"--hostname {inp.hostname[:70]!r}: lower-case letters, digits and '-'")
    if inp.disk and not re.fullmatch(r"/dev/[A-Za-z0-9/_-]{1,64}", inp.disk):
        raise UsageError(f"--disk {inp.disk[:70]!r}: a device path such as /dev/nvme0n1")
    if not 0 <= inp.swap_mb <= 262144 or not 256 <= inp.boot_mb <= 8192:
        raise UsageError("--swap-mb 0..262144, --boot-mb 256..8192")
    for name, value, pattern in (("--locale", inp.locale, r"[A-Za-z_]{2,10}(\.[A-Za-z0-9-]{1,16})?"),
                                 ("--keymap", inp.keymap, r"[a-z]{2,10}"),
                                 ("--timezone", inp.timezone, r"[A-Za-z_]{1,20}(/[A-Za-z_+-]{1,30}){0,2}"),
                                 ("--mirror", inp.mirror, r"[A-Za-z0-9.-]{1,253}"),
                                 ("--suite", inp.suite, r"[a-z]{3,20}")):
        if not re.fullmatch(pattern, value or ""):
            raise UsageError(f"{name} {str(value)[:60]!r} is not valid")
    if inp.passphrase is not None:
        if len(inp.passphrase) < 12 or "\n" in inp.passphrase or not inp.passphrase.isprintable():
            raise UsageError("the installer passphrase must be one line of at least 12 printable characters")


def render(inp: PreseedInput) -> str:
    """The preseed text (debconf-set-selections format)."""
    check(inp)
    swap = f"{inp.swap_mb} {inp.swap_mb} {inp.swap_mb} linux-swap lv_name{{ swap }} method{{ swap }} format{{ }} ." \
        if inp.swap_mb else ""
    recipe = (f"deskguard :: 538 538 1075 free $iflabel{{ gpt }} $reusemethod{{ }} method{{ efi }} format{{ }} . "
              f"{inp.boot_mb} {inp.boot_mb} {inp.boot_mb} ext4 $primary{{ }} $bootable{{ }} method{{ format }} "
              "format{ } use_filesystem{ } filesystem{ ext4 } mountpoint{ /boot } . "
              f"{swap} "
              "8192 10000 -1 ext4 $lvmok{ } lv_name{ root } method{ format } format{ } use_filesystem{ } "
              "filesystem{ ext4 } mountpoint{ / } .")
    late = " && ".join([
        # The disk must be LUKS2 with Argon2id keyslots (LUKS2's default PBKDF): checked, and the install fails
        # here rather than leave an unencrypted disk or a weak keyslot behind.
        "in-target sh -c 'n=0; for d in $(blkid -t TYPE=crypto_LUKS -o device); do "
        "cryptsetup luksDump \"$d\" | grep -q \"^Version: *2\" || exit 1; "
        "cryptsetup luksDump \"$d\" | grep -q \"PBKDF: *argon2id\" || exit 1; n=$((n+1)); done; [ $n -gt 0 ]'",
        f"wget -q -O /target{DEB_PATH} '{inp.package_url}'",
        f"in-target dpkg -i {DEB_PATH}",
        f"rm -f /target{DEB_PATH}",
    ])
    lines = [
        "# deskguard installer preseed (deskguard installer preseed): a laptop that enrols itself at first boot.",
        "# Contains the disk's installer passphrase if one was given: keep it 0600 and delete it after use.",
        f"d-i debian-installer/locale string {inp.locale}",
        f"d-i keyboard-configuration/xkb-keymap select {inp.keymap}",
        "d-i netcfg/choose_interface select auto",
        f"d-i netcfg/get_hostname string {inp.hostname}",
        f"d-i netcfg/hostname string {inp.hostname}",
        "d-i netcfg/get_domain string",
        "d-i mirror/country string manual",
        f"d-i mirror/http/hostname string {inp.mirror}",
        "d-i mirror/http/directory string /debian",
        "d-i mirror/http/proxy string",
        f"d-i mirror/suite string {inp.suite}",
        "d-i clock-setup/utc boolean true",
        f"d-i time/zone string {inp.timezone}",
        "d-i clock-setup/ntp boolean true",
        "# Accounts: no root login; the operator's account is asked for by the installer (its name and password).",
        "d-i passwd/root-login boolean false",
        "d-i passwd/make-user boolean true",
        "# Partitioning: the whole disk, LUKS2 (crypto), LVM inside it: root and swap; /boot and the EFI partition",
        "# outside. The installer's LUKS2 keyslot uses Argon2id (checked in the late command).",
        *([f"d-i partman-auto/disk string {inp.disk}"] if inp.disk else []),
        "d-i partman-auto/method string crypto",
        "d-i partman-crypto/erase_data boolean false",
        "d-i partman-lvm/device_remove_lvm boolean true",
        "d-i partman-md/device_remove_md boolean true",
        "d-i partman-lvm/confirm boolean true",
        "d-i partman-lvm/confirm_nooverwrite boolean true",
        "d-i partman-auto-lvm/guided_size string max",
        "d-i partman-auto-lvm/new_vg_name string vg0",
        "d-i partman-auto/choose_recipe select deskguard",
        f"d-i partman-auto/expert_recipe string {recipe}",
        "d-i partman-efi/non_efi_system boolean true",
        "d-i partman-partitioning/choose_label select gpt",
        "d-i partman-partitioning/default_label string gpt",
        "d-i partman-partitioning/confirm_write_new_label boolean true",
        "d-i partman/choose_partition select finish",
        "d-i partman/confirm boolean true",
        "d-i partman/confirm_nooverwrite boolean true",
        *([f"d-i partman-crypto/passphrase password {inp.passphrase}",
           f"d-i partman-crypto/passphrase-again password {inp.passphrase}",
           "d-i partman-crypto/weak_passphrase boolean false"] if inp.passphrase else []),
        "tasksel tasksel/first multiselect standard",
        f"d-i pkgsel/include string {' '.join(PACKAGES)}",
        "d-i pkgsel/upgrade select full-upgrade",
        "popularity-contest popularity-contest/participate boolean false",
        "d-i grub-installer/only_debian boolean true",
        "d-i grub-installer/bootdev string default",
        "# The enrolment package, last: its first-boot unit enrols the laptop when it first starts.",
        f"d-i preseed/late_command string {late}",
        "d-i finish-install/reboot_in_progress note",
    ]
    return "\n".join(lines) + "\n"
