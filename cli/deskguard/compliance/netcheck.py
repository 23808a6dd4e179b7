"""`deskguard netcheck HOST`: run the network check on one laptop now and turn NET-001..003 into what a helpdesk
reads to the operator, with the evidence underneath. One read-only module call through the runner; audited."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import DeskguardError
from .wording import shown

KINDS = {"wired": "wired connection", "wifi": "Wi-Fi", "usb_tether": "a phone's USB tethering",
         "bluetooth_pan": "a phone's Bluetooth tethering", "mobile_broadband": "a mobile broadband modem",
         "virtual": "a virtual interface", "unknown": "an unidentified link"}
ALLOWED = "The call system requires the home broadband or the company mobile Wi-Fi."


@dataclass
class Netcheck:
    host: str
    network: dict
    controls: list[dict]
    verdict: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 every NET control passed (or does not apply); 1 a problem was found or something is unknown."""
        return 0 if all(c["status"] in ("pass", "warn", "not_applicable", "waived") for c in self.controls) else 1

    def to_dict(self, language: str | None = None) -> dict:
        out = {"host": self.host, "verdict": self.verdict, "controls": self.controls, "network": self.network,
               "exit_code": self.exit_code}
        if language:
            out["operator"] = {"language": language, "lines": self.operator_lines(language)}
        return out

    def operator_lines(self, language: str) -> list[str]:
        """What the operator at the laptop is told about the same verdict, in ``language`` (docs/operators.md)."""
        from ..site import module_utils

        return module_utils("deskguard_operator_network").lines(self.controls, language)


def _problems(control: dict) -> list[str]:
    return [e for e in control.get("evidence") or [] if not e.startswith("could not determine")]


def _unknowns(control: dict) -> list[str]:
    prefix = "could not determine: "
    return [e[len(prefix):] for e in control.get("evidence") or [] if e.startswith(prefix)]


def verdict(network: dict, controls: list[dict]) -> list[str]:
    """Plain sentences, most important first: a phone or mobile data, open Wi-Fi, then the call system."""
    by_id = {c["id"]: c for c in controls}
    lines = []
    net1, net2, net3 = (by_id.get(k, {}) for k in ("NET-001", "NET-002", "NET-003"))
    if net1.get("status") == "fail":
        lines.append(_problems(net1)[0] + " " + ALLOWED)
        lines.extend(_problems(net1)[1:])
    if net2.get("status") == "fail":
        lines.extend(_problems(net2))
    if net3.get("status") == "fail":
        lines.extend(_problems(net3))
    unknown = [u for c in (net1, net2, net3) if c.get("status") == "error" for u in _unknowns(c)]
    if unknown and not lines:
        lines.append("Could not check everything: " + "; ".join(unknown) + ".")
    if not lines:
        uplink, samples = network.get("uplink") or {}, (network.get("call_system") or {}).get("samples") or {}
        text = f"Network OK: {KINDS.get(uplink.get('kind'), 'connected')}" + (f" on {uplink['interface']}"
                                                                             if uplink.get("interface") else "")
        if (network.get("vpn") or {}).get("up"):
            text += ", VPN up"
        if samples.get("rtt_avg_ms") is not None:
            text += (f", call system reachable in {samples['rtt_avg_ms']:g} ms (jitter {samples['jitter_ms'] or 0:g} "
                     f"ms, loss {samples['loss_pct']:g}%)")
        lines.append(text + ".")
    return lines


def evidence(network: dict) -> list[str]:
    """What the verdict rests on, one fact a line."""
    out = []
    u = network.get("uplink")
    if u:
        kind = KINDS.get(u.get("kind"), u.get("kind"))
        out.append(f"default route: {u.get('interface')} via {u.get('gateway') or '-'}, {kind}"
                   + (f" ({', '.join(u.get('evidence') or [])})" if u.get("evidence") else "")
                   + (f", USB id {u['usb_id']}" if u.get("usb_id") else ""))
    else:
        out.append("default route: none found")
    nm = network.get("networkmanager")
    out.append(f"NetworkManager: type {nm.get('type')}, metered {nm.get('metered')}" if nm
               else "NetworkManager: not present")
    am = network.get("android_metered")
    out.append("DHCP lease: " + ("carries ANDROID_METERED" if am else "no ANDROID_METERED" if am is False
                                 else "no lease file found"))
    w = network.get("wifi")
    if w:
        out.append(f"Wi-Fi: \"{w.get('ssid')}\" BSSID {w.get('bssid') or '-'}, security {w.get('security') or 'unknown'} "
                   f"(from {w.get('source') or 'nothing'})")
    v = network.get("vpn")
    if v:
        out.append(f"VPN {v.get('interface')}: " + ("up" if v.get("up") else "down")
                   + (f", last handshake {v['handshake_age']} s ago" if v.get("handshake_age") is not None else ""))
    cs = network.get("call_system") or {}
    for t in cs.get("targets") or []:
        ports = ", ".join(f"{p} {r['state']}" + (f" {r['ms']:g} ms" if r.get("ms") is not None else "")
                          for p, r in (t.get("ports") or {}).items())
        where = f" via {t['route_dev']}" + (" (the VPN)" if t.get("through_vpn") else "") if t.get("route_dev") else ""
        found = ", ".join(t["addresses"]) + where if t.get("resolved") else t.get("error") or "not resolved"
        out.append(f"call system {t['host']}: {found}" + (f"; {ports}" if ports else ""))
    s = cs.get("samples")
    if s:
        def ms(key):
            return "not measured" if s.get(key) is None else f"{s[key]:g} ms"
        out.append(f"samples ({shown(s.get('sent'))} TCP handshakes to {s.get('host') or 'the call system'}"
                   + (f":{s['port']}" if s.get("port") else "") + f"): avg {ms('rtt_avg_ms')}, min {ms('rtt_min_ms')}, "
                   f"max {ms('rtt_max_ms')}, jitter {ms('jitter_ms')}, loss "
                   + ("not measured" if s.get("loss_pct") is None else f"{s['loss_pct']:g}%"))
    for item in network.get("unknown") or []:
        out.append(f"unknown: {item}")
    if network.get("elapsed") is not None:
        out.append(f"checked in {network['elapsed']} s" + (f" (limit {network['time_limit']} s)"
                                                           if network.get("time_limit") is not None else ""))
    return out


def run(site, store, host: str, *, actor: str | None = None) -> Netcheck:
    """Run playbooks/netcheck.yml on HOST and judge it. DeskguardError (exit 3) when the laptop cannot be reached."""
    from ..runner import run_on_host

    hostname, result = run_on_host(site, "netcheck.yml", host)
    found = result.task_result("deskguard_network_posture")
    if not found or "controls" not in found:
        outcome = next(iter(result.hosts.values()), None)
        why = "; ".join(outcome.messages) if outcome and outcome.messages else result.status
        store.audit(actor, "netcheck", hostname, {"exit_code": result.exit_code or 1, "error": why[:300]})
        raise DeskguardError(f"netcheck: no answer from {hostname}: {why}", exit_code=result.exit_code or 1)
    check = Netcheck(hostname, found["network"], found["controls"])
    check.verdict, check.evidence = verdict(check.network, check.controls), evidence(check.network)
    store.audit(actor, "netcheck", hostname, {"exit_code": check.exit_code,
                                               "controls": {c["id"]: c["status"] for c in check.controls}})
    return check
