"""`deskguard ARGS` as a process of its own, as an admin runs it, without paying Python's start and the kit's
heavy imports each time (imported as `clirun`: tests/ is on sys.path through its conftest).

Each call is a new process forked from a small server (this file run as a script, one per test process) that
has imported the CLI, the store (SQLAlchemy), cryptography, Jinja2 and YAML once, and never runs a test; so the
unit tier's ~370 commands cost a few hundredths of a second of start each instead of ~0.3 s of CPU. What a
process started anew would have is given to the new process before the command runs: the caller's environment
(or `env`), working directory, stdin (`input`, else /dev/null), fresh stdout and stderr on their file descriptors
(so Ansible and other children write into the same capture), the locale and time zone of that environment, and
an exit code from `sys.exit` after the interpreter's exit handlers. Nothing of the test process (monkeypatches,
caches, pytest's capture) reaches the command.

Ansible is not preloaded, on purpose: importing `ansible.constants` reads ANSIBLE_CONFIG, the working
directory's ansible.cfg and the home folder's, so it must happen in the command's own environment; each new
process checks that before it runs the command (exit 70 if not). The same holds for the orders server's
deadlines, read from the environment on import.

`python -m deskguard` itself, the entry point an admin types, is still started for real by tests/unit/test_cli.py
and the lab tiers."""

from __future__ import annotations

import atexit
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading

# Imported once by the server; none reads the environment, working directory or clock on import.
PRELOAD = ("deskguard.cli", "deskguard.store", "deskguard.site.policyfile", "deskguard.term", "jinja2", "yaml",
           "cryptography.hazmat.primitives.serialization", "cryptography.hazmat.primitives.asymmetric.ec",
           "cryptography.hazmat.primitives.asymmetric.ed25519", "cryptography.hazmat.primitives.asymmetric.x25519",
           "cryptography.hazmat.primitives.ciphers.aead", "cryptography.hazmat.primitives.kdf.hkdf",
           *(f"deskguard.commands.{name}" for name in ("announce", "audit", "comply", "devices", "enrolment",
                                                       "init", "keys", "onboard", "usb", "vpn", "wipe")))
NEVER_PRELOADED = ("ansible", "ansible_runner", "deskguard.orders.httpproto", "deskguard.orders.bodies")
EARLY_IMPORT = 70

_server: tuple[subprocess.Popen, str] | None = None
_starting = threading.Lock()   # tests that run commands from several threads start one server


def deskguard(*args, env: dict | None = None, input: str | None = None, timeout: float = 300,
              cwd=None) -> subprocess.CompletedProcess:
    """`deskguard ARGS` in a new process: like subprocess.run([python, -m, deskguard, ...], capture_output=True,
    text=True); raises subprocess.TimeoutExpired after `timeout` seconds, the process killed."""
    argv = ["deskguard", *map(str, args)]
    with tempfile.TemporaryDirectory(prefix="deskguard-cli-") as tmp:
        out, err, stdin = (os.path.join(tmp, name) for name in ("out", "err", "in"))
        if input is not None:
            with open(stdin, "w", encoding="utf-8") as f:
                f.write(input)
        request = {"argv": argv, "env": dict(os.environ if env is None else env),
                   "cwd": os.fspath(cwd or os.getcwd()), "stdin": stdin if input is not None else os.devnull,
                   "out": out, "err": err}
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(_server_socket())
            conn.sendall(json.dumps(request).encode() + b"\n")
            replies = conn.makefile("r", encoding="ascii")
            pid = int(replies.readline())
            conn.settimeout(timeout)
            try:
                code = int(replies.readline())
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                conn.settimeout(None)
                conn.makefile("r", encoding="ascii").readline()      # its end, reaped by the server
                raise subprocess.TimeoutExpired(argv, timeout, _read(out), _read(err)) from None
        return subprocess.CompletedProcess(argv, code, _read(out), _read(err))


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def _server_socket() -> str:
    """The server's socket, started on first use; it ends when this process does (its stdin closes)."""
    global _server
    with _starting:
        if _server is None or _server[0].poll() is not None:
            path = os.path.join(tempfile.mkdtemp(prefix="deskguard-clirun-"), "socket")
            process = subprocess.Popen([sys.executable, __file__, path], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE)
            if process.stdout.readline() != b"ready\n":
                raise RuntimeError(f"clirun: the command server did not start (exit {process.wait()})")
            atexit.register(process.stdin.close)
            _server = (process, path)
        return _server[1]


def _serve(path: str) -> None:
    for name in PRELOAD:
        __import__(name)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    running: dict[int, socket.socket] = {}
    selector = selectors.DefaultSelector()
    for source in (listener, wake_r, sys.stdin):
        selector.register(source, selectors.EVENT_READ)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        for key, _ in selector.select():
            if key.fileobj is sys.stdin:               # the test process is gone
                os.unlink(path)
                os.rmdir(os.path.dirname(path))
                return
            if key.fileobj is listener:
                conn, _ = listener.accept()
                request = json.loads(conn.makefile("rb").readline())
                pid = os.fork()
                if pid == 0:
                    for fd in (listener.fileno(), wake_r, wake_w, *(c.fileno() for c in running.values()),
                               conn.fileno()):
                        os.close(fd)
                    selector.close()
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    try:
                        _command(**request)            # ends the process
                    finally:
                        os._exit(1)                    # if it could not even start the command
                running[pid] = conn
                conn.sendall(f"{pid}\n".encode())
                continue
            os.read(wake_r, 4096)
            while running:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                conn = running.pop(pid, None)
                if conn is not None:
                    conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
                    conn.close()


def _command(argv, env, cwd, stdin, out, err) -> None:
    """In the new process: become what `python -m deskguard ARGV` would be, run it, exit with its code."""
    import locale
    import time
    import traceback

    for fd, path, flags in ((0, stdin, os.O_RDONLY), (1, out, os.O_WRONLY | os.O_CREAT),
                            (2, err, os.O_WRONLY | os.O_CREAT)):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin = open(0, encoding="utf-8", closefd=False)
    sys.stdout = open(1, "w", encoding="utf-8", errors="surrogateescape", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
    early = [name for name in NEVER_PRELOADED if name in sys.modules]
    if early:
        sys.stderr.write(f"clirun: imported before the command ran, so in the wrong environment: {early}\n")
        sys.stderr.flush()
        os._exit(EARLY_IMPORT)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    time.tzset()
    try:
        locale.setlocale(locale.LC_CTYPE, "")
    except locale.Error:
        pass
    sys.argv = list(argv)
    code = 0
    try:
        from deskguard.cli import main

        main(argv[1:])
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        threading._shutdown()      # what the interpreter does on exit: wait for threads, run the exit handlers
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


if __name__ == "__main__":
    _serve(sys.argv[1])
