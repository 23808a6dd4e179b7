"""How the nightly run reads a Linux laptop's posture: from the agent's installed collector when its files are
this kit's, else by shipping the collector as the deskguard_posture module.

Both run the same code on the laptop and return the same shape. The installed one costs a fraction of the
laptop's CPU: its bytecode was written once at install, while a shipped module (AnsiballZ) is compiled from
source on every call, Ansible's own module_utils included (docs/compliance.md, "Performance"). It is asked
only where the policy installs the agent; a laptop whose agent is missing, older or altered answers so, and
is read the shipped way in the same task, with the reason kept beside its result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from ..site import module_utils
from ..site.module_code import digests

CODE = "deskguard_agent_posture"   # the laptop's half: it checks the files, then runs the collector
# The launcher where AGT-001's facts look for it, and the laptop's exit code for "not this kit's code".
COMMAND = "/%s posture" % module_utils("deskguard_agent_health").AGENT_BIN
STALE = module_utils(CODE).STALE
NOT_FOUND = (126, 127)   # the shell's "cannot execute" and "not found"


@dataclass
class Collected:
    result: dict            # the deskguard_posture module's shape: posture, errors, timings (or failed/unreachable)
    module_calls: int       # round trips to the laptop
    collector: str          # "installed" or "shipped"
    why_shipped: str | None = None   # the installed collector's answer when it was asked and not used
    agent_code_differs: bool = False


def request(params: dict) -> bytes:
    return json.dumps({"modules": digests(CODE), "params": params}).encode()


def _answer(res: dict) -> tuple[dict | None, str, bool]:
    """(the posture result or None, why not, whether the agent's code differs from the kit's)."""
    rc = res.get("rc")
    text = (res.get("stdout") or "").strip()
    if rc in NOT_FOUND:   # no launcher, or no interpreter for it: the shell says which
        err = (res.get("stderr") or "").strip().splitlines() or [f"exit {rc}"]
        return None, f"the agent's launcher could not be run: {err[-1][:200]}", False
    try:
        # Only the last line: a login banner or a shell's notice may come before it.
        data = json.loads(text.splitlines()[-1]) if text else None
    except ValueError:
        data = None
    if rc == 0 and isinstance(data, dict) and isinstance(data.get("posture"), dict):
        return {k: data.get(k) or {} for k in ("posture", "errors", "timings")}, "", False
    if rc == STALE and isinstance(data, dict) and data.get("stale"):
        return None, f"the agent's installed code is not this kit's ({data['stale']})", True
    detail = (data or {}).get("error") if isinstance(data, dict) else None
    if not detail:
        err = (res.get("stderr") or "").strip().splitlines() or text.splitlines() or ["no output"]
        detail = err[-1]
    return None, f"the agent's installed collector failed (exit {rc}): {detail[:200]}", False


def collect(params: dict, installed: Callable[[str, bytes], dict] | None, shipped: Callable[[], dict]) -> Collected:
    """installed(command, stdin) runs a command on the laptop as root ({rc, stdout, stderr}); None where the
    agent is not part of the policy. shipped() runs the deskguard_posture module."""
    if installed is None:
        return Collected(shipped(), 1, "shipped")
    result, why, differs = _answer(installed(COMMAND, request(params)))
    if result is not None:
        return Collected(result, 1, "installed")
    return Collected(shipped(), 2, "shipped", why, differs)
