"""A throw-away PostgreSQL server for the store tests (imported as `pgcluster`: tests/ is on sys.path).

Debian's server binaries (`.ci/setup` installs them) make a fresh cluster in a temporary folder, listening on
loopback only, on a free port, with trust authentication; it is stopped and deleted at the end of the session.
No system service is used or touched. PostgreSQL refuses to run as root, so as root the cluster runs as the
`postgres` user the Debian package creates.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class PgUnavailable(RuntimeError):
    """The server binaries are missing or the cluster did not start."""


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise PgUnavailable("no /usr/lib/postgresql/*/bin/initdb: run `bash .ci/setup` (Debian's postgresql)")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    def __init__(self):
        self.bindir = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="deskguard-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._run_as = None
        if os.geteuid() == 0:
            try:
                self._run_as = pwd.getpwnam("postgres")
            except KeyError:
                raise PgUnavailable("running as root and there is no `postgres` user to run the server") from None
            os.chown(self.root, self._run_as.pw_uid, self._run_as.pw_gid)
        self._databases = 0

    def _pg(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / tool), *args]
        if self._run_as is not None:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.root)

    def start(self, *, durable: bool = False) -> "PgCluster":
        """durable=True keeps fsync and synchronous commit on (a benchmark comparing with SQLite, which syncs)."""
        init = self._pg("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                        "--no-sync", "--no-instructions")
        if init.returncode != 0:
            raise PgUnavailable(f"initdb failed: {init.stderr.strip()[-500:]}")
        # fsync off: a test cluster is thrown away, durability buys nothing and costs seconds.
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
                "-c max_connections=60")
        if not durable:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        start = self._pg("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "server.log"),
                         "-w", "-t", "60", "start")
        if start.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace")[-800:] if (self.root / "server.log").exists() else ""
            raise PgUnavailable(f"pg_ctl start failed: {start.stderr.strip()[-300:]} {log}")
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self, template: str | None = None) -> str:
        """A fresh, empty database (or a copy of `template`); returns its SQLAlchemy URL."""
        import psycopg

        self._databases += 1
        name = f"t{os.getpid()}_{self._databases}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)

    def dump(self, url: str) -> bytes:
        """Everything the database holds, as pg_dump writes it (what a stolen backup would show)."""
        proc = self._pg("pg_dump", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                        url.rsplit("/", 1)[1])
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.encode()

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
