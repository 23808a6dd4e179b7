"""The Windows agent's transport (the C# that deskguard-agent.ps1 compiles with Add-Type), compiled from the
script as shipped and run on Mono (Debian's mono-mcs, installed by .ci/setup): the deadline, the body cap and
the CA pinning run for real against loopback servers. Mono is not .NET Framework: its TLS stack (BoringSSL)
and X509Chain are not Schannel's and CryptoAPI's, so this proves the logic, not Windows (docs/windows.md).
`-langversion:5` because Windows PowerShell 5.1's Add-Type compiles with the .NET Framework's C# 5 compiler."""

from __future__ import annotations

import base64
import shutil
import subprocess
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


