#!/bin/sh
# Becomes one deskguard lab laptop container. Started as
#   setsid unshare --mount --propagation private /bin/sh ct-launch.sh MACHINE LOWER DIR BRIDGE
# MACHINE is the container's machine-wide name (lab-ct1, or lab7-ct1 in lab 7): nspawn's machine name, its
# veth (vb-MACHINE) and its cgroup. Its hostname comes from /etc/hostname in its overlay.
# The overlay is mounted in this private mount namespace only: when systemd-nspawn goes, so does the mount,
# and no stale mount can outlive the container. exec keeps the PID: the lab records nspawn's PID.
set -eu
name=$1 lower=$2 dir=$3 bridge=$4

mount -t overlay "dg-$name" -o "lowerdir=$lower,upperdir=$dir/upper,workdir=$dir/work" "$dir/root"

# A cgroup of its own in every hierarchy systemd uses. With --keep-unit, nspawn builds the container's tree
# (payload/, supervisor/) inside the cgroup it is started in: without this, every container would share the
# root cgroup's payload/ and their systemds would tear down each other's unit cgroups (units then fail with
# status 219/CGROUP, e.g. systemd-user-sessions, and logins are refused with "System is booting up").
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  hierarchies=/sys/fs/cgroup  # pure cgroup v2
else
  hierarchies="/sys/fs/cgroup/systemd /sys/fs/cgroup/unified"
fi
for h in $hierarchies; do
  [ -d "$h" ] || continue
  mkdir -p "$h/deskguard-lab/$name"
  echo $$ > "$h/deskguard-lab/$name/cgroup.procs"
done
# This machine's PID 1 is not systemd: no registration with machined and no scope unit of our own.
# --network-bridge gives the container its own network namespace with full network admin capability
# (nft and ufw work inside); the host side of the veth (vb-NAME) is put on the lab bridge.
exec systemd-nspawn --quiet --boot --directory="$dir/root" --machine="$name" \
  --register=no --keep-unit --network-bridge="$bridge" \
  --console=read-only --resolv-conf=off --timezone=off --link-journal=no \
  --setenv="DESKGUARD_LAB_CT=$dir"
