"""USB-001..003 and VPN-001..003 on Linux. Judged by the laptop-side code's own pure `evaluate` (module_utils),
so `deskguard usb list`, the role's report and the nightly run cannot disagree; these adapters only reshape its
results. Their own module because the Windows judges (windows.py) reuse the VPN one."""

from __future__ import annotations

from ..site import module_utils
from .results import Result


def usb(p: dict, policy: dict, _posture: dict | None = None) -> dict[str, Result]:
    from .policy import approved_usb_devices
    status = {"pass": "pass", "fail": "fail", "not-applicable": "not_applicable"}
    out = {}
    for r in module_utils("deskguard_usb_report").evaluate(p, policy.get("usb_control_mode"),
                                                           approved_usb_devices(policy)):
        # The observed line already names what is wrong (daemon state, drifted files, unapproved devices).
        # A control that does not apply says why (the mode), like every other not-applicable result.
        evidence = ([str(r["observed"])] if r["status"] == "fail" else
                    [f"{r['observed']}, the control applies in {r['expected']}"] if r["status"] == "not-applicable"
                    and r["observed"] else [])
        out[r["id"]] = Result(r["id"], status.get(r["status"], "error"), r["observed"], r["expected"], evidence)
    return out


def vpn(p: dict, policy: dict, _posture: dict | None = None) -> dict[str, Result]:
    expected = {"gateway_public_key": policy.get("vpn_gateway_public_key"),
                "public_key": policy.get("vpn_enrolled_public_key"),  # from the store, set by the caller
                "kill_switch": bool(policy.get("vpn_kill_switch")),
                "handshake_max_age": policy.get("vpn_handshake_max_age")}
    status = {"compliant": "pass", "noncompliant": "fail", "not_applicable": "not_applicable"}
    return {cid: Result(cid, status.get(r["state"], "error"), r.get("observed"), r.get("expected"),
                        list(r.get("findings") or []))
            for cid, r in module_utils("deskguard_vpn_facts").evaluate(p, expected).items()}
