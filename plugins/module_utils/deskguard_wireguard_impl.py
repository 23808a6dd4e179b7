# -*- coding: utf-8 -*-
"""Which WireGuard implementation the laptop's tunnel runs on: the kernel module, or userspace wireguard-go.

wg-quick tries the kernel first and, when `ip link add type wireguard` fails, quietly falls back to
wireguard-go if it is installed. The kit never lets that happen unseen: the policy says kernel, userspace or
auto, the choice is made here (read-only probes), refused with one clear message when the laptop cannot honour
it, written down for wg-quick in a systemd drop-in, and reported in the result. Laptop containers share a host
kernel without the module, so they run wireguard-go on /dev/net/tun (docs/vpn.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess

IMPLEMENTATIONS = ("auto", "kernel", "userspace")
USERSPACE_BINARY = "wireguard-go"
HEADER = "# Managed by deskguard (VPN-001); local edits are replaced at the next run.\n"


class ImplementationError(Exception):
    pass


def _probe(cmd):
    try:
        return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    except OSError:
        return 127


class Laptop(object):
    """What the laptop offers, probed without changing anything (tests give their own answers)."""

    def __init__(self, kernel_module=None, userspace_binary=None, tun=None, probe=_probe):
        self.kernel_module = kernel_has_wireguard(probe) if kernel_module is None else kernel_module
        self.userspace_binary = shutil.which(USERSPACE_BINARY) if userspace_binary is None else userspace_binary
        self.tun = os.path.exists("/dev/net/tun") if tun is None else tun


def kernel_has_wireguard(probe=_probe, sys_module="/sys/module/wireguard"):
    """Loaded or built in (/sys/module), or loadable from this kernel's modules (modprobe's dry run). A container
    sees its host's kernel: /sys/module is the host's and /lib/modules has no tree for the host's release."""
    return os.path.exists(sys_module) or probe(["modprobe", "--dry-run", "--quiet", "wireguard"]) == 0


def choose(requested, backend, laptop):
    """(implementation, reason) for the policy's request on this laptop, or ImplementationError."""
    if requested not in IMPLEMENTATIONS:
        raise ImplementationError("vpn_implementation must be one of %s, not %r" % (", ".join(IMPLEMENTATIONS),
                                                                                    requested))
    if requested == "kernel" or (requested == "auto" and laptop.kernel_module):
        if not laptop.kernel_module:
            raise ImplementationError(
                "vpn_implementation is kernel, but this laptop's kernel has no WireGuard module (a container shares "
                "its host's kernel); set vpn_implementation: userspace (wireguard-go) or auto; nothing was changed")
        return "kernel", "the kernel has the WireGuard module"
    if requested == "userspace" and laptop.kernel_module:
        raise ImplementationError(
            "vpn_implementation is userspace, but this kernel has the WireGuard module and wg-quick always uses it "
            "when it can; set vpn_implementation: kernel or auto; nothing was changed")
    if backend == "networkmanager":
        raise ImplementationError(
            "this laptop has no WireGuard kernel module and NetworkManager's WireGuard needs it; set vpn_backend: "
            "wg-quick to run wireguard-go; nothing was changed")
    missing = []
    if not laptop.userspace_binary:
        missing.append("wireguard-go is not installed (package wireguard-go)")
    if not laptop.tun:
        missing.append("/dev/net/tun is missing (a container needs the TUN device bound in)")
    if missing:
        raise ImplementationError("userspace WireGuard cannot run here: %s; the kernel has no WireGuard module "
                                  "either; nothing was changed" % "; ".join(missing))
    reason = "no WireGuard kernel module" + (" (vpn_implementation: auto)" if requested == "auto" else "")
    return "userspace", reason


def render_dropin(implementation):
    """wg-quick@.service drop-in naming the userspace implementation (None: no drop-in, the kernel module)."""
    if implementation != "userspace":
        return None
    return (HEADER + "# This laptop's kernel has no WireGuard module: wg-quick runs the userspace implementation.\n"
            "[Service]\nEnvironment=WG_QUICK_USERSPACE_IMPLEMENTATION=%s\n" % USERSPACE_BINARY)


def running_implementation(interface, run_dir="/var/run/wireguard"):
    """What the interface actually runs on: wireguard-go (and other userspace ones) leave a UAPI socket."""
    return "userspace" if os.path.exists(os.path.join(run_dir, interface + ".sock")) else "kernel"
