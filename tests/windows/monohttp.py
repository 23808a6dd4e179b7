"""The Windows agent's transport (the C# that deskguard-agent.ps1 compiles with Add-Type), compiled from the
script as shipped and run on Mono (Debian's mono-mcs, installed by .ci/setup): the deadline, the body cap and
the CA pinning run for real against loopback servers. Mono is not .NET Framework: its TLS stack (BoringSSL)
and X509Chain are not Schannel's and CryptoAPI's, so this proves the logic, not Windows (docs/windows.md).
`-langversion:5` because Windows PowerShell 5.1's Add-Type compiles with the .NET Framework's C# 5 compiler."""

from __future__ import annotations

import base64
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "roles" / "endpoint_agent" / "files" / "deskguard-agent.ps1"
START, END = "$AgentHttpSource = @'\n", "\n'@\n"

DRIVER = r"""
using System;
using System.IO;
using System.Runtime.InteropServices;
public static class Driver
{
    // Mono 6.8 can hang or abort in its own shutdown after a request was aborted (all threads parked on futexes,
    // or an assertion in its I/O selector thread): the driver leaves at once once its line is out.
    [DllImport("libc")]
    static extern void _exit(int status);

    // args: method url timeout-seconds limit ca-file|- body-file|-
    public static int Main(string[] args)
    {
        byte[] body = args[5] == "-" ? null : File.ReadAllBytes(args[5]);
        try
        {
            Deskguard.HttpAnswer answer = Deskguard.AgentHttp.Send(args[0], args[1], body,
                double.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture), int.Parse(args[3]),
                args[4] == "-" ? "" : args[4]);
            Console.WriteLine("answer " + answer.Status + " " + Convert.ToBase64String(answer.Body));
        }
        catch (Deskguard.HttpFailure failure)
        {
            Console.WriteLine("failure " + (failure.Oversized ? "oversized" : "-") + " " + failure.Message);
        }
        Console.Out.Flush();
        _exit(0);
        return 0;
    }
}
"""


def source(text: str | None = None) -> str:
    """The C# inside the agent's here-string, exactly as shipped."""
    text = AGENT.read_text() if text is None else text
    start = text.index(START) + len(START)
    return text[start:text.index(END, start)]


def compile_transport(folder: Path) -> Path:
    mcs = shutil.which("mcs")
    assert mcs and shutil.which("mono"), "mono-mcs is not installed: run `bash .ci/setup`"
    (folder / "transport.cs").write_text(source())
    (folder / "driver.cs").write_text(DRIVER)
    exe = folder / "transport.exe"
    proc = subprocess.run([mcs, "-langversion:5", "-r:System.dll", "-out:" + str(exe),
                           str(folder / "driver.cs"), str(folder / "transport.cs")], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return exe


def send(exe: Path, method: str, url: str, *, timeout: float = 30.0, limit: int = 8192, ca_file: Path | None = None,
         body: bytes | None = None) -> dict:
    """{"status", "body"} or {"failure", "oversized"} from one AgentHttp.Send. The default deadline is generous:
    Mono reads the whole system trust store on a first TLS check, which under load takes seconds."""
    args = ["mono", str(exe), method, url, repr(float(timeout)), str(limit), str(ca_file) if ca_file else "-", "-"]
    if body is not None:
        path = exe.parent / "body.bin"
        path.write_bytes(body)
        args[-1] = str(path)
    # In the build folder: a Mono crash report (mono_crash.*.json) must not land in the work tree.
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, cwd=exe.parent)
    # The result line is what counts (the driver leaves by _exit: see DRIVER).
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("answer ", "failure "))]
    assert lines, f"rc {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    kind, flag, rest = (lines[0] + " ").split(" ", 2)
    rest = rest.strip()
    if kind == "answer":
        return {"status": int(flag), "body": base64.b64decode(rest)}
    return {"failure": rest, "oversized": flag == "oversized"}


class Server:
    """A loopback HTTP(S) server. `answer(request_line) -> (head_bytes, body_bytes, dribble)`: with dribble
    set, the head (when "head") or the body (when "body") goes out one byte every 0.2 s. `finished` is set
    just before a dribble's last byte, so a client that returned before it did not wait for the dribble."""

    DRIBBLE = 0.2

    def __init__(self, answer, tls: ssl.SSLContext | None = None):
        self.answer, self.tls = answer, tls
        self.finished = threading.Event()
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{path}"

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            if self.tls:
                conn = self.tls.wrap_socket(conn, server_side=True)
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            self.requests.append(data.split(b"\r\n", 1)[0])
            head, body, dribble = self.answer(self.requests[-1])
            slow = head if dribble == "head" else body if dribble == "body" else b""
            conn.sendall(head if dribble != "head" else b"")
            for i, byte in enumerate(slow):
                time.sleep(self.DRIBBLE)
                if i == len(slow) - 1:
                    self.finished.set()
                conn.sendall(bytes([byte]))
            if dribble != "body":
                conn.sendall(body)
        except (OSError, ssl.SSLError):
            return              # the client hung up (a deadline) or refused our certificate
        finally:
            conn.close()

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def plain(status: int = 200, body: bytes = b'{"ok":true}', dribble: str | None = None, length: int | None = None):
    """An answer function: `status` with `body` (Content-Length `length`, default the body's)."""
    head = b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (
        status, len(body) if length is None else length)
    return lambda line: (head, body, dribble)
