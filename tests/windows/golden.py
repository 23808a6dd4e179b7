"""Golden files of recorded module invocations: tests/windows/golden/NAME.json.

Regenerate with DESKGUARD_UPDATE_GOLDEN=1 and review the git diff like code. Values of secret arguments never
reach a golden file (they stay in the responder's memory)."""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "golden"
# Module options that carry secrets (no_log in their modules): masked in golden files.
SECRET_ARGS = {"recovery_password", "pin", "password"}
MASK = "<no_log>"


def normalise(calls) -> list[dict]:
    out = []
    for call in calls:
        entry = {"module": call.module,
                 "args": {k: (MASK if k in SECRET_ARGS and v is not None else v) for k, v in call.args.items()}}
        if call.check_mode:
            entry["check_mode"] = True
        if call.no_log:
            entry["no_log"] = True
        out.append(entry)
    return out


def render(calls) -> str:
    return json.dumps(normalise(calls), indent=2, sort_keys=True) + "\n"


def golden_diff(name: str, calls, update: bool | None = None) -> str | None:
    """None when the recorded calls match NAME's golden file; otherwise a unified diff to print. With
    DESKGUARD_UPDATE_GOLDEN=1 (or update=True) the file is (re)written instead and None returned."""
    path = GOLDEN / f"{name}.json"
    actual = render(calls)
    if update is None:
        update = os.environ.get("DESKGUARD_UPDATE_GOLDEN") == "1"
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        return None
    if not path.exists():
        return f"no golden file {path.name}; create it with DESKGUARD_UPDATE_GOLDEN=1 and review it\n{actual}"
    expected = path.read_text()
    if expected == actual:
        return None
    diff = difflib.unified_diff(expected.splitlines(keepends=True), actual.splitlines(keepends=True),
                                fromfile=f"golden/{path.name}", tofile="recorded invocations")
    return ("module invocations differ from the golden file (- golden, + this run); if the change is "
            "intended, regenerate with DESKGUARD_UPDATE_GOLDEN=1 and review the diff:\n" + "".join(diff))
