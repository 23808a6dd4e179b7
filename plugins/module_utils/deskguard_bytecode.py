# -*- coding: utf-8 -*-
"""The agent's bytecode, written once when it is installed, so that neither its runs nor the nightly run's
`deskguard-agent posture` compile its code again (docs/compliance.md, "Performance").

Checked-hash .pyc files (PEP 552): Python uses one only while it matches its source byte for byte, so a file
changed later (by an update or by hand) is compiled from its source instead, never run from stale bytecode.
Written by the launcher's interpreter, which may not be the one running the install module: bytecode is per
Python version. Stdlib only.
"""

from __future__ import annotations

import subprocess

PYTHON = "/usr/bin/python3"   # the launcher's interpreter line
# Writes only what is missing or out of date and prints each file it wrote: compileall rewrites every
# checked-hash file on every call, which would report a change each time.
SCRIPT = r"""
import importlib.util, os, py_compile, sys
code_dir = sys.argv[1]
for name in sorted(os.listdir(code_dir)):
    if not name.endswith(".py"):
        continue
    source = os.path.join(code_dir, name)
    cached = importlib.util.cache_from_source(source)
    with open(source, "rb") as fh:
        header = importlib.util.MAGIC_NUMBER + (3).to_bytes(4, "little") + importlib.util.source_hash(fh.read())
    try:
        with open(cached, "rb") as fh:
            if fh.read(16) == header:
                continue
    except OSError:
        pass
    py_compile.compile(source, cached, doraise=True, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    print(name)
"""


def write(code_dir, python=PYTHON):
    """(the files whose bytecode was written, None) or ([], why not). Not writing it costs speed only: the
    code is then compiled in memory on every run."""
    try:
        proc = subprocess.run([python, "-c", SCRIPT, code_dir], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        return [], str(exc)
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines() or ["exit %d" % proc.returncode]
        return [], lines[-1]
    return proc.stdout.decode().split(), None
