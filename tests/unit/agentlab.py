"""Test bench for the on-device agent without a laptop: real LUKS2 image files (cryptsetup header operations
need no device-mapper), real keys, and a real HTTP server on loopback that can answer well, slowly, with
garbage, or not at all. Imported as `agentlab` (tests/unit is on sys.path through pytest's rootdir conftest)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from sitetools import free_port as dead_port  # noqa: F401  (a loopback port nothing listens on)

MODULE_UTILS = Path(__file__).resolve().parents[2] / "plugins" / "module_utils"
if str(MODULE_UTILS) not in sys.path:
    sys.path.insert(0, str(MODULE_UTILS))

import deskguard_agent as agent_mod  # noqa: E402
import deskguard_agent_linux as linux  # noqa: E402
import deskguard_luks as dl  # noqa: E402
import deskguard_protocol as proto  # noqa: E402

LIGHT = ("--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000")
USER_KEY = b"operator-passphrase-1"
KEYFILE = b"k" * 64
RECOVERY = b"escrowed-recovery-key-2"
DEVICE_UUID = "0b6c9d55-8d1e-4f3a-9a51-3e1f0d2c7a10"


def cryptsetup(*args, key=b""):
    return subprocess.run(["cryptsetup", *args], input=key, capture_output=True)


def make_disk(path: Path) -> tuple[str, str]:
    """A LUKS2 image like a managed laptop's: slot 0 user passphrase, 1 boot key file, 2 escrowed recovery key.
    Returns (luks uuid, path)."""
    with open(path, "wb") as fh:
        fh.truncate(20 * 1024 * 1024)
    r = cryptsetup("luksFormat", "-q", "--type", "luks2", *LIGHT, "--key-slot", "0", "--key-file", "-",
                   "--keyfile-size", str(len(USER_KEY)), str(path), key=USER_KEY)
    assert r.returncode == 0, r.stderr
    for slot, key in ((1, KEYFILE), (2, RECOVERY)):
        r = cryptsetup("luksAddKey", "-q", *LIGHT, "--key-slot", str(slot), "--key-file", "-", "--keyfile-size",
                       str(len(USER_KEY)), "--new-keyfile-size", str(len(key)), str(path), "-", key=USER_KEY + key)
        assert r.returncode == 0, r.stderr
    return cryptsetup("luksUUID", str(path)).stdout.decode().strip(), str(path)


def add_tpm_token(path: str, slot: int = 1) -> None:
    """A clevis token on slot (as `clevis luks bind` leaves it; the JWE is never decrypted here)."""
    token = {"type": "clevis", "keyslots": [str(slot)],
             "jwe": {"protected": "eyJjbGV2aXMiOnsicGluIjoidHBtMiJ9fQ", "ciphertext": "x", "encrypted_key": "",
                     "iv": "y", "tag": "z"}}
    r = cryptsetup("token", "import", path, "--json-file", "-", key=json.dumps(token).encode())
    assert r.returncode == 0, r.stderr


def tokens(path: str) -> list[int]:
    return sorted(int(t) for t in dl.luks_dump(path).get("tokens", {}))


def slots(path: str) -> list[int]:
    return sorted(int(s) for s in dl.luks_dump(path).get("keyslots", {}))


def opens(path: str, key: bytes) -> bool:
    return cryptsetup("open", "--test-passphrase", "--disable-external-tokens", "--key-file", "-",
                      "--keyfile-size", str(len(key)), path, key=key).returncode == 0


def fingerprint(path: str, slot: int) -> str:
    return dl.slot_fingerprint(dl.luks_dump(path), slot)


class Actions:
    """The real Linux actions on image files; users are not touched and power is only recorded."""

    def __init__(self, etc="/nonexistent-etc"):
        self.powered = []
        self.wiped = 0
        self.etc = etc      # the laptop's /etc (its crypttab names the boot key file); never the host's

    def wipe(self, plan):
        self.wiped += 1
        return linux.wipe(plan, users=[])

    def lock(self, plan):
        return linux.lock(plan, etc=self.etc)

    def power(self, action):
        self.powered.append(action)
        return True


class Server:
    """Loopback HTTP server. mode: ok | slow | garbage | error | silent. Orders are served from `orders`
    ({device uuid: bytes}); POSTs are recorded in `posts` [(path, body)]."""

    def __init__(self):
        self.mode = "ok"
        self.orders: dict[str, bytes] = {}
        self.posts: list[tuple[str, bytes]] = []
        self.ack_status = 200
        bench = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _garbage_or_slow(self):
                if bench.mode == "garbage":
                    self.wfile.write(b"\x00\xffNOT HTTP AT ALL\r\n\r\n" * 50)
                    return True
                if bench.mode == "slow":
                    self.send_response(200)
                    self.send_header("Content-Length", "4096")
                    self.end_headers()
                    for _ in range(40):
                        try:
                            self.wfile.write(b"{")
                            self.wfile.flush()
                        except OSError:
                            return True
                        time.sleep(0.1)
                    return True
                if bench.mode == "silent":
                    time.sleep(3)
                    return True
                return False

            def do_GET(self):
                if self._garbage_or_slow():
                    return
                body = bench.orders.get(self.path.rsplit("/", 1)[-1])
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                bench.posts.append((self.path, body))
                if self.path.startswith("/orders/"):    # a signed fetch: deskguard serve checks it (test_serve)
                    return self.do_GET()
                if self._garbage_or_slow():
                    return
                status = bench.ack_status if self.path == "/v1/ack" else 200
                out = json.dumps({"ok": True} if status == 200 else {"error": "store_unavailable"}).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def acks(self, device_public_key):
        """The acknowledgements received, verified with the device's public key."""
        return [proto.open_envelope(b, device_public_key, proto.LIMITS["ack"]) for p, b in self.posts if p == "/v1/ack"]

    def fetches(self, device_public_key):
        return [proto.open_envelope(b, device_public_key, proto.LIMITS["fetch"])
                for p, b in self.posts if p.startswith("/orders/")]

    def checkins(self, device_public_key):
        return [proto.open_envelope(b, device_public_key, proto.LIMITS["checkin"])
                for p, b in self.posts if p == "/v1/checkin"]




def write_device_key(path: Path):
    key = proto.generate_private_key()
    path.write_bytes(proto.private_key_pem(key))
    path.chmod(0o600)
    return key


def config(tmp_path: Path, server_url: str, order_key, device_key_path: Path, **extra) -> dict:
    cfg = {"device_uuid": DEVICE_UUID, "orders_url": server_url + "/orders", "server_url": server_url,
           "order_public_key": proto.public_key_pem(order_key).decode() if order_key is not None else None,
           "device_key": str(device_key_path),
           "state_dir": str(tmp_path / "state"), "timeout_seconds": 2, "deadman_days": 0,
           "escrowed_keyslots": {}, "installed_at": None, "config_mtime": 0, "allow_http": True}
    cfg.update(extra)
    return cfg


def order(order_key, volumes, action="wipe", device_uuid=DEVICE_UUID, **kw) -> tuple[dict, bytes]:
    payload = proto.build_order(device_uuid, action, volumes, **kw)
    return payload, proto.sign(payload, order_key)


def make_agent(cfg, volumes, actions, now=None):
    return agent_mod.Agent(cfg, volumes=volumes, now=now, actions=actions,
                           posture=lambda: ({"os": {"id": "debian"}}, {}, {"os": 0.0}), log=lambda m: None)
