"""Helpers for tests that drive the CLI against a site of their own (imported as `sitetools`: tests/ is on
sys.path through its conftest)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import clirun

OFFICER_PASSPHRASE = "correct horse battery staple"


def run_deskguard(site, *args, timeout=1800) -> subprocess.CompletedProcess:
    """`deskguard ARGS --site SITE` in a process of its own, as an admin would run it (clirun.py)."""
    return clirun.deskguard(*args, "--site", site, timeout=timeout)


def deskguard_sqlite(*args, site, timeout=300) -> subprocess.CompletedProcess:
    """`deskguard ARGS --site SITE` on the site's own SQLite store: DESKGUARD_DB_URL and DESKGUARD_SITE unset."""
    env = {k: v for k, v in os.environ.items() if k not in ("DESKGUARD_DB_URL", "DESKGUARD_SITE")}
    return clirun.deskguard(*args, "--site", site, timeout=timeout, env=env)


def onboard_lab(site, host: str, laptop, *extra, timeout=1800, run=None):
    """`deskguard onboard HOST --json` of a lab laptop for the operator tanaka, with the lab's key (a VM through
    its forwarded SSH port): (the process, its JSON summary or None). `run(site, *args)` replaces run_deskguard
    for a test that records every command's output."""
    from deskguard.lab.image import lab_key

    run = run or (lambda site, *args: run_deskguard(site, *args, timeout=timeout))
    port = ["--port", str(laptop.port)] if laptop.kind == "vm" else []
    proc = run(site, "onboard", host, "--os", "debian", "--address", laptop.address, *port, "--user", "tanaka",
               "--ssh-key", str(lab_key()), "--json", *extra)
    return proc, (json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else None)


def comply_json(site, *args, timeout=1800) -> tuple[int, dict]:
    """`deskguard comply --format json ARGS`: (exit code, report). A report is printed whatever the exit code."""
    proc = run_deskguard(site, "comply", "--format", "json", *args, timeout=timeout)
    assert proc.stdout.strip().startswith("{"), proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.returncode, json.loads(proc.stdout)


def deskguard(*args, site, stdin=None) -> subprocess.CompletedProcess:
    """`deskguard ARGS` with DESKGUARD_SITE=site. DESKGUARD_DB_URL is kept: the unit tests' `site` fixture sets it
    to run the same test on PostgreSQL."""
    env = {k: v for k, v in os.environ.items() if k != "DESKGUARD_SITE"}
    env["DESKGUARD_SITE"] = str(site)
    return clirun.deskguard(*args, timeout=180, env=env, input=stdin)


def one_line_error(proc: subprocess.CompletedProcess, code: int, text: str = "") -> None:
    """The CLI refused with exit `code` and exactly one line "deskguard: …" containing `text`, no traceback."""
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("deskguard: "), proc.stderr
    assert text in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def init_site(site: Path, management: str | None = None) -> Path:
    secret = site.parent / f"{site.name}.pass"
    secret.write_text(OFFICER_PASSPHRASE + "\n")
    proc = run_deskguard(site, "init", "--officer-passphrase-file", str(secret))
    assert proc.returncode == 0, proc.stderr
    if management:
        from deskguard.lab.sites import set_management_networks

        set_management_networks(site, [management])
    return site


def downgrade_store(store, revision: str) -> None:
    """Take a store's schema back to an older Alembic revision, as an older release would have left it."""
    from alembic import command
    from alembic.config import Config

    from deskguard.store.core import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def free_port() -> int:
    """A loopback port nothing listens on (for a server to bind, or for a client to find nobody)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(site, env: dict | None = None, port: int | None = None, tls: tuple | None = None,
            output: list | None = None):
    """`deskguard serve --site SITE` for real on a loopback port (`port`, else a free one); yields the port.
    Stopped at the end, and what it printed must hold no traceback. `env` replaces the environment (default:
    without DESKGUARD_*). `tls`: (certificate, key) files for HTTPS (its readiness is probed without checking
    the certificate: the tests judge that). `output`: a list the server's output is appended to when it stops."""
    import ssl

    import pytest

    port = port or free_port()
    if env is None:
        env = {k: v for k, v in os.environ.items() if k not in ("DESKGUARD_DB_URL", "DESKGUARD_SITE")}
    args = ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])] if tls else []
    proc = subprocess.Popen([sys.executable, "-m", "deskguard", "serve", "--site", str(site), "--bind",
                             f"127.0.0.1:{port}", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    probe = {"context": ssl._create_unverified_context()} if tls else {}
    for _ in range(150):
        try:
            urllib.request.urlopen(f"{'https' if tls else 'http'}://127.0.0.1:{port}/healthz", timeout=1, **probe)
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("deskguard serve did not start: " + proc.communicate()[0][-2000:])
    try:
        yield port
    finally:   # stopped even when the test failed inside the block (it was left running then)
        proc.terminate()
        try:
            out = proc.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0]
    if output is not None:
        output.append(out)
    assert "Traceback" not in out, out[-3000:]


def cli_commands(group=None, prefix=""):
    """Every leaf command of the `deskguard` CLI: (its path, e.g. "keys rotate", the click command)."""
    import click

    from deskguard.cli import app

    group = group or app
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        path = f"{prefix} {name}".strip()
        if isinstance(cmd, click.Group):
            yield from cli_commands(cmd, path)
        else:
            yield path, cmd
