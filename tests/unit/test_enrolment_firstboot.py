"""The laptop's first boot (plugins/module_utils/deskguard_firstboot.py) against a real `deskguard serve` over
HTTPS with the pinned CA: keys made on the laptop (the real `wg`), enrolment, the wg-quick file and the
userspace drop-in written, the tunnel (systemctl, recorded) started; a second run changes nothing and asks
nothing; a revoked token enrols nothing; another CA is refused."""

from __future__ import annotations

import importlib.util
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import sitetools

from deskguard.site import module_utils

pytestmark = pytest.mark.unit
P = module_utils("deskguard_protocol")
FB = module_utils("deskguard_firstboot")
IMPL = module_utils("deskguard_wireguard_impl")
_spec = importlib.util.spec_from_file_location("wincerts", Path(__file__).parents[1] / "windows" / "certs.py")
certs = sys.modules.setdefault("wincerts", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(certs)
sys.path.insert(0, str(Path(__file__).parent))
from test_enrolment_serve import env, make_site  # noqa: E402


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca, ca_key = certs.make_ca(folder / "site")
    other, _ = certs.make_ca(folder / "other", cn="someone else's CA")
    return {"ca": ca, "server": certs.issue(folder / "site", ca, ca_key), "other_ca": other}


@pytest.fixture(scope="module")
def server(tmp_path_factory, pki):
    from deskguard.store import Store

    site = make_site(tmp_path_factory.mktemp("site"))
    with Store.open(site) as store:
        tokens = {"good": store.create_enrolment_token(uses=3), "revoked": store.create_enrolment_token(uses=3)}
        store.revoke_enrolment_token(tokens["revoked"][0].id)
    with sitetools.serving(site, env(), tls=(pki["server"].cert, pki["server"].key)) as port:
        yield {"site": site, "url": f"https://127.0.0.1:{port}", "tokens": {k: v[1] for k, v in tokens.items()}}


class Systemd:
    """systemctl recorded (the test runs no units); the real `wg` makes and reads keys."""

    def __init__(self):
        self.calls, self.active = [], False

    def run(self, cmd, stdin=None):
        if cmd[0] == "systemctl":
            self.calls.append(" ".join(cmd[1:]))
            if cmd[1] == "restart":
                self.active = True
            return ""
        return FB.wg._run(cmd, stdin)

    def probe(self, cmd):
        return 0 if self.active else 3


def laptop_config(tmp_path, server, pki, token="good", ca="ca", hostname="home-001"):
    root = tmp_path / "laptop"
    (root / "etc").mkdir(parents=True, exist_ok=True)
    token_file = root / "etc" / "enrolment-token"
    token_file.write_text(server["tokens"][token] + "\n")
    token_file.chmod(0o600)
    (root / "serial").write_text("PF3ABC12\n")
    (root / "os-release").write_text('ID=debian\nVERSION_ID="13"\n')
    cfg = {"server_url": server["url"], "ca_file": str(pki[ca].cert), "token_file": str(token_file),
           "device_key": str(root / "etc" / "device.key"), "hostname": hostname, "operator": "tanaka",
           "enrolled_file": str(root / "var" / "enrolled.json"), "wireguard_dir": str(root / "etc" / "wireguard"),
           "unit_dir": str(root / "etc" / "systemd"), "serial_file": str(root / "serial"),
           "os_release": str(root / "os-release"), "vpn_implementation": "auto"}
    path = root / "enrol.json"
    path.write_text(json.dumps(cfg))
    return FB.load_config(str(path)), root


NO_MODULE = IMPL.Laptop(kernel_module=False, userspace_binary="/usr/bin/wireguard-go", tun=True)


def test_first_boot_enrols_writes_the_tunnel_and_a_second_boot_changes_nothing(server, pki, tmp_path):
    from deskguard.store import Store

    cfg, root = laptop_config(tmp_path, server, pki)
    systemd = Systemd()
    state, answer = FB.run_firstboot(cfg, run=systemd.run, probe=systemd.probe, laptop=NO_MODULE)
    assert state == "enrolled" and answer["hostname"] == "home-001" and answer["vpn"]["address"] == "10.77.0.2"
    conf = (root / "etc" / "wireguard" / "wg0.conf").read_text()
    key_file = root / "etc" / "wireguard" / "wg0.key"
    private = key_file.read_text().strip()
    assert "Address = 10.77.0.2/32" in conf and f"PostUp = wg set %i private-key {key_file}" in conf
    assert "Endpoint = vpn.example.com:51820" in conf and private not in conf
    for secret in (key_file, root / "etc" / "device.key", root / "etc" / "wireguard" / "wg0.conf",
                   root / "var" / "enrolled.json"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    assert "WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go" in (
        root / "etc" / "systemd" / "wg-quick@wg0.service.d" / "deskguard-userspace.conf").read_text()
    assert systemd.calls == ["daemon-reload", "enable wg-quick@wg0", "restart wg-quick@wg0"]
    assert not (root / "etc" / "enrolment-token").exists()        # spent: deleted after success
    wg_pub = subprocess.run(["wg", "pubkey"], input=private + "\n", capture_output=True, text=True).stdout.strip()
    with Store.open(server["site"]) as store:
        d = store.require_device("home-001")
        assert (d.serial, d.os, d.os_version, d.operator) == ("PF3ABC12", "debian", "13", "tanaka")
        with open(root / "etc" / "device.key", "rb") as fh:
            assert d.agent_public_key == P.public_key_pem(P.load_private_key(fh.read())).decode()
        assert store.vpn_peer(d.uuid).public_key == wg_pub            # only the public key left the laptop

    # Second boot: enrolled already; no request at all, nothing rewritten, no restart of a running tunnel.
    def no_request(*_a, **_kw):
        raise AssertionError("a second boot must not ask the server")

    systemd.calls.clear()
    before = {p: p.read_bytes() for p in (root / "etc").rglob("*") if p.is_file()}
    state, again = FB.run_firstboot(cfg, run=systemd.run, probe=systemd.probe, laptop=NO_MODULE, request=no_request)
    assert state == "already" and again == answer
    assert systemd.calls == ["daemon-reload", "enable wg-quick@wg0"]
    assert {p: p.read_bytes() for p in (root / "etc").rglob("*") if p.is_file()} == before


def test_a_revoked_token_enrols_nothing_and_keeps_trying(server, pki, tmp_path):
    from deskguard.store import Store

    cfg, root = laptop_config(tmp_path, server, pki, token="revoked", hostname="home-002")
    systemd = Systemd()
    with pytest.raises(FB.FirstBootError, match="the server refused the enrolment: HTTP 403 revoked"):
        FB.run_firstboot(cfg, run=systemd.run, probe=systemd.probe, laptop=NO_MODULE)
    assert systemd.calls == [] and not (root / "var" / "enrolled.json").exists()
    assert not (root / "etc" / "wireguard" / "wg0.conf").exists()
    assert (root / "etc" / "enrolment-token").exists()                 # kept: an admin may fix the server side
    with Store.open(server["site"]) as store:
        assert store.get_device("home-002") is None
    # The launcher's exit code says "try again later" to systemd (Restart=on-failure), one line on stderr.
    proc = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import "
                           "deskguard_firstboot as f; sys.exit(f.main([sys.argv[2]]))",
                           str(Path(FB.__file__).parent), str(root / "enrol.json")], capture_output=True, text=True)
    assert proc.returncode == FB.EXIT_RETRY and proc.stderr.count("\n") == 1
    assert "HTTP 403 revoked" in proc.stderr and "dgenrol-" not in proc.stderr


def test_a_server_certificate_from_another_ca_is_refused(server, pki, tmp_path):
    cfg, root = laptop_config(tmp_path, server, pki, ca="other_ca", hostname="home-003")
    with pytest.raises(FB.FirstBootError, match="TLS certificate is refused: unable to get local issuer"):
        FB.run_firstboot(cfg, run=Systemd().run, probe=Systemd().probe, laptop=NO_MODULE)
    assert not (root / "var" / "enrolled.json").exists()


def test_plain_http_is_refused_unless_allowed(tmp_path):
    path = tmp_path / "enrol.json"
    path.write_text(json.dumps({"server_url": "http://deskguard.example.com", "token_file": "t",
                                "device_key": "k"}))
    with pytest.raises(FB.FirstBootError, match="plain HTTP"):
        FB.load_config(str(path))
    path.write_text(json.dumps({"server_url": "http://10.0.0.1:8080", "token_file": "t", "device_key": "k",
                                "allow_http": True}))
    assert FB.load_config(str(path))["allow_http"] is True
