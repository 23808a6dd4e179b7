"""A UDP relay from the host's loopback into a network namespace: the lab VM reaches the host at 10.0.2.2
through qemu's user network (which lands on 127.0.0.1), while the lab gateway lives in its own namespace.

usage: python udprelay.py LISTEN_PORT NETNS_NAME TARGET_PORT
One socket is opened here (host namespace), then the process enters the namespace and opens the other; a socket
keeps the namespace it was made in, so one process bridges both. One client at a time (one lab VM).
"""

from __future__ import annotations

import ctypes
import os
import select
import socket
import sys

CLONE_NEWNET = 0x40000000


def main() -> None:
    listen_port, netns, target_port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    outside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    outside.bind(("127.0.0.1", listen_port))
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")
    os.close(fd)
    inside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    inside.connect(("127.0.0.1", target_port))
    print("ready", flush=True)
    client = None
    while True:
        ready, _, _ = select.select([outside, inside], [], [])
        if outside in ready:
            data, client = outside.recvfrom(65535)
            inside.send(data)
        if inside in ready:
            try:
                data = inside.recv(65535)
            except ConnectionRefusedError:   # the gateway is not listening yet: drop, WireGuard retries
                continue
            if client is not None:
                outside.sendto(data, client)


if __name__ == "__main__":
    main()
