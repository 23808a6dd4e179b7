"""Record what a real Windows laptop answers to the WinRM preflight, so that CI can replay it
(test_recorded_preflight.py) instead of the documentation-based fixtures in preflight_fixtures.py.

Run from a controller that reaches a Windows VM over WinRM HTTPS (docs/windows.md, "Running the real check"):

    .venv/bin/python tests/windows/record_preflight.py 192.0.2.10 --user 'WIN11\\dgadmin' \\
        --password-file ~/win11.pass --ca-bundle ~/site-ca.pem --out tests/windows/recorded/win11-pro.json

It runs the kit's own preflight code with the kit's secure settings. pywinrm hands us the WS-Management
envelopes before encryption and after decryption, so they are recorded in clear; the computer name, the
account and the WinRM ids are replaced by placeholders before anything is written. The password is never
written. Review the file before committing it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from pathlib import Path

import winrm.protocol
from deskguard.windows.preflight import WinrmTarget, run_script, script_to_send

_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")


def record(target: WinrmTarget, password: str) -> dict:
    exchanges = []
    original = winrm.protocol.Protocol.send_message

    def send_message(self, message):
        reply = original(self, message)
        exchanges.append({"request": message if isinstance(message, str) else message.decode("utf-8"),
                          "response": reply.decode("utf-8") if isinstance(reply, bytes) else reply})
        return reply

    winrm.protocol.Protocol.send_message = send_message
    try:
        stdout, stderr, rc = run_script(target, password)
    finally:
        winrm.protocol.Protocol.send_message = original
    answer = json.loads(stdout.decode("utf-8").strip().splitlines()[-1]) if rc == 0 else None
    replace = {}
    if answer:
        replace = {answer.get("computer_name", ""): "RECORDED-PC", target.username: "RECORDED-USER",
                   answer.get("user", ""): "RECORDED-PC\\RECORDED-USER"}
    return _scrub({
        "source": f"recorded from a real Windows host on {dt.date.today().isoformat()} with "
                  f"tests/windows/record_preflight.py ({target.settings()['scheme']}, "
                  f"{target.settings()['transport']})",
        "script_matches_kit": any(_encoded_in(e["request"]) for e in exchanges),
        "stdout": stdout.decode("utf-8", errors="replace"), "stderr": stderr.decode("utf-8", errors="replace"),
        "rc": rc, "exchanges": exchanges}, replace, password)


def _encoded_in(request: str) -> bool:
    import base64

    encoded = base64.b64encode(script_to_send().encode("utf-16-le")).decode()
    return encoded in request


def _scrub(data, replace: dict, password: str):
    if isinstance(data, dict):
        return {k: _scrub(v, replace, password) for k, v in data.items()}
    if isinstance(data, list):
        return [_scrub(v, replace, password) for v in data]
    if isinstance(data, str):
        if password and password in data:
            raise SystemExit("refusing to write a recording that contains the password")
        for old, new in sorted(replace.items(), key=lambda kv: -len(kv[0])):
            if old:
                data = data.replace(old, new).replace(json.dumps(old)[1:-1], json.dumps(new)[1:-1])
        return _UUID.sub("00000000-0000-0000-0000-000000000000", data)
    return data


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("address")
    ap.add_argument("--user", required=True)
    ap.add_argument("--password-file", type=Path, required=True)
    ap.add_argument("--ca-bundle", type=Path)
    ap.add_argument("--port", type=int, default=5986)
    ap.add_argument("--transport", default="ntlm", choices=["ntlm", "kerberos"])
    ap.add_argument("--insecure-lab-winrm", action="store_true", help="Basic over HTTP (the loopback responder)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    target = WinrmTarget(args.address, args.user, port=args.port, transport=args.transport,
                         ca_bundle=args.ca_bundle, lab_insecure=args.insecure_lab_winrm)
    password = args.password_file.read_text().splitlines()[0]
    result = record(target, password)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} ({len(result['exchanges'])} WS-Management messages, exit code {result['rc']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
