# Runs as root (over SSH, `sh -c`) in a laptop VM right after it came up, above all after a restore from the
# booted snapshot, whose RAM state carries the snapshot's clock, name and machine id.
# Argument: the VM's name. Protocol on stdin/stdout: print "ready", read the host's time (seconds since the
# epoch, sent the moment "ready" arrived), set the clock: accurate to the one-way latency of an open SSH
# channel (milliseconds), not to the seconds an SSH connection takes to set up under TCG.
set -eu
name="$1"
echo ready
read -r epoch
date -u -s "@$epoch" >/dev/null
echo "$name" > /proc/sys/kernel/hostname
sed -i '/^127\.0\.1\.1[[:space:]]/d' /etc/hosts
printf '127.0.1.1\t%s\n' "$name" >> /etc/hosts
# Each laptop its own machine id (restores of one snapshot would all share the snapshot's).
rm -f /etc/machine-id
systemd-machine-id-setup >/dev/null
# journald keeps writing under the old id's directory, which journalctl no longer reads: restart it so the
# laptop's logs are readable (the tests grep them for leaked secrets).
systemctl restart systemd-journald
echo done
