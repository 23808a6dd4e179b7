"""tests/clirun.py, the way most tests run the `deskguard` command, gives what a real `python -m deskguard` gives:
the same exit code, stdout and stderr, with the caller's environment, working directory and stdin."""

from __future__ import annotations

import os
import subprocess
import sys

import clirun
import pytest
from sitetools import OFFICER_PASSPHRASE, free_port

pytestmark = pytest.mark.unit


def real(*args, env, input=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "deskguard", *args], capture_output=True, text=True, timeout=120,
                          env=env, input=input, cwd=cwd)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("clirun") / "site"
    secret = root.parent / "pw"
    secret.write_text(OFFICER_PASSPHRASE + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKGUARD_")}
    assert clirun.deskguard("init", "--site", root, "--officer-passphrase-file", secret, env=env).returncode == 0
    return root


CASES = {
    "usage error": (["devices", "list", "--nope"], {}, None, False),
    "site from the environment": (["devices", "list"], {"DESKGUARD_SITE": "{site}"}, None, False),
    "site relative to the working directory": (["audit", "verify", "--site", "."], {}, None, True),
    "answer on stdin": (["devices", "remove", "lt-none"], {"DESKGUARD_SITE": "{site}"}, "lt-none\n", False),
    "no colour, JSON": (["devices", "list", "--json"], {"DESKGUARD_SITE": "{site}", "NO_COLOR": "1"}, None, False),
}


@pytest.mark.parametrize("name", CASES)
def test_a_command_gives_what_a_real_process_gives(name, site):
    args, extra, stdin, in_site = CASES[name]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKGUARD_")}
    env.update({k: v.format(site=site) for k, v in extra.items()})
    cwd = site if in_site else site.parent
    ours = clirun.deskguard(*args, env=env, input=stdin, cwd=cwd)
    theirs = real(*args, env=env, input=stdin, cwd=cwd)
    assert (ours.returncode, ours.stdout, ours.stderr) == (theirs.returncode, theirs.stdout, theirs.stderr)
    assert ours.stdout or ours.stderr


def test_a_command_past_its_time_is_killed_and_says_so(site):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESKGUARD_")}
    with pytest.raises(subprocess.TimeoutExpired) as raised:
        clirun.deskguard("serve", "--site", site, "--bind", f"127.0.0.1:{free_port()}", env=env, timeout=3)
    assert "Started server process" in raised.value.stderr, raised.value.stderr
    # the server goes on serving the next command
    assert clirun.deskguard("devices", "list", "--site", site, env=env).returncode == 0
