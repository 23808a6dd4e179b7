"""The built-in lab: laptop VMs (qemu/TCG), laptop containers (systemd-nspawn) and fleet hosts (netns + sshd)."""
