#!/bin/sh
# Becomes one deskguard lab fleet host. Started as
#   setsid ip netns exec NAME unshare --mount --uts --propagation private /bin/sh fleet-host.sh NAME ADDR DIR SHARED
# so it already runs in the host's network namespace and in private mount and UTS namespaces. Every step
# execs the next: the PID the lab records is the PID of the sshd that stays.
# Arguments: host name, address/prefix for eth0, the host's folder, the fleet's shared folder.
set -eu
name=$1 addr=$2 dir=$3 shared=$4

ip -batch - <<EOF
link set lo up
link set eth0 addrgenmode none
addr add $addr dev eth0
link set eth0 up
EOF

# Own writable /etc and a plain /root (the machine's /root may carry a slow shell start-up, e.g. pyenv).
mount -t overlay "dg-$name-etc" -o "lowerdir=/etc,upperdir=$dir/etc.upper,workdir=$dir/etc.work" /etc
mount -t overlay "dg-$name-root" -o "lowerdir=$shared/root,upperdir=$dir/root.upper,workdir=$dir/root.work" /root
echo "$name" > /proc/sys/kernel/hostname
cd /
exec /usr/sbin/sshd -D -e -f "$shared/sshd_config"
