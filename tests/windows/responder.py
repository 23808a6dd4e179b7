"""A loopback WS-Management responder: a real HTTP server on 127.0.0.1 that answers the WinRS shell
operations (Create, Command, Send, Receive, Signal, Delete) well enough for pywinrm's `Session`/`Protocol` and
for ansible-core's `winrm` connection plugin.

It runs no PowerShell. Commands go to a handler; Ansible module payloads are decoded (payload.py), recorded
in order, and answered with the JSON result the test scripted (default `{"changed": false}`).

Only Basic authentication is possible here: NTLM/Kerberos message encryption cannot be reproduced by a fake.
With `ssl_context` it serves HTTPS, so a client's certificate validation really runs (and a client that
insists on NTLM gets the 401 a real server gives to credentials it cannot accept). Basic over plain HTTP
exists for this responder alone and is never the kit's default.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import uuid
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from payload import ModuleCall, encoded_script, module_call

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
}
ACTIONS = {
    "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create": "Create",
    "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete": "Delete",
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command": "Command",
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send": "Send",
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive": "Receive",
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal": "Signal",
}
DONE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"

# A scripted answer: a dict, or a callable taking the ModuleCall. Looked up by (module, args["state"]), then
# by module, then "*"; `module` may be fully qualified or short (`win_regedit`).
Answer = dict | Callable[[ModuleCall], dict]
# handler(argv, script, stdin) -> (stdout, stderr, rc) for anything that is not an Ansible module payload;
# `script` is the decoded -EncodedCommand, or None.
ScriptHandler = Callable[[list[str], str | None, bytes], tuple[bytes, bytes, int]]


def _no_script(argv, script, stdin):
    return b"", b"", 0


class _Command:
    def __init__(self, command: str, args: list[str]):
        self.command, self.args, self.stdin = command, args, bytearray()
        self.result: tuple[bytes, bytes, int] | None = None


class Responder:
    """Start with `with Responder(...) as r:`; `r.port`, `r.url`; afterwards read `r.calls` (module calls,
    in order), `r.actions` (WS-Man operations) and `r.scripts` (decoded -EncodedCommand scripts)."""

    def __init__(self, answers: dict[object, Answer] | None = None, script_handler: ScriptHandler = _no_script,
                 username: str = "deskguard-test", password: str = "loopback-only",
                 ssl_context: ssl.SSLContext | None = None):
        self.answers = dict(answers or {})
        self.script_handler = script_handler
        self._auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.calls: list[ModuleCall] = []
        self.actions: list[str] = []
        self.scripts: list[str] = []
        self._shells: dict[str, dict[str, _Command]] = {}
        self._ssl = ssl_context
        # action -> (HTTP status, SOAP Body) answered instead of performing it, e.g. a WinRM quota fault on
        # Create; `wsman_fault()` builds the body.
        self.faults: dict[str, tuple[int, str]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- life cycle ---------------------------------------------------------------------------------------
    def __enter__(self) -> Responder:
        responder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                responder._post(self)

            def log_message(self, *args):  # quiet: pytest shows failures, not every request
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self._ssl is not None:
            self._server.socket = self._ssl.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}/wsman"

    # -- HTTP ---------------------------------------------------------------------------------------------
    def _post(self, http: BaseHTTPRequestHandler) -> None:
        body = http.rfile.read(int(http.headers.get("Content-Length", 0)))
        if http.headers.get("Authorization") != self._auth:
            # WinRM answers 401 with an empty body; pywinrm turns it into InvalidCredentialsError.
            http.send_response(401)
            http.send_header("WWW-Authenticate", 'Basic realm="WSMAN"')
            http.send_header("Content-Length", "0")
            http.end_headers()
            return
        envelope = ET.fromstring(body)
        action = ACTIONS.get(envelope.findtext("s:Header/a:Action", namespaces=NS), "Unknown")
        message_id = envelope.findtext("s:Header/a:MessageID", namespaces=NS)
        with self._lock:
            self.actions.append(action)
        try:
            if action in self.faults:
                status, reply = self.faults[action]
            else:
                status, reply = getattr(self, "_" + action.lower(), self._unknown)(envelope)
        except (KeyError, AttributeError) as exc:  # an unknown shell or command id, a body we cannot read
            status, reply = _fault(f"the loopback responder cannot handle this {action}: {exc!r}")
        out = _envelope(message_id, reply).encode()
        http.send_response(status)
        http.send_header("Content-Type", "application/soap+xml;charset=UTF-8")
        http.send_header("Content-Length", str(len(out)))
        http.end_headers()
        try:
            http.wfile.write(out)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (the timeout tests): nothing left to answer

    # -- WS-Man operations --------------------------------------------------------------------------------
    def _create(self, envelope):
        shell_id = str(uuid.uuid4()).upper()
        with self._lock:
            self._shells[shell_id] = {}
        return 200, (f'<x:ResourceCreated xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer">'
                     f'<a:Address>{self.url}</a:Address><a:ReferenceParameters>'
                     f'<w:ResourceURI>http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd</w:ResourceURI>'
                     f'<w:SelectorSet><w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet>'
                     f'</a:ReferenceParameters></x:ResourceCreated>')

    def _command(self, envelope):
        line = envelope.find("s:Body/rsp:CommandLine", NS)
        args = [a.text or "" for a in line.findall("rsp:Arguments", NS)]
        command_id = str(uuid.uuid4()).upper()
        self._shell(envelope)[command_id] = _Command(line.findtext("rsp:Command", default="", namespaces=NS), args)
        return 200, f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId></rsp:CommandResponse>"

    def _send(self, envelope):
        stream = envelope.find("s:Body/rsp:Send/rsp:Stream", NS)
        self._shell(envelope)[stream.get("CommandId")].stdin += base64.b64decode(stream.text or "")
        return 200, "<rsp:SendResponse/>"

    def _receive(self, envelope):
        command_id = envelope.find("s:Body/rsp:Receive/rsp:DesiredStream", NS).get("CommandId")
        cmd = self._shell(envelope)[command_id]
        if cmd.result is None:
            cmd.result = self._run(cmd)
        stdout, stderr, rc = cmd.result
        streams = "".join(
            f'<rsp:Stream Name="{name}" CommandId="{command_id}">{base64.b64encode(data).decode()}</rsp:Stream>'
            f'<rsp:Stream Name="{name}" CommandId="{command_id}" End="true"></rsp:Stream>'
            for name, data in (("stdout", stdout), ("stderr", stderr)))
        return 200, (f"<rsp:ReceiveResponse>{streams}"
                     f'<rsp:CommandState CommandId="{command_id}" State="{DONE}">'
                     f"<rsp:ExitCode>{rc}</rsp:ExitCode></rsp:CommandState></rsp:ReceiveResponse>")

    def _signal(self, envelope):
        command_id = envelope.find("s:Body/rsp:Signal", NS).get("CommandId")
        self._shell(envelope).pop(command_id, None)
        return 200, "<rsp:SignalResponse/>"

    def _delete(self, envelope):
        with self._lock:
            self._shells.pop(_shell_id(envelope), None)
        return 200, ""

    def _unknown(self, envelope):
        return _fault("the loopback responder does not implement this action")

    def _shell(self, envelope) -> dict[str, _Command]:
        return self._shells[_shell_id(envelope)]

    # -- what the "host" does -----------------------------------------------------------------------------
    def _run(self, cmd: _Command) -> tuple[bytes, bytes, int]:
        # pywinrm's run_ps puts the whole line in rsp:Command; Ansible splits it into rsp:Arguments.
        argv = cmd.command.split() + cmd.args
        script = encoded_script(argv)
        if script is not None:
            with self._lock:
                self.scripts.append(script)
        call = module_call(bytes(cmd.stdin)) if cmd.stdin else None
        if call is None:
            return self.script_handler(argv, script, bytes(cmd.stdin))
        with self._lock:
            self.calls.append(call)
        result = dict(self.answer(call))
        # A Windows module that fails exits 1 with its JSON on stdout, like Ansible.Basic's FailJson.
        return json.dumps(result).encode(), b"", 1 if result.get("failed") else 0

    def answer(self, call: ModuleCall) -> dict:
        state = call.args.get("state")
        for key in ((call.module, state), (call.short, state), call.module, call.short, "*"):
            if key in self.answers:
                found = self.answers[key]
                return found(call) if callable(found) else found
        return {"changed": False}


def _fault(reason: str) -> tuple[int, str]:
    # pywinrm raises WSManFaultError with this reason for a 500 that carries a SOAP Fault.
    reason = reason.replace("&", "&amp;").replace("<", "&lt;")
    return 500, ('<s:Fault><s:Code><s:Value>s:Sender</s:Value></s:Code><s:Reason><s:Text xml:lang="en-US">'
                 f"{reason}</s:Text></s:Reason></s:Fault>")


def wsman_fault(code: int, subcode: str, message: str) -> tuple[int, str]:
    """A WS-Management fault as Windows sends it (MS-WSMV 2.2.4.43 WSManFault in the SOAP Detail): pywinrm
    reads `Code` into WSManFaultError.wsman_fault_code and the Subcode into fault_subcode."""
    message = message.replace("&", "&amp;").replace("<", "&lt;")
    return 500, ('<s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode>'
                 f'<s:Value>w:{subcode}</s:Value></s:Subcode></s:Code>'
                 f'<s:Reason><s:Text xml:lang="en-US">{message}</s:Text></s:Reason>'
                 '<s:Detail><f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" '
                 f'Code="{code}" Machine="loopback"><f:Message>{message}</f:Message></f:WSManFault>'
                 '</s:Detail></s:Fault>')


def _shell_id(envelope) -> str:
    return envelope.findtext("s:Header/w:SelectorSet/w:Selector[@Name='ShellId']", namespaces=NS)


def _envelope(relates_to: str | None, body: str) -> str:
    # pywinrm checks RelatesTo against its MessageID for Signal and Delete; the rest it ignores.
    return (f'<s:Envelope xmlns:s="{NS["s"]}" xmlns:a="{NS["a"]}" xmlns:w="{NS["w"]}" xmlns:rsp="{NS["rsp"]}">'
            f"<s:Header><a:Action>response</a:Action><a:MessageID>uuid:{uuid.uuid4()}</a:MessageID>"
            f"<a:RelatesTo>{relates_to or ''}</a:RelatesTo></s:Header><s:Body>{body}</s:Body></s:Envelope>")
