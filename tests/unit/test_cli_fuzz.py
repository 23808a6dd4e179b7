"""Fuzz the CLI's options and arguments (odd host names, huge numbers, /proc and missing folders, unicode, empty
strings) through the real entry point, in this process: every command ends with a documented exit code and, when
it refuses, one line "deskguard: …" on stderr, never a traceback, and nothing in the site's inventory or store
changes.

Bounded for the unit tier: a fixed number of examples per command, derandomized and without Hypothesis' example
database, so CI runs the same examples every time. What it leaves out, and why: `lab` and `demo` (they start a
lab), `serve` with arguments that are valid (it would start serving; its bad TLS pair and bind are in
test_cli_exit_codes.py and test_serve.py), `init` (it writes the site it is given). No laptop answers: the site
has a device in its store but no laptop in its inventory, and the network probe is replaced by one that says
"unreachable", so nothing here reaches the network.
"""

from __future__ import annotations

import hashlib
import sqlite3

import clirun
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sitetools import OFFICER_PASSPHRASE

from deskguard import term
from deskguard.cli import main

pytestmark = pytest.mark.unit

DOCUMENTED = {0, 1, 2, 3, 4}
FUZZ = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

odd_text = st.one_of(
    st.sampled_from(["", " ", "-", "--", "lt-1", "LT-1", "lt_1", "a" * 64, "a." * 130, "é", "lap\x00top", "x;id",
                     "../../etc/passwd", "*", "!all", "~[", "@/proc/self/mem", "all", "lt-1,lt-2", "🙂",
                     "\u202etxt", "99999999999999999999", "-1", "0", "nan"]),
    st.text(min_size=0, max_size=80))
numbers = st.one_of(st.sampled_from(["0", "-1", "1", "65536", "99999999999999999999", "1e9", "", "٣"]),
                    st.integers(min_value=-2**70, max_value=2**70).map(str))
paths = st.sampled_from(["/proc/self/mem", "/proc/1/no/such", "/nonexistent/folder/out.txt", "", " ", "/",
                         "/dev/full", "/etc/passwd", "/tmp", "é/ü.txt", "/proc/self/status"])


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """An initialised site whose store knows lt-1 (no agent, no escrow) and whose inventory has no laptop."""

    root = tmp_path_factory.mktemp("fuzz") / "site"
    secret = root.parent / "pw"
    secret.write_text(OFFICER_PASSPHRASE + "\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(root.parent)}
    proc = clirun.deskguard("init", "--site", root, "--officer-passphrase-file", secret, env=env)
    assert proc.returncode == 0, proc.stderr
    from deskguard.store import Store

    with Store.open(root) as store:
        store.register_device("lt-1", "debian", "127.0.0.1", 9, "dgadmin", "tanaka")
    return root


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    from deskguard.onboarding import preflight

    def unreachable(address, port, timeout):
        raise preflight.Unreachable(f"{address}:{port} is not reachable (no network in the fuzz test)")

    monkeypatch.setattr(preflight, "tcp_reach", unreachable)
    monkeypatch.delenv("DESKGUARD_DB_URL", raising=False)
    monkeypatch.delenv("DESKGUARD_SITE", raising=False)


def snapshot(site) -> dict:
    """What must not change: every inventory file's bytes, and the store's rows that commands write."""
    files = {str(p.relative_to(site)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted((site / "inventory").rglob("*")) if p.is_file() and p.name != ".lock"}
    with sqlite3.connect(site / ".deskguard" / "deskguard.db") as db:
        rows = {t: db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()  # noqa: S608 (fixed table names)
                for t in ("devices", "orders", "secrets", "audit", "vpn_peers", "compliance_runs")}
    return {"files": files, "rows": rows}


def run(capsys, site, argv: list[str]) -> None:
    """One example: a documented code, one clear line when it refuses, no traceback, nothing changed."""
    before = snapshot(site)
    term.set_verbosity(0, False)
    try:
        main([*argv, "--site", str(site)])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert code in DOCUMENTED, (argv, code, err)
    assert "Traceback" not in err, (argv, err)
    if code != 0:
        assert err.endswith("\n") and err.splitlines()[-1].startswith("deskguard: "), (argv, err)
        assert "None" not in err.splitlines()[-1], (argv, err)
    assert snapshot(site) == before, argv


@FUZZ
@given(limit=odd_text, since=odd_text, fmt=st.sampled_from(["table", "json", "csv", "junit", "html"]),
       output=st.one_of(st.none(), paths))
def test_comply(capsys, site, limit, since, fmt, output):
    argv = ["comply", "--limit", limit, "--format", fmt] + (["--since", since] if since else [])
    run(capsys, site, argv + (["--output", output] if output is not None else []))


@FUZZ
@given(limit=numbers, since=odd_text, target=odd_text, fmt=st.sampled_from(["table", "csv", "json"]))
@example(limit="99999999999999999999", since="", target="", fmt="table")  # issue 19: OverflowError
def test_audit_log(capsys, site, limit, since, target, fmt):
    run(capsys, site, ["audit", "log", "--limit", limit, "--since", since, "--target", target, "--format", fmt])


@FUZZ
@given(host=odd_text, address=odd_text, port=numbers, user=odd_text, os_name=st.sampled_from(["debian", "windows"]))
@example(host="lap-x", address="a" * 64, port="22", user="tanaka", os_name="debian")  # issue 19: idna UnicodeError
def test_onboard(capsys, site, host, address, port, user, os_name):
    run(capsys, site, ["onboard", host, "--address", address, "--port", port, "--user", user, "--os", os_name,
                       "--yes"])


@FUZZ
@given(host=odd_text, reason=odd_text, mode=st.sampled_from(["wipe", "lock"]), confirm=odd_text,
       no_run=st.booleans())
def test_wipe(capsys, site, host, reason, mode, confirm, no_run):
    confirm = confirm if confirm != host else confirm + "x"  # a matching pair is a real order (test_wipe_cli)
    run(capsys, site, ["wipe", host, "--reason", reason, "--mode", mode, "--yes", "--confirm", confirm]
        + (["--no-run"] if no_run else []))


@FUZZ
@given(fmt=st.sampled_from(["wg-quick", "networkd", "json"]), output=paths, policy=paths)
@example(fmt="wg-quick", output="/proc/self/mem", policy="")  # issue 19: FileNotFoundError
def test_vpn_gateway_config(capsys, site, fmt, output, policy):
    run(capsys, site, ["vpn", "gateway-config", "--format", fmt, "--output", output]
        + (["--policy", policy] if policy.strip() else []))


@FUZZ
@given(host=odd_text)
def test_host_commands(capsys, site, host):
    for argv in (["devices", "show", host], ["netcheck", host], ["usb", "list", host], ["vpn", "rotate", host],
                 ["keys", "rotate", host], ["keys", "verify", "--limit", host]):
        run(capsys, site, argv)


@FUZZ
@given(order=odd_text, grace=odd_text)
def test_orders(capsys, site, order, grace):
    for argv in (["orders", "show", order], ["orders", "cancel", order], ["orders", "list", "--host", order],
                 ["orders", "settle", "--grace", grace]):
        run(capsys, site, argv)


@FUZZ
@given(device=odd_text, host=odd_text, reason=odd_text)
def test_usb_approve_for_a_host_not_in_the_inventory(capsys, site, device, host, reason):
    run(capsys, site, ["usb", "approve", device, "--host", host or "x", "--reason", reason])


@FUZZ
@given(cert=paths, key=paths, bind=odd_text)
@example(cert="/etc/passwd", key="/etc/passwd", bind="127.0.0.1:1")  # issue 19: ssl.SSLError
def test_serve_bad_tls_or_bind(capsys, site, cert, key, bind):
    """Only refusals: a missing, unreadable or non-PEM file, or a bind that is no ADDRESS:PORT (valid arguments
    would start the server)."""
    bind = bind if ":" not in bind or bind == "127.0.0.1:1" else "not-an-address:1"
    run(capsys, site, ["serve", "--tls-cert", cert.strip() or "/etc/passwd", "--tls-key", key.strip() or "/etc/passwd",
                       "--bind", bind])
