"""The exit-code matrix: every command x {success, a host failing, unreachable, usage error, broken site} gives
the documented code (0 ok; 1 a host failed; 2 usage error; 3 unreachable; 4 the controller cannot do it) and,
when it fails, one line "deskguard: …" on stderr, never a traceback.

Which cells are covered where (a cell that needs a real laptop is not faked here):
- usage error, every command: `test_every_command_refuses_an_unknown_option` (click's parser), plus the cases of
  issue 19 each with its exact message below; wipe's refusals in test_wipe_cli.py, onboard's in
  test_onboard_cli.py, comply's in test_comply_cli.py / test_comply_bad_input.py.
- broken site (a folder that is no site): every command that reads a site, `test_every_site_command_…`.
- success: the read-only commands on a fresh site here (`test_read_only_commands_succeed_on_a_fresh_site`);
  `comply` exit 0 needs a compliant laptop: tests/container/test_comply.py; onboard 0: tests/container and
  tests/vm; wipe 0: test_wipe_cli.py (published) and tests/vm/test_wipe_vm.py (delivered).
- a host failing (1): comply here on a laptop whose collection fails; wipe when delivery fails in
  test_wipe_cli.py; keys verify 1 on the lab VM (tests/vm/test_onboard_vm.py).
- unreachable (3): comply here (a laptop on a closed port, no check-in); onboard's preflight in
  test_onboard_cli.py / test_preflight.py.
- lab/demo cells: tests/unit/test_demo_cli.py, test_lab_*.py and the container tier (they start a lab).
"""

from __future__ import annotations

import base64
import socket
from pathlib import Path

import pytest
from sitetools import OFFICER_PASSPHRASE, cli_commands
from sitetools import deskguard_sqlite as deskguard

from deskguard import term
from deskguard.site import inventory
from deskguard.cli import main

pytestmark = pytest.mark.unit

# Commands that start a lab or a guided run; their cells are in the lab and demo tests (see above).
LAB = ("lab", "demo")


def leaves():
    return [path for path, _cmd in cli_commands()]


def cli(capsys, *argv) -> tuple[int, str, str]:
    """deskguard ARGV in this process, through the real entry point: (exit code, stdout, stderr)."""
    term.set_verbosity(0, False)
    try:
        main(list(argv))
    except SystemExit as exc:
        code = exc.code
    else:  # main always exits
        raise AssertionError("deskguard.cli.main returned without an exit code")
    out, err = capsys.readouterr()
    return code, out, err


def refused(result, code: int, text: str = "") -> None:
    got, out, err = result
    assert got == code, (got, out, err)
    assert err.count("\n") == 1 and err.startswith("deskguard: "), err
    assert text in err and "Traceback" not in err, err


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.delenv("DESKGUARD_DB_URL", raising=False)
    monkeypatch.delenv("DESKGUARD_SITE", raising=False)
    (tmp_path / "pw").write_text(OFFICER_PASSPHRASE + "\n")
    root = tmp_path / "site"
    assert deskguard("init", "--officer-passphrase-file", str(tmp_path / "pw"), site=root).returncode == 0
    return root


@pytest.fixture(scope="module")
def officer(tmp_path_factory):
    """A real officer key and its passphrase file, outside any site (keys show checks them first)."""
    from deskguard.recovery import keys

    where = tmp_path_factory.mktemp("officer")
    keys.init_keys(where, OFFICER_PASSPHRASE)
    (where / "pass").write_text(OFFICER_PASSPHRASE + "\n")
    [key] = [p for p in keys.keys_dir(where).iterdir() if p.name == keys.ESCROW_PRIVATE]
    return {"{KEY}": str(key), "{PASS}": str(where / "pass")}


# ------------------------------------------------------------------------------------------------ usage (2)

@pytest.mark.parametrize("path", [p for p in leaves() if p.split()[0] not in LAB])
def test_every_command_refuses_an_unknown_option(capsys, path):
    refused(cli(capsys, *path.split(), "--no-such-option"), 2, "No such option")


# Minimal arguments that get each command past its parser, against a folder that is no site.
SITE_COMMANDS = {
    "announce send": ["hello", "--to", "all"], "announce status": [],
    "audit checkpoint": [], "audit list": [], "audit log": [], "audit verify": [], "comply": [], "devices list": [],
    "devices remove": ["lt-1", "--yes"], "devices show": ["lt-1"], "devices approve": ["lt-1"],
    "enrolment create": [], "enrolment list": [], "enrolment process": [],
    "enrolment package": ["--token", "dgenrol-" + "A" * 43, "--ssh-public-key", "/etc/hostname", "--output", "/tmp/x.deb"], "enrolment revoke": ["deadbeef"],
    "keys destroy": ["lt-1", "--reason", "r", "--yes", "--confirm", "lt-1"], "keys rotate": ["lt-1"],
    "keys show": ["lt-1", "--escrow-key", "{KEY}", "--passphrase-file", "{PASS}"], "keys verify": [], "netcheck": ["lt-1"],
    "onboard": ["lt-1", "--address", "127.0.0.1", "--os", "debian", "--user", "tanaka", "--yes"],
    "orders cancel": ["deadbeef"], "orders list": [], "orders settle": [], "orders show": ["deadbeef"],
    "serve": [], "usb approve": ["1234:5678", "--host", "lt-1", "--reason", "r"], "usb list": ["lt-1"],
    "vpn gateway-config": [], "vpn list": [], "vpn push-gateway": [], "vpn rotate": ["lt-1"],
    "wipe": ["lt-1", "--reason", "r", "--yes", "--confirm", "lt-1"],
}


def test_the_site_command_list_is_complete():
    # installer preseed writes a file for the Debian installer and reads no site.
    assert set(SITE_COMMANDS) | {"completion", "init", "installer preseed"} == \
        {p for p in leaves() if p.split()[0] not in LAB}


@pytest.mark.parametrize("path", sorted(SITE_COMMANDS))
def test_every_site_command_on_a_folder_that_is_no_site_says_run_init(capsys, tmp_path, monkeypatch, officer,
                                                                      path):
    """Broken site: one line naming `deskguard init`, exit 4 (as a missing store always said), whatever the
    command reads first (comply once sent such a folder to `deskguard onboard`)."""
    monkeypatch.delenv("DESKGUARD_DB_URL", raising=False)
    args = [officer.get(a, a) for a in SITE_COMMANDS[path]]
    got = cli(capsys, *path.split(), *args, "--site", str(tmp_path))
    if got[0] == 2 and any(t in got[2] for t in ("Missing", "No such option", "Invalid value")):
        pytest.fail(f"the test's arguments for {path} do not parse: {got[2]}")
    refused(got, 4, "run `deskguard init` first")
    assert list(tmp_path.iterdir()) == []  # nothing created in a folder that is no site


def test_issue_19_bad_input_each_gets_its_one_line(capsys, site):
    long_label = "a" * 64
    refused(cli(capsys, "onboard", "lap-x", "--address", long_label, "--os", "debian", "--user", "tanaka",
                "--site", str(site)), 2, f"--address '{long_label}' is not an IP address or a DNS name")
    refused(cli(capsys, "audit", "log", "--limit", "99999999999999999999", "--site", str(site)), 2,
            "'--limit': 99999999999999999999 is not in the range 1<=x<=1000000")
    refused(cli(capsys, "vpn", "gateway-config", "--output", "/proc/self/mem", "--site", str(site)), 2,
            "'--output': /proc/self/mem: cannot write in /proc/self")
    refused(cli(capsys, "serve", "--tls-cert", "/etc/passwd", "--tls-key", "/etc/passwd", "--site", str(site)), 2,
            "--tls-cert /etc/passwd / --tls-key /etc/passwd: not a PEM certificate and its private key")
    refused(cli(capsys, "comply", "--output", "/proc/self/no-such-folder/r.json", "--site", str(site)), 2,
            "'--output': /proc/self/no-such-folder/r.json: cannot write in /proc/self")
    refused(cli(capsys, "vpn", "push-gateway", "--site", str(site)), 2,
            "no VPN gateway in the inventory (group vpn_gateways): nothing to push")
    # With a gateway but no VPN in the policy: said here, before the playbook (whose peer-list lookup failed
    # with a message that did not say why).
    inventory.add_host(site, "gw-1", {"ansible_host": "192.0.2.10"}, group="vpn_gateways")
    refused(cli(capsys, "vpn", "push-gateway", "--site", str(site)), 2, "invalid VPN endpoint ''")


# ----------------------------------------------------------------------------------------------- success (0)

def test_read_only_commands_succeed_on_a_fresh_site(capsys, site, tmp_path):
    for argv in (["devices", "list"], ["audit", "log"], ["audit", "verify"], ["orders", "list"],
                 ["orders", "settle"], ["vpn", "list"], ["completion", "bash"]):
        code, _out, err = cli(capsys, *argv, *([] if argv[0] == "completion" else ["--site", str(site)]))
        assert code == 0 and "Traceback" not in err, (argv, err)


def test_output_says_where_it_wrote(capsys, site):
    policy = site / "inventory" / "group_vars" / "all" / "policy.yml"
    gateway_key = base64.b64encode(bytes(range(32))).decode()
    policy.write_text(policy.read_text().replace('vpn_endpoint: ""', 'vpn_endpoint: "vpn.example.com:51820"')
                      .replace('vpn_gateway_public_key: ""', f'vpn_gateway_public_key: "{gateway_key}"'))
    target = site / "peers.conf"
    code, out, err = cli(capsys, "vpn", "gateway-config", "--output", str(target), "--site", str(site))
    assert code == 0 and out == "", err
    assert err == f"the gateway's 0 peer(s) written to {target}\n" and target.exists()
    deeper = site / "gw" / "wg0.conf"  # a missing folder is made, and said (it once was, silently)
    code, out, err = cli(capsys, "vpn", "gateway-config", "--output", str(deeper), "--site", str(site))
    assert code == 0 and err == f"the gateway's 0 peer(s) written to {deeper} (folder {deeper.parent} created)\n"


# ---------------------------------------------------------------------- comply: 1, 3, 2, counts and -q

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_laptop(site: Path, name: str) -> None:
    """A laptop whose collection fails at once: Ansible really runs its 'python', a script that exits 1."""
    interp = site / f"{name}.sh"
    interp.write_text("#!/bin/sh\nexit 1\n")
    interp.chmod(0o755)
    inventory.add_host(site, name, {"ansible_connection": "local", "ansible_python_interpreter": str(interp),
                                    "deskguard_comply_timeout_seconds": 5})


def test_comply_a_failing_host_is_1_and_the_display_counts_every_host(site):
    for name in ("lt-a", "lt-b", "lt-c"):
        fake_laptop(site, name)
    proc = deskguard("comply", site=site)
    assert proc.returncode == 1, proc.stderr
    assert "== comply: 3 host(s)" in proc.stderr and "Traceback" not in proc.stderr
    limited = deskguard("comply", "--limit", "lt-a:lt-b", site=site)
    assert limited.returncode == 1 and "== comply: 2 host(s)" in limited.stderr, limited.stderr
    # -q changes what is shown, never the verdict (it once failed every run with exit 4 and no reason).
    quiet = deskguard("-q", "comply", "--limit", "lt-a", site=site)
    assert quiet.returncode == 1 and "== comply" not in quiet.stderr, quiet.stderr
    assert "lt-a" in quiet.stdout and "failed" in quiet.stdout


def test_comply_an_unreachable_host_is_3(site):
    inventory.add_host(site, "lt-gone", {"ansible_host": "127.0.0.1", "ansible_port": _closed_port(),
                                         "ansible_user": "nobody"})
    proc = deskguard("-q", "comply", "--format", "json", site=site)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr


def test_comply_a_limit_that_matches_nothing_is_a_usage_error(site):
    fake_laptop(site, "lt-a")
    proc = deskguard("comply", "--limit", "nosuch", site=site)
    assert proc.returncode == 2 and proc.stderr == (
        "deskguard: --limit nosuch matches no laptop in the inventory (see `deskguard devices list`)\n")
