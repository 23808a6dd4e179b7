"""The lab's VPN gateway: userspace wireguard-go in a network namespace of its own (`dgvpn-gw`; the host
kernel has no WireGuard module), reached by the lab VM at 10.0.2.2:RELAY_PORT through qemu's user network
and the UDP relay. Nothing here touches the default lab's bridge or namespaces."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

NETNS = "dgvpn-gw"
IFACE = "dgvpn0"
WG_PORT = 51820
RELAY_PORT = 2599      # UDP, in this helper's own range (the isolated lab's TCP forwards start at 2500)
ADDRESS = "10.77.0.1/24"


def _sh(*cmd, **kw):
    return subprocess.run(list(cmd), check=True, capture_output=True, text=True, **kw)


def in_ns(*cmd, check=True):
    return subprocess.run(["ip", "netns", "exec", NETNS, *cmd], check=check, capture_output=True, text=True)


@dataclass
class Gateway:
    public_key: str
    wg: subprocess.Popen
    relay: subprocess.Popen
    workdir: Path

    @property
    def endpoint(self) -> str:
        return f"10.0.2.2:{RELAY_PORT}"

    def peers(self) -> list[str]:
        return in_ns("wg", "show", IFACE, "peers").stdout.split()

    def handshakes(self) -> dict[str, int]:
        out = in_ns("wg", "show", IFACE, "latest-handshakes").stdout
        return {k: int(v) for k, v in (line.split("\t") for line in out.splitlines() if "\t" in line)}

    def stop(self) -> None:
        for proc in (self.relay, self.wg):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)
        Path(f"/var/run/wireguard/{IFACE}.sock").unlink(missing_ok=True)


def start() -> Gateway:
    subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)   # a leftover of an interrupted run
    _sh("ip", "netns", "add", NETNS)
    _sh("ip", "-n", NETNS, "link", "set", "lo", "up")
    workdir = Path(tempfile.mkdtemp(prefix="dgvpn-gw-"))
    key = workdir / "gateway.key"
    old = os.umask(0o077)
    try:
        key.write_text(_sh("wg", "genkey").stdout)
    finally:
        os.umask(old)
    public = _sh("wg", "pubkey", input=key.read_text()).stdout.strip()
    env = {**os.environ, "WG_PROCESS_FOREGROUND": "1"}
    wg = subprocess.Popen(["ip", "netns", "exec", NETNS, "wireguard-go", "-f", IFACE], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    relay = None
    try:
        for _ in range(50):
            if in_ns("ip", "link", "show", IFACE, check=False).returncode == 0 and \
                    Path(f"/var/run/wireguard/{IFACE}.sock").exists():
                break
            time.sleep(0.1)
        in_ns("wg", "set", IFACE, "listen-port", str(WG_PORT), "private-key", str(key))
        in_ns("ip", "addr", "add", ADDRESS, "dev", IFACE)
        in_ns("ip", "link", "set", IFACE, "up")
        relay = subprocess.Popen([sys.executable, str(Path(__file__).with_name("udprelay.py")), str(RELAY_PORT),
                                  NETNS, str(WG_PORT)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert relay.stdout.readline().strip() == "ready", relay.stderr.read() if relay.poll() else "relay silent"
    except BaseException:
        Gateway(public, wg, relay or wg, workdir).stop()
        raise
    return Gateway(public, wg, relay, workdir)
