"""Fleet hosts: network namespaces with their own sshd. (To be implemented.)"""

from __future__ import annotations


def start_fleet(state, count, log=print):
    raise NotImplementedError


def stop_fleet_host(host):
    raise NotImplementedError
