# -*- coding: utf-8 -*-
"""First boot of a laptop shipped to a home (docs/enrolment.md): make the device key and the WireGuard key
here, enrol with the token over HTTPS (the pinned CA), write the tunnel's wg-quick file and bring it up.

Installed by the enrolment package beside the agent's module_utils and run by deskguard-enrol.service
(`deskguard-enrol`) until it succeeds. Idempotent: a laptop that enrolled (its answer saved in ENROLLED) only
makes sure its tunnel runs; keys are made once and kept (onboarding's endpoint_agent and vpn roles find them
and keep them: the same paths). The token file is deleted after a successful enrolment (it is of no further use
here, and a token is a secret). Runs outside Ansible: stdlib, ``cryptography`` and the kit's own module_utils.
"""

from __future__ import annotations

import json
import os
import socket
import sys

try:  # inside Ansible / on the laptop and in unit tests (module_utils on sys.path)
    from ansible.module_utils import deskguard_agent_http as http
    from ansible.module_utils import deskguard_enrol as enrol
    from ansible.module_utils import deskguard_protocol as P
    from ansible.module_utils import deskguard_wireguard as wg
    from ansible.module_utils import deskguard_wireguard_impl as impl
    from ansible.module_utils.deskguard_files import replace_file
except ImportError:
    import deskguard_agent_http as http
    import deskguard_enrol as enrol
    import deskguard_protocol as P
    import deskguard_wireguard as wg
    import deskguard_wireguard_impl as impl
    from deskguard_files import replace_file

CONFIG = "/etc/deskguard-agent/enrol.json"
ENROLLED = "/var/lib/deskguard-agent/enrolled.json"
EXIT_RETRY = 75   # EX_TEMPFAIL: not enrolled yet (server away, refused for now); systemd tries again


class FirstBootError(Exception):
    """Cannot enrol now; the message is one line without any secret."""


def load_config(path=CONFIG):
    """The package's settings: server_url, ca_file, token_file, device_key, operator, hostname ("" = this
    laptop's), vpn_implementation, allow_http (lab only), timeout_seconds, and where things live."""
    try:
        with open(path) as fh:
            cfg = json.load(fh)
    except (OSError, ValueError) as exc:
        raise FirstBootError("cannot read %s: %s" % (path, getattr(exc, "strerror", None) or exc))
    for key in ("server_url", "token_file", "device_key"):
        if not isinstance(cfg.get(key), str) or not cfg[key]:
            raise FirstBootError("%s: %s is missing" % (path, key))
    if cfg["server_url"].startswith("http://") and not cfg.get("allow_http"):
        raise FirstBootError("%s: server_url is plain HTTP (allow_http is for a lab only)" % path)
    cfg.setdefault("ca_file", "")
    cfg.setdefault("timeout_seconds", 15)
    cfg.setdefault("vpn_implementation", "auto")
    cfg.setdefault("enrolled_file", ENROLLED)
    cfg.setdefault("wireguard_dir", "/etc/wireguard")
    cfg.setdefault("unit_dir", "/etc/systemd/system")
    return cfg


def this_hostname():
    return socket.gethostname().split(".")[0].lower()


def serial_number(path="/sys/class/dmi/id/product_serial"):
    try:
        with open(path) as fh:
            text = fh.read().strip()
    except OSError:
        return None
    return text[:128] or None


def os_release(path="/etc/os-release"):
    values = {}
    try:
        with open(path) as fh:
            for line in fh:
                key, sep, value = line.strip().partition("=")
                if sep:
                    values[key] = value.strip('"')
    except OSError:
        pass
    return (values.get("ID") or "debian").lower(), values.get("VERSION_ID") or None


def device_key(path):
    """The device's ECDSA P-256 key: made here once (0600 root), read back afterwards."""
    if not os.path.exists(path):
        key = P.generate_private_key()
        _write(path, P.private_key_pem(key), 0o600)
    with open(path, "rb") as fh:
        return P.load_private_key(fh.read())


def wg_public_key(paths, run=wg._run):
    """The WireGuard public key: the key is made here once (`wg genkey`, 0600 root), never sent anywhere."""
    return wg.public_key(paths, run) or wg.make_key(paths, run)


def enrol_once(cfg, key, wg_pub, now=None, request=None):
    """The server's answer (a checked dict) to one enrolment request. FirstBootError with the server's reason
    word otherwise (refused, unreachable, an answer that does not check out)."""
    try:
        with open(cfg["token_file"]) as fh:
            token = fh.read().strip()
    except OSError as exc:
        raise FirstBootError("no enrolment token in %s (%s): reinstall the enrolment package"
                             % (cfg["token_file"], exc.strerror))
    os_name, os_version = os_release(cfg.get("os_release", "/etc/os-release"))
    body = enrol.build_request(token, cfg.get("hostname") or this_hostname(), key, wg_pub,
                               serial=serial_number(cfg.get("serial_file", "/sys/class/dmi/id/product_serial")),
                               operator=cfg.get("operator") or None, os_name=os_name, os_version=os_version, now=now)
    url = cfg["server_url"].rstrip("/") + enrol.PATH
    try:
        resp = (request or http.request)("POST", url, body=body, timeout=float(cfg["timeout_seconds"]),
                                         limit=enrol.ANSWER_LIMIT, ca_file=cfg.get("ca_file") or None)
    except http.HttpFailure as exc:
        raise FirstBootError(str(exc))
    answer = resp.json()
    if not resp.ok:
        error = answer.get("error") if isinstance(answer, dict) else None
        raise FirstBootError("the server refused the enrolment: HTTP %d %s" % (resp.status, error or "-"))
    problem = enrol.check_answer(answer)
    if problem:
        raise FirstBootError("the server's answer is not an enrolment answer (%s)" % problem)
    return answer


def tunnel_files(answer, paths, implementation):
    """{path: content or None} of the tunnel: wg-quick's file (the key loaded by PostUp, never inline) and the
    userspace drop-in when this laptop has no WireGuard kernel module."""
    vpn = answer["vpn"]
    conf = wg.render_wg_quick({"address": vpn["address"], "mtu": vpn["mtu"], "dns": vpn["dns"],
                               "key_path": paths.key, "gateway_public_key": vpn["gateway_public_key"],
                               "endpoint": vpn["endpoint"], "allowed_ips": vpn["allowed_ips"],
                               "keepalive": vpn["keepalive"]})
    return {paths.conf: conf, paths.dropin: impl.render_dropin(implementation)}


def bring_up(cfg, answer, paths, run=wg._run, probe=impl._probe, laptop=None):
    """Write what changed and (re)start wg-quick@IFACE only then; enabled either way. True if anything changed."""
    implementation, _why = impl.choose(cfg.get("vpn_implementation", "auto"), "wg-quick", laptop or impl.Laptop())
    changed = False
    for path, content in tunnel_files(answer, paths, implementation).items():
        current = _read(path)
        if content is None and current is not None:
            os.unlink(path)
            changed = True
        elif content is not None and current != content:
            _write(path, content.encode(), 0o600 if path == paths.conf else 0o644)
            changed = True
    iface = answer["vpn"]["interface"]
    run(["systemctl", "daemon-reload"])
    run(["systemctl", "enable", "wg-quick@%s" % iface])
    if changed or probe(["systemctl", "is-active", "--quiet", "wg-quick@%s" % iface]) != 0:
        run(["systemctl", "restart", "wg-quick@%s" % iface])
    return changed


def run_firstboot(cfg, run=wg._run, probe=impl._probe, request=None, laptop=None, now=None):
    """One first-boot pass: ("enrolled" | "already", the answer). FirstBootError when it cannot (yet)."""
    enrolled = _load_json(cfg["enrolled_file"])
    state = "already"
    if enrolled is None or enrol.check_answer(enrolled):
        key = device_key(cfg["device_key"])
        paths = wg.Paths("wg0", config_dir=cfg["wireguard_dir"], unit_dir=cfg["unit_dir"])
        enrolled = enrol_once(cfg, key, wg_public_key(paths, run), now=now, request=request)
        _write(cfg["enrolled_file"], (json.dumps(enrolled, indent=1, sort_keys=True) + "\n").encode(), 0o600)
        state = "enrolled"
    paths = wg.Paths(enrolled["vpn"]["interface"], config_dir=cfg["wireguard_dir"], unit_dir=cfg["unit_dir"])
    try:
        bring_up(cfg, enrolled, paths, run=run, probe=probe, laptop=laptop)
    except (wg.WireGuardError, impl.ImplementationError) as exc:
        raise FirstBootError("enrolled, but the tunnel does not come up: %s" % exc)
    if os.path.exists(cfg["token_file"]):
        os.unlink(cfg["token_file"])   # spent here; never needed again on this laptop
    return state, enrolled


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    path = argv[0] if argv else CONFIG
    try:
        cfg = load_config(path)
        state, answer = run_firstboot(cfg)
    except FirstBootError as exc:
        print("deskguard-enrol: %s" % exc, file=sys.stderr)
        return EXIT_RETRY
    print("deskguard-enrol: %s as %s (%s), VPN address %s, state %s" % (
        "enrolled" if state == "enrolled" else "already enrolled", answer["hostname"], answer["device_uuid"],
        answer["vpn"]["address"], answer["state"]))
    return 0


def _read(path):
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


def _load_json(path):
    text = _read(path)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _write(path, data, mode):
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    replace_file(path, data, mode)
