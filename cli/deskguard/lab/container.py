"""Laptop containers: systemd-nspawn. (To be implemented.)"""

from __future__ import annotations


def start_containers(state, count, rootfs, log=print):
    raise NotImplementedError


def stop_container(host):
    raise NotImplementedError
