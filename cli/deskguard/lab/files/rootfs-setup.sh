#!/bin/sh
# Runs inside the chroot of a fresh debootstrap (minbase) to make a lab laptop: the packages a laptop
# managed by deskguard has, a management account with the lab key, and nothing that slows a TCG boot.
# Arguments: the packages to install. Environment: LAB_PUBKEY (the lab's SSH public key).
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
# Services must not start inside the build chroot.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod 0755 /usr/sbin/policy-rc.d
apt-get update -q
apt-get install -y -q --no-install-recommends "$@"
rm -f /usr/sbin/policy-rc.d

# Management account (key only, passwordless sudo: the lab's stand-in for IT's admin account) and an operator.
useradd --create-home --shell /bin/bash --comment "deskguard lab admin" dgadmin
useradd --create-home --shell /bin/bash --comment "lab operator" tanaka
passwd --lock dgadmin >/dev/null
passwd --lock root >/dev/null
printf 'dgadmin ALL=(ALL:ALL) NOPASSWD: ALL\n' > /etc/sudoers.d/dgadmin
chmod 0440 /etc/sudoers.d/dgadmin
visudo -cf /etc/sudoers.d/dgadmin >/dev/null
for home in /root /home/dgadmin; do
  install -d -m 0700 "$home/.ssh"
  printf '%s\n' "$LAB_PUBKEY" > "$home/.ssh/authorized_keys"
  chmod 0600 "$home/.ssh/authorized_keys"
done
chown -R dgadmin:dgadmin /home/dgadmin/.ssh
printf 'PasswordAuthentication no\nKbdInteractiveAuthentication no\nUseDNS no\n' > /etc/ssh/sshd_config.d/10-lab.conf
mkdir -p /run/sshd && /usr/sbin/sshd -t

# Off until the kit turns them on (usbguard-dbus would start usbguard behind the kit's back).
systemctl mask usbguard.service usbguard-dbus.service
# Slow under TCG and irrelevant to a lab laptop.
systemctl mask e2scrub_reap.service e2scrub_all.timer systemd-networkd-wait-online.service
# The auto_update role owns these timers; the lab has no route to a mirror anyway.
systemctl disable apt-daily.timer apt-daily-upgrade.timer 2>/dev/null || true
systemctl enable systemd-networkd.service
mkdir -p /etc/systemd/network
printf '[Match]\nName=en*\n\n[Network]\nDHCP=ipv4\n' > /etc/systemd/network/20-wired.network
printf 'nameserver 10.0.2.3\n' > /etc/resolv.conf

echo lab > /etc/hostname
ln -sf /usr/share/zoneinfo/Etc/UTC /etc/localtime
# Every VM and container must get its own machine id on first boot.
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
apt-get clean
rm -rf /var/lib/apt/lists/*_Packages /var/log/*.log
