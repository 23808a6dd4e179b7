#!/bin/sh
# PID 1 of the lab's short-lived installer VM (kernel `init=`). The root file system it runs from is the
# prepared laptop tree (a plain ext4 image, read-only); the initramfs has already unlocked the blank LUKS2
# disk as /dev/mapper/root with the keyfile (or this script does). It makes the encrypted root file system,
# copies the tree onto it, closes the mapping, prints a marker on the serial console and powers off.
# Kernel arguments read: deskguard.luks=<LUKS UUID>.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
# No udev runs here: device-mapper must not wait for udev to acknowledge (it would hang forever).
export PATH LC_ALL=C DM_DISABLE_UDEV=1

say() { echo "deskguard-install: $*" > /dev/ttyS0; }
off() { sync; echo o > /proc/sysrq-trigger; sleep 30; }
fail() { say "FAILED: $*"; echo "DESKGUARD-INSTALL-FAILED" > /dev/ttyS0; off; }

mountpoint -q /proc || mount -t proc proc /proc || fail "mount /proc"
mountpoint -q /sys || mount -t sysfs sys /sys || fail "mount /sys"
mountpoint -q /dev || mount -t devtmpfs dev /dev || fail "mount /dev"
mountpoint -q /run || mount -t tmpfs -o mode=0755 run /run || fail "mount /run"

uuid="$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^deskguard\.luks=//p')"
[ -n "$uuid" ] || fail "no deskguard.luks= on the kernel command line"
if [ ! -b /dev/mapper/root ]; then
  dev="$(blkid -l -t "UUID=$uuid" -o device)" || fail "no disk with LUKS UUID $uuid"
  mkdir -p /run/cryptsetup
  cryptsetup open --key-file /etc/keys/root.key "$dev" root || fail "cryptsetup open $dev with the keyfile"
fi
say "unlocked: $(dmsetup table root | cut -d' ' -f3-4)"
mkfs.ext4 -q -F -L laptop-root -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 /dev/mapper/root \
  || fail "mkfs.ext4"
mkdir -p /run/target
mount -t ext4 /dev/mapper/root /run/target || fail "mount the new root"
start="$(cut -d' ' -f1 /proc/uptime)"
cp -ax /. /run/target/ || fail "copy the tree"
say "copied in $start..$(cut -d' ' -f1 /proc/uptime) s of uptime"
rm -f /run/target/deskguard-install
umount /run/target || fail "umount"
cryptsetup close root || fail "cryptsetup close"
sync
echo "DESKGUARD-INSTALL-OK" > /dev/ttyS0
off
