# -*- coding: utf-8 -*-
"""`deskguard-agent posture`: the nightly run's posture read by the agent's installed collector.

The controller sends, on stdin, the SHA-256 of every file of the collector it would otherwise ship as the
deskguard_posture module, and the policy's posture parameters. The installed copy answers only when each of
those files is byte for byte the controller's; otherwise it names what differs and exits STALE, and the
controller ships the collector instead. A verdict therefore never rests on an older or altered collector.

Why it exists: a shipped module is compiled on the laptop on every call (AnsiballZ carries sources only, and
Ansible's own module_utils are the larger part), while the installed files' bytecode is written once, when
the agent is installed (docs/compliance.md, "Performance"). Stdlib only, and nothing of the agent is imported
before the check.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys

STALE = 3        # exit code: the installed collector is not the controller's; ship it
BAD_REQUEST = 2
NAME = re.compile(r"^deskguard_[a-z0-9_]+$")


def file_digest(data):
    return hashlib.sha256(data).hexdigest()


def differs(code_dir, expected):
    """[] when every named file in code_dir has the expected digest; else one phrase per file that does not."""
    out = []
    for name in sorted(expected):
        try:
            with open(os.path.join(code_dir, name + ".py"), "rb") as fh:
                data = fh.read()
        except OSError as exc:
            out.append("%s.py is missing (%s)" % (name, exc.strerror))
            continue
        if file_digest(data) != expected[name]:
            out.append("%s.py differs" % name)
    return out


def _request(raw):
    request = json.loads(raw.decode("utf-8"))
    expected, params = request["modules"], request.get("params") or {}
    if not (isinstance(expected, dict) and expected and isinstance(params, dict)
            and all(isinstance(k, str) and NAME.match(k) and isinstance(v, str) for k, v in expected.items())):
        raise ValueError("not a posture request")
    return expected, params


def main(code_dir, stdin=None, stdout=None):
    stdin = stdin if stdin is not None else sys.stdin.buffer
    stdout = stdout if stdout is not None else sys.stdout
    try:
        expected, params = _request(stdin.read())
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        stdout.write(json.dumps({"error": "deskguard-agent posture: the request on stdin is unusable (%s)" % exc}))
        return BAD_REQUEST
    stale = differs(code_dir, expected)
    if stale:
        stdout.write(json.dumps({"stale": ", ".join(stale)}))
        return STALE
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    import deskguard_posture   # only now: the files are the controller's

    posture, errors, timings = deskguard_posture.collect(params=params)
    stdout.write(json.dumps({"posture": posture, "errors": errors, "timings": timings}))
    return 0
