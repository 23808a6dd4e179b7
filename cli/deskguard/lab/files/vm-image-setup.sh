#!/bin/sh
# Runs on the host, in a chroot over an overlay of the shared laptop rootfs (the rootfs itself is never
# changed), to turn that tree into an encrypted laptop's root file system:
#   - /etc/crypttab opens the LUKS2 root with /etc/keys/root.key, a keyfile the initramfs carries: the lab's
#     stand-in for a laptop's TPM unlock (unattended boot, but a wiped header still makes the disk unreadable);
#   - /etc/fstab mounts /dev/mapper/root;
#   - the initramfs is rebuilt natively (seconds, instead of minutes under TCG) with cryptsetup and the key.
# The caller has already written /etc/keys/root.key (64 random bytes, 0400).
# Arguments: LUKS UUID, kernel version.
set -eu
uuid="$1"
kver="$2"
export LC_ALL=C

chmod 0700 /etc/keys
chmod 0400 /etc/keys/root.key
printf '/dev/mapper/root / ext4 errors=remount-ro 0 1\n' > /etc/fstab

# Carry the key in the initramfs, and keep the initramfs unreadable to other users.
sed -i 's|^#\?KEYFILE_PATTERN=.*|KEYFILE_PATTERN="/etc/keys/*.key"|' /etc/cryptsetup-initramfs/conf-hook
grep -q '^KEYFILE_PATTERN="/etc/keys/\*.key"' /etc/cryptsetup-initramfs/conf-hook
grep -q '^UMASK=' /etc/initramfs-tools/initramfs.conf || printf 'UMASK=0077\n' >> /etc/initramfs-tools/initramfs.conf
# No swap, no hibernation: do not wait for a resume device at boot.
printf 'RESUME=none\n' > /etc/initramfs-tools/conf.d/resume

# The build host cannot see the encrypted disk (no device-mapper), so its root is not "found" by the
# cryptroot hook; the `initramfs` option includes the entry anyway. The laptop's own crypttab (written after)
# has no such option: on the laptop, update-initramfs finds /dev/mapper/root itself.
printf 'root UUID=%s /etc/keys/root.key luks,discard,initramfs\n' "$uuid" > /etc/crypttab
# Built here with every storage/crypto module (MODULES=most) and fast compression: the host cannot tell
# which modules the VM needs. Rebuilt on the laptop itself, the initramfs only carries what that machine
# uses (MODULES=dep: 2-3 min under TCG; MODULES=most takes ~17 min there).
printf 'MODULES=most\nCOMPRESSLEVEL=1\n' > /etc/initramfs-tools/conf.d/zz-lab-build
update-initramfs -u -k "$kver"
printf '# deskguard lab laptop: rebuilt inside the VM, keep only the modules this machine uses.\nMODULES=dep\n' \
  > /etc/initramfs-tools/conf.d/zz-lab-build
mv /etc/initramfs-tools/conf.d/zz-lab-build /etc/initramfs-tools/conf.d/lab-vm
printf 'root UUID=%s /etc/keys/root.key luks,discard\n' "$uuid" > /etc/crypttab

# Check that the initramfs can unlock the disk unattended.
listing="$(lsinitramfs "/boot/initrd.img-$kver")"
for f in cryptroot/crypttab cryptroot/keyfiles/root.key usr/sbin/cryptsetup; do
  printf '%s\n' "$listing" | grep -qx "$f" || { echo "initramfs lacks $f" >&2; exit 1; }
done
printf '%s\n' "$listing" | grep -q '/dm-crypt.ko' || { echo "initramfs lacks dm-crypt" >&2; exit 1; }
