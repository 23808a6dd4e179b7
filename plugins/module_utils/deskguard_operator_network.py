"""The operator's words for the network check: what NET-001..003 found, said so that the person at the laptop
knows what to do. The verdict itself is the NET judges' (deskguard_network_judges.py: status and observed
values per control); this module only picks the words for it, so the helpdesk (`deskguard netcheck
--lang`) and the laptop say the same thing. Pure Python 3.9+ stdlib.
"""

from __future__ import annotations

try:  # inside a module (Ansiballz) the kit's module_utils live under ansible.module_utils
    from ansible.module_utils import deskguard_vpn_facts
    from ansible.module_utils.deskguard_operator_words import N_, say
except ImportError:  # unit tests, the controller and the agent import them as plain modules
    import deskguard_vpn_facts
    from deskguard_operator_words import N_, say

MOBILE_KINDS = ("usb_tether", "bluetooth_pan", "mobile_broadband")

OK = N_("Your network is fine for calls.")
TETHERING = N_("You are connected through your phone's tethering. Please use your home internet or the company "
               "mobile Wi-Fi for calls.")
PHONE_HOTSPOT = N_("You are connected to a phone's hotspot. Please use your home internet or the company mobile "
                   "Wi-Fi for calls.")
MOBILE_DATA = N_("Your connection is using mobile data. Please use your home internet or the company mobile "
                 "Wi-Fi for calls.")
OPEN_WIFI = N_("The Wi-Fi \"%(ssid)s\" is not protected by a password. Please switch to your home Wi-Fi or a "
               "cable.")
WEAK_WIFI = N_("The Wi-Fi \"%(ssid)s\" uses outdated security. Please switch to your home Wi-Fi or a cable.")
VPN_DOWN = N_("The company VPN is not connected. Please restart the laptop; if that does not help, call the "
              "helpdesk.")
CALL_SYSTEM_UNREACHABLE = N_("The call system cannot be reached. Please check that your internet works; if it "
                             "does, call the helpdesk.")
CALL_QUALITY = N_("Your connection to the call system is slow or unstable, so calls may break up. Please move "
                  "closer to the Wi-Fi router or use a cable.")
NOT_CHECKED = N_("The network could not be fully checked. If calls do not work, please call the helpdesk.")


def _tethering(observed, _expected):
    if observed.get("kind") in MOBILE_KINDS:
        return TETHERING, {}
    return (PHONE_HOTSPOT if observed.get("kind") == "wifi" else MOBILE_DATA), {}


def _open_wifi(observed, _expected):
    ssid = observed.get("ssid") or "?"
    return (WEAK_WIFI if observed.get("security") == "wep" else OPEN_WIFI), {"ssid": ssid}


def _call_system(observed, expected):
    if expected.get("through_vpn"):
        age = observed.get("vpn_handshake_age")
        if not observed.get("vpn_up") or age is None or age > deskguard_vpn_facts.DEFAULT_HANDSHAKE_MAX_AGE:
            return VPN_DOWN, {}  # the judge's own test for "VPN is down" (tunnel not up, or the gateway silent)
    targets = (observed.get("targets") or {}).values()
    broken = any(t.get("resolved") is False or t.get("through_vpn") is False
                 or any(state != "open" for state in (t.get("ports") or {}).values()) for t in targets)
    if broken or observed.get("rtt_avg_ms") is None:
        return CALL_SYSTEM_UNREACHABLE, {}
    return CALL_QUALITY, {}  # reachable, so it failed on loss, jitter or round trip


WORDS = {"NET-001": _tethering, "NET-002": _open_wifi, "NET-003": _call_system}


def messages(controls):
    """[(message, params)] for the NET results (dicts with id, status, observed), most important first: one
    message per failed control; 'could not check' when nothing failed but something is unknown; else OK."""
    out = []
    for control in sorted(controls, key=lambda c: c.get("id") or ""):
        pick = WORDS.get(control.get("id"))
        if pick and control.get("status") == "fail":
            found = pick(control.get("observed") or {}, control.get("expected") or {})
            if found not in out:
                out.append(found)
    if not out and any(c.get("id") in WORDS and c.get("status") == "error" for c in controls):
        out.append((NOT_CHECKED, {}))
    return out or [(OK, {})]


def lines(controls, language):
    """The messages of `messages` in ``language``."""
    return [say(language, message, **params) for message, params in messages(controls)]
