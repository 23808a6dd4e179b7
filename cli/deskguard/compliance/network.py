"""NET-001 not tethered / not on mobile data, NET-002 no open Wi-Fi, NET-003 call system reachable through the
VPN within the policy's limits: the nightly run's and `deskguard netcheck`'s judges of the `network` posture
section. The judging itself lives in plugins/module_utils/deskguard_network_judges.py, which the laptop runs too
(network-trouble notifications, docs/operators.md): one verdict on both sides, no copy. Here each of its results
becomes a Result."""

from __future__ import annotations

from ..site import module_utils
from .results import Result, settle


def _judges():
    return module_utils("deskguard_network_judges")


def _wrap(name):
    def judge(p: dict, policy: dict, _posture: dict | None = None) -> Result:
        return Result(**getattr(_judges(), name)(p, policy))
    judge.__name__ = name
    return judge


tethering, open_wifi, call_system = _wrap("tethering"), _wrap("open_wifi"), _wrap("call_system")


def limits(policy: dict) -> dict:
    return _judges().limits(policy)


JUDGES = {"NET-001": ("network", tethering), "NET-002": ("network", open_wifi), "NET-003": ("network", call_system)}


def judge_all(network: dict, policy: dict) -> list:
    """NET-001..003 for one observation, with their catalog titles (what `deskguard netcheck` shows)."""
    from .catalog import CONTROLS

    out = []
    for cid, (_section, judge) in JUDGES.items():
        r = settle(judge(network, policy))
        control = CONTROLS[cid]
        r.title, r.severity, r.remediation = control.title, control.severity, control.remediation
        out.append(r)
    return out
