"""CLI conventions admins expect from a command-line tool: --version with the Ansible versions, shell
completion (click's own), --json wherever data is printed, NO_COLOR, -v/-q, and examples in every --help."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import clirun
import pytest
from click.testing import CliRunner
from sitetools import cli_commands as _leaves

from deskguard import term
from deskguard.cli import app
from deskguard.versions import COLLECTIONS

pytestmark = pytest.mark.unit
BIN = Path(sys.executable).parent
# Commands that act and print a one-line outcome (or hand over a terminal), with no data to parse.
NO_DATA = {"completion": "prints a shell script", "demo": "a guided run of the lab",
           "devices remove": "one confirmation line", "devices approve": "one confirmation line",
           "installer preseed": "writes the preseed file (--output)",
           "enrolment revoke": "one confirmation line (`enrolment list --all --json` has the data)",
           "keys destroy": "one confirmation line",
           "lab down": "one line", "lab up": "one line (`lab status --json` has the data)",
           "lab ssh": "a shell on the lab host", "lab usb plug": "one line", "lab usb unplug": "one line",
           "usb approve": "one confirmation line", "orders cancel": "one confirmation line",
           "orders settle": "one line per order it moved (`orders list --json` has the data)",
           "serve": "runs the server (its access log is the output)",
           "wipe": "status lines (`orders show ID --json` has the order)"}


def deskguard(*args, env=None, **kw):
    return clirun.deskguard(*args, timeout=120, env={**os.environ, **(env or {})}, **kw)


def test_version_names_the_kit_ansible_core_and_each_collection():
    proc = deskguard("--version")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^deskguard \d+\.\d+", proc.stdout, re.M)
    assert re.search(r"ansible-core 2\.19\.\d+", proc.stdout)
    for name in COLLECTIONS:
        assert re.search(rf"^  {re.escape(name)} \d+\.\d+\.\d+$", proc.stdout, re.M), name


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script_for_each_shell(shell):
    proc = deskguard("completion", shell)
    assert proc.returncode == 0 and "_DESKGUARD_COMPLETE" in proc.stdout, proc.stderr
    marker = {"bash": "complete -o nosort -F _deskguard_completion deskguard", "zsh": "#compdef deskguard",
              "fish": "complete --no-files --command deskguard"}[shell]
    assert marker in proc.stdout
    # The shell itself parses it (bash, zsh and fish are installed by .ci/setup).
    check = {"bash": ["bash", "-n"], "zsh": ["zsh", "-n"], "fish": ["fish", "--no-execute"]}[shell]
    assert subprocess.run(check, input=proc.stdout, text=True, capture_output=True).returncode == 0


def test_fish_completion_really_completes():
    script = deskguard("completion", "fish").stdout
    proc = subprocess.run(["fish", "-c", script + '\ncomplete -C "deskguard ke"; complete -C "deskguard keys r"'],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"})
    assert proc.returncode == 0, proc.stderr
    assert [line.split("\t")[0] for line in proc.stdout.splitlines()] == ["keys", "rotate"]


def test_bash_completion_really_completes_commands_subcommands_and_choices():
    """Source the generated script in bash and call its completion function, as the shell does on TAB."""
    script = deskguard("completion", "bash").stdout

    def complete(*words):
        code = (f"{script}\nCOMP_WORDS=({' '.join(words)}); COMP_CWORD={len(words) - 1}; "
                "_deskguard_completion deskguard; printf '%s\\n' \"${COMPREPLY[@]}\"")
        proc = subprocess.run(["bash", "-c", code], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"})
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()

    assert complete("deskguard", "ke") == ["keys"]
    assert set(complete("deskguard", "keys", "")) == {"destroy", "rotate", "show", "verify"}
    assert complete("deskguard", "completion", "f") == ["fish"]
    assert "--format" in complete("deskguard", "comply", "--f")


def test_every_command_has_examples_in_its_help():
    runner = CliRunner()
    missing = []
    for path, _cmd in _leaves():
        out = runner.invoke(app, [*path.split(), "--help"]).output
        if not re.search(r"Examples:\n +deskguard ", out):
            missing.append(path)
    assert not missing, missing
    assert "Examples:" in runner.invoke(app, ["--help"]).output


def test_every_command_that_prints_data_has_json():
    lacking = []
    for path, cmd in _leaves():
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        fmt = next((p for p in cmd.params if "--format" in getattr(p, "opts", [])), None)
        has_json = "--json" in opts or (fmt is not None and "json" in getattr(fmt.type, "choices", ()))
        if not has_json and path not in NO_DATA:
            lacking.append(path)
    assert not lacking, lacking


def test_comply_json_and_another_format_contradict(tmp_path):
    proc = deskguard("comply", "--json", "--format", "csv", "--site", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "pick one" in proc.stderr


def test_verbose_and_quiet_contradict():
    proc = deskguard("-v", "-q", "devices", "list")
    assert proc.returncode == 2 and "pick one" in proc.stderr


def test_quiet_drops_the_progress_display_and_verbose_prints_every_task(monkeypatch):
    from deskguard.progress import LiveProgress, progress_factory
    from deskguard.runner import EventCollector

    class Tty:
        def isatty(self):
            return True

    monkeypatch.setattr(term, "_verbosity", 0)
    term.set_verbosity(0, True)
    assert progress_factory("t", 1) is None
    term.set_verbosity(0, False)
    assert LiveProgress(EventCollector(), "t", 1, stream=Tty()).interactive
    term.set_verbosity(2, False)
    assert term.verbosity() == 2 and not LiveProgress(EventCollector(), "t", 1, stream=Tty()).interactive


def _on_a_terminal(args, env) -> bytes:
    """Run with stdout and stderr on a pseudo-terminal (where colour would be used); return what it printed."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
                            env={**os.environ, "TERM": "xterm-256color", **env})
    os.close(follower)
    out = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(60)
    os.close(leader)
    return out


COLOUR = re.compile(rb"\x1b\[[0-9;]*(3[0-9]|9[0-7]|38;[25];)[0-9;]*m")


def test_no_color_turns_colour_off_in_click_and_rich_output(tmp_path):
    base = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "DESKGUARD_DB_URL")}
    (tmp_path / "pw").write_text("correct horse battery staple\n")

    def init(site, extra):
        return _on_a_terminal([sys.executable, "-m", "deskguard", "init", "--site", str(tmp_path / site),
                               "--officer-passphrase-file", str(tmp_path / "pw")], {**base, **extra})

    # click: the officer-key warning is red on a terminal, plain with NO_COLOR.
    coloured = init("a", {})
    assert b"ESCROW PRIVATE KEY WRITTEN" in coloured and COLOUR.search(coloured)
    plain = init("b", {"NO_COLOR": "1"})
    assert b"ESCROW PRIVATE KEY WRITTEN" in plain and not COLOUR.search(plain)

    # rich: the live progress display colours its counters, unless NO_COLOR.
    show = ("from deskguard.progress import LiveProgress; from deskguard.runner import EventCollector\n"
            "import sys\nwith LiveProgress(EventCollector(), 'demo', 1, stream=sys.stdout): pass\n")
    coloured = _on_a_terminal([sys.executable, "-c", show], base)
    assert b"unreachable 0" in coloured and COLOUR.search(coloured)
    plain = _on_a_terminal([sys.executable, "-c", show], {**base, "NO_COLOR": "1"})
    assert b"unreachable 0" in plain and not COLOUR.search(plain)


def test_help_stays_fast_to_import():
    """--help must not import Ansible, SQLAlchemy or rich (examples, versions and completion are lazy)."""
    code = ("import sys; from deskguard.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('ansible', 'sqlalchemy', 'rich', 'ansible_runner') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in proc.stdout, proc.stdout + proc.stderr
