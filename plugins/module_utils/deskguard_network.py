# -*- coding: utf-8 -*-
"""The laptop's network environment, read-only: which interface carries the default route and what kind of
link it is (wired, Wi-Fi, a phone's USB or Bluetooth tethering, mobile broadband), the Wi-Fi network and its
security, whether the VPN is up and carries the call system's routes, and how the call system answers (DNS,
TCP connect time, RTT / jitter / loss samples).

Two layers: pure parsers fed by command and sysfs outputs (unit-tested on recorded real-world inputs), and
`gather`, a thin collector with one overall deadline and a per-probe timeout. Anything that cannot be
determined (a missing tool, an interface that vanished, a name that does not resolve in time, a port that
hangs) is reported as unknown and listed in `unknown`; it is never turned into a good answer. The judging
against the policy is deskguard_network_judges.py (run on the controller, and on the laptop for the operator's
notifications). docs/netcheck.md gives
the source of every heuristic below.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time

try:  # inside a module (Ansiballz) the kit's module_utils live under ansible.module_utils
    from ansible.module_utils import deskguard_vpn_facts
    from ansible.module_utils.deskguard_wireguard import KILL_SWITCH_TABLE, Paths
except ImportError:  # unit tests, the controller and the agent import them as plain modules
    import deskguard_vpn_facts
    from deskguard_wireguard import KILL_SWITCH_TABLE, Paths

# Where the network_posture role leaves the call-system targets for the nightly collector and the agent.
CONFIG_PATH = "etc/deskguard/network-posture.json"

# usbnet drivers a phone binds when it shares its mobile data over USB (kernel drivers/net/usb/: rndis_host
# is Android's classic "USB tethering" (RNDIS), cdc_ncm newer Android phones, ipheth an iPhone's "Personal
# Hotspot" over USB; cdc_ether (CDC ECM) is what some phones and the Linux USB gadget present, and also what some
# USB-Ethernet docks use: docks the company issues are allowed by USB id in the policy).
# cdc_subset is what Linux binds for the Linux USB gadget's ids (0525:a4a2, "Linux-USB Ethernet/RNDIS Gadget"),
# which Linux-based phones present and QEMU's usb-net device (the lab's tethering phone) presents too.
TETHER_DRIVERS = {"rndis_host": "a phone's USB tethering", "cdc_ncm": "a phone's USB tethering",
                  "ipheth": "an iPhone's USB tethering", "cdc_ether": "a phone's USB tethering",
                  "cdc_subset": "a phone's USB tethering"}
# Cellular modems: usbnet sets DEVTYPE=wwan for drivers flagged FLAG_WWAN (usbnet.c); these are the common ones.
WWAN_DRIVERS = {"qmi_wwan", "cdc_mbim", "huawei_cdc_ncm", "sierra_net", "mhi_net", "ipa"}
# NetworkManager device types (nmcli GENERAL.TYPE) that mean a phone or modem.
NM_TETHER_TYPES = {"bt": "bluetooth_pan", "gsm": "mobile_broadband", "cdma": "mobile_broadband",
                   "modem": "mobile_broadband", "wwan": "mobile_broadband"}
VIRTUAL_DRIVERS = {"wireguard", "tun", "bridge", "veth", "bond", "vlan", "macvlan", "dummy"}

# Wi-Fi hotspots of phones: default SSIDs (Android's "AndroidAP" + digits; iPhones use the device name,
# "<Name>'s iPhone"), BSSID prefixes (Android's soft AP 02:1a:11, as ChromeOS shill's tethering detection
# uses), and the DHCP vendor option Android's tethering DHCP server sends when its upstream is metered.
DEFAULT_HOTSPOT_SSIDS = ["AndroidAP*", "*iPhone*", "*Galaxy*", "*Pixel*", "*Redmi*", "*HUAWEI P*", "*OnePlus*"]
ANDROID_BSSID_PREFIX = "02:1a:11"
ANDROID_METERED = "ANDROID_METERED"

UNKNOWN = "unknown"
_C_ENV = dict(os.environ, LC_ALL="C", LANG="C")


# ------------------------------------------------------------------------------------------- parsers

def default_routes(ip_route_json):
    """`ip -j -4 route show default` (a JSON list) -> [{dev, gateway, metric}] best first."""
    routes = []
    for r in json.loads(ip_route_json or "[]"):
        if r.get("dst") in ("default", "0.0.0.0/0") and r.get("dev"):
            routes.append({"dev": r["dev"], "gateway": r.get("gateway"), "metric": int(r.get("metric") or 0)})
    return sorted(routes, key=lambda r: r["metric"])


def route_get(ip_route_get_json):
    """`ip -j route get ADDR` -> {dev, gateway, prefsrc} of the route the kernel would use."""
    routes = json.loads(ip_route_get_json or "[]")
    if not routes:
        return None
    r = routes[0]
    return {"dev": r.get("dev"), "gateway": r.get("gateway"), "prefsrc": r.get("prefsrc")}


def parse_uevent(text):
    """/sys/class/net/IF/uevent (KEY=value lines) -> dict."""
    out = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _nm_unescape(value):
    return value.replace("\\:", ":").replace("\\\\", "\\")


def _nm_split(line):
    """One `nmcli -t` line -> its fields (':' separates, '\\:' is a literal colon)."""
    return [_nm_unescape(f) for f in re.split(r"(?<!\\):", line)]


def parse_nmcli_device_show(text):
    """`nmcli -t -f GENERAL,DHCP4 device show IF` -> {type, driver, metered, connection, dhcp4 options}."""
    fields, dhcp = {}, {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        value = _nm_unescape(value)
        if key.startswith("DHCP4.OPTION"):
            name, _, opt = value.partition(" = ")
            dhcp[name.strip()] = opt.strip()
        else:
            fields[key] = value
    if not fields:
        return None
    return {"type": fields.get("GENERAL.TYPE"), "driver": fields.get("GENERAL.DRIVER") or None,
            "metered": nm_metered(fields.get("GENERAL.METERED")),
            "connection": fields.get("GENERAL.CONNECTION") if fields.get("GENERAL.CONNECTION") not in ("", "--")
            else None, "dhcp4": dhcp}


def nm_metered(value):
    """nmcli's METERED text ('yes', 'yes (guessed)', 'no (guessed)', 'unknown') -> NMMetered's names."""
    value = (value or "").strip().lower()
    if not value or value == "unknown":
        return UNKNOWN
    base = value.split()[0]
    return ("guess_" + base) if "guessed" in value else base


def parse_nmcli_wifi(text):
    """`nmcli -t -f ACTIVE,SSID,BSSID,SECURITY device wifi list` -> [{active, ssid, bssid, security}]."""
    out = []
    for line in (text or "").splitlines():
        f = _nm_split(line)
        if len(f) < 4:
            continue
        out.append({"active": f[0] == "yes", "ssid": f[1], "bssid": f[2].lower(),
                    "security": wifi_security(f[3])})
    return out


def wifi_security(text):
    """nmcli SECURITY ('', '--', 'WEP', 'WPA1 WPA2', 'WPA3', 'OWE', '802.1X') or wpa_supplicant key_mgmt
    ('NONE', 'WPA2-PSK', 'SAE', 'WPA2/IEEE 802.1X/EAP', 'OWE') -> open | wep | wpa | wpa2 | wpa3 | owe | enterprise."""
    t = (text or "").strip().upper()
    if t in ("", "--", "NONE"):
        return "open"
    if "802.1X" in t or "EAP" in t:
        return "enterprise"
    if "WPA3" in t or "SAE" in t:
        return "wpa3"
    if "WPA2" in t or "RSN" in t:
        return "wpa2"
    if "OWE" in t:
        return "owe"
    if "WPA" in t:
        return "wpa"
    if "WEP" in t:
        return "wep"
    return UNKNOWN


def parse_iw_link(text):
    """`iw dev IF link` -> {connected, bssid, ssid, freq}; 'Not connected.' -> connected False."""
    text = text or ""
    m = re.search(r"Connected to ([0-9a-fA-F:]{17})", text)
    if not m:
        return {"connected": False, "bssid": None, "ssid": None, "freq": None}
    ssid = re.search(r"^\s*SSID: (.*)$", text, re.M)
    freq = re.search(r"^\s*freq: ([0-9.]+)", text, re.M)
    return {"connected": True, "bssid": m.group(1).lower(), "ssid": ssid.group(1) if ssid else None,
            "freq": float(freq.group(1)) if freq else None}


def parse_wpa_cli_status(text):
    """`wpa_cli -i IF status` (key=value) -> {ssid, bssid, key_mgmt, pairwise_cipher, state}."""
    kv = parse_uevent(text)
    if "wpa_state" not in kv:
        return None
    return {"ssid": kv.get("ssid"), "bssid": (kv.get("bssid") or "").lower() or None, "state": kv.get("wpa_state"),
            "key_mgmt": kv.get("key_mgmt"), "pairwise_cipher": kv.get("pairwise_cipher")}


def wpa_security(status):
    """Security from wpa_cli: key_mgmt NONE with a WEP cipher is WEP, without one it is open."""
    if not status or status.get("state") != "COMPLETED":
        return UNKNOWN
    if (status.get("key_mgmt") or "NONE").upper() == "NONE":
        return "wep" if "WEP" in (status.get("pairwise_cipher") or "").upper() else "open"
    return wifi_security(status.get("key_mgmt"))


_HEX_METERED = ANDROID_METERED.encode().hex()


def android_metered_in(text):
    """Whether a DHCP lease (dhclient's `option vendor-encapsulated-options` in text or colon-hex, systemd-networkd's
    hex, NetworkManager's DHCP4 option) carries Android's ANDROID_METERED marker."""
    if not text:
        return False
    if ANDROID_METERED in text:
        return True
    compact = re.sub(r"[^0-9a-fA-F]", "", text).lower()
    return _HEX_METERED in compact


def dhclient_lease_for(text, interface):
    """The last `lease { ... }` block for `interface` in a dhclient leases file (the current one), or None."""
    blocks = re.findall(r"lease\s*\{(.*?)\n\}", text or "", re.S)
    mine = [b for b in blocks if re.search(r'interface\s+"%s"\s*;' % re.escape(interface), b)]
    return mine[-1] if mine else None


def bssid_hints(bssid):
    """What a BSSID alone suggests (weak evidence, never a verdict on its own except Android's soft-AP prefix)."""
    hints = []
    if not bssid:
        return hints
    if bssid.lower().startswith(ANDROID_BSSID_PREFIX):
        hints.append("android_softap_bssid")
    try:
        if int(bssid.split(":")[0], 16) & 0x02:
            hints.append("locally_administered_bssid")
    except ValueError:
        pass
    return hints


def ssid_matches(ssid, patterns):
    """The first shell-style pattern (case-insensitive) the SSID matches, or None."""
    if ssid is None:
        return None
    for p in patterns or ():
        if fnmatch.fnmatchcase(ssid.lower(), str(p).lower()):
            return str(p)
    return None


def classify_link(name, uevent, driver, wireless, nm_type=None, virtual=False):
    """(kind, evidence) for one interface from its sysfs facts (uevent DEVTYPE, bound driver, wireless dir) and
    NetworkManager's device type. kind: wired | wifi | usb_tether | bluetooth_pan | mobile_broadband | virtual
    | unknown. virtual: the kernel lists the interface under /sys/devices/virtual (veth, tun, ... have no
    device/driver link, so their driver cannot be read from sysfs)."""
    devtype = (uevent or {}).get("DEVTYPE")
    ev = []
    if driver:
        ev.append("driver %s" % driver)
    if devtype:
        ev.append("DEVTYPE=%s" % devtype)
    if nm_type:
        ev.append("NetworkManager type %s" % nm_type)
    if devtype == "bluetooth" or driver == "bnep" or name.startswith("bnep") or nm_type == "bt":
        return "bluetooth_pan", ev
    if devtype == "wwan" or driver in WWAN_DRIVERS or NM_TETHER_TYPES.get(nm_type) == "mobile_broadband":
        return "mobile_broadband", ev
    if driver in TETHER_DRIVERS:
        return "usb_tether", ev
    if wireless or devtype == "wlan" or nm_type == "wifi":
        return "wifi", ev
    if virtual or driver in VIRTUAL_DRIVERS or devtype in ("wireguard", "bridge", "vlan", "bond") or \
            nm_type in ("wireguard", "tun", "bridge", "loopback"):
        return "virtual", ev + (["listed under /sys/devices/virtual"] if virtual and not driver else [])
    if driver or nm_type == "ethernet":
        return "wired", ev
    return UNKNOWN, ev


def rtt_stats(samples):
    """Samples (milliseconds, None for a lost one) -> {sent, received, loss_pct, rtt_avg/min/max_ms, jitter_ms}.
    Jitter: mean absolute difference between consecutive answered samples (RFC 3550's interarrival jitter,
    without its 1/16 smoothing, which needs many more samples than a short check takes)."""
    got = [s for s in samples if s is not None]
    out = {"sent": len(samples), "received": len(got),
           "loss_pct": round(100.0 * (len(samples) - len(got)) / len(samples), 1) if samples else None,
           "rtt_avg_ms": None, "rtt_min_ms": None, "rtt_max_ms": None, "jitter_ms": None}
    if got:
        out.update(rtt_avg_ms=round(sum(got) / len(got), 1), rtt_min_ms=round(min(got), 1),
                   rtt_max_ms=round(max(got), 1))
    if len(got) >= 2:
        out["jitter_ms"] = round(sum(abs(b - a) for a, b in zip(got, got[1:])) / (len(got) - 1), 1)
    return out


# ------------------------------------------------------------------------------------------ gatherer

class Deadline(object):
    """The overall time limit; each probe gets at most `per_probe` seconds and never more than what is left."""

    def __init__(self, total, per_probe, clock=time.monotonic):
        self.clock, self.start, self.total, self.per_probe = clock, clock(), float(total), float(per_probe)

    def left(self):
        return self.total - (self.clock() - self.start)

    def budget(self):
        return max(0.0, min(self.per_probe, self.left()))

    def expired(self):
        return self.left() <= 0.05


class Probe(object):
    """Runs commands and reads files under a root, within the deadline. Records what it could not do."""

    def __init__(self, deadline, root="/"):
        self.deadline, self.root, self.unknown = deadline, root, []

    def path(self, rel):
        return os.path.join(self.root, rel.lstrip("/"))

    def has(self, tool):
        return shutil.which(tool) is not None

    def run(self, argv, what):
        """stdout of argv, or None (recorded as unknown: missing tool, timeout, non-zero exit)."""
        budget = self.deadline.budget()
        if budget <= 0:
            self.unknown.append("%s: no time left" % what)
            return None
        try:
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_C_ENV, timeout=budget)
        except FileNotFoundError:
            self.unknown.append("%s: %s is not installed" % (what, argv[0]))
            return None
        except subprocess.TimeoutExpired:
            self.unknown.append("%s: no answer within %.1f s" % (what, budget))
            return None
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            self.unknown.append("%s: %s exited %d%s" % (what, argv[0], proc.returncode,
                                                        (" (%s)" % err[-1][:120]) if err else ""))
            return None
        return proc.stdout.decode(errors="replace")

    def read(self, rel):
        try:
            with open(self.path(rel), errors="replace") as fh:
                return fh.read()
        except OSError:
            return None


def _link(probe, name):
    """sysfs facts of one interface; an interface that vanished mid-check gives kind unknown."""
    base = "sys/class/net/%s" % name
    uevent = probe.read(base + "/uevent")
    if uevent is None:
        probe.unknown.append("interface %s disappeared during the check (no %s)" % (name, "/" + base))
        return {"interface": name, "present": False, "uevent": {}, "driver": None, "wireless": False,
                "usb_id": None, "virtual": False}
    driver = None
    try:
        driver = os.path.basename(os.readlink(probe.path(base + "/device/driver")))
    except OSError:
        pass
    uev = parse_uevent(uevent)
    wireless = os.path.isdir(probe.path(base + "/wireless")) or os.path.exists(probe.path(base + "/phy80211"))
    usb_id = None
    for parent in ("/device", "/device/.."):   # the USB interface's parent is the USB device
        vid, pid = (probe.read(base + parent + "/" + f) for f in ("idVendor", "idProduct"))
        if vid and pid:
            usb_id = "%s:%s" % (vid.strip(), pid.strip())
            break
    virtual = "/devices/virtual/" in os.path.realpath(probe.path(base))
    return {"interface": name, "present": True, "uevent": uev, "driver": driver, "wireless": wireless,
            "usb_id": usb_id, "virtual": virtual}


def _lease_android_metered(probe, name, ifindex):
    """True/False when a lease file of the interface was found, None when none was."""
    texts = []
    for directory in ("var/lib/dhcp", "var/lib/NetworkManager"):
        try:
            files = sorted(os.listdir(probe.path(directory)))
        except OSError:
            continue
        for f in files:
            if f.endswith(".leases"):       # dhclient: one file, a block per lease naming its interface
                text = dhclient_lease_for(probe.read(os.path.join(directory, f)), name)
            elif f.endswith(".lease") and f.rsplit(".", 1)[0].endswith("-" + name):
                text = probe.read(os.path.join(directory, f))   # NetworkManager: <client>-<uuid>-<iface>.lease
            else:
                continue
            if text:
                texts.append(text)
    if ifindex:
        networkd = probe.read("run/systemd/netif/leases/%s" % ifindex)
        if networkd:
            texts.append(networkd)
    if not texts:
        return None
    return any(android_metered_in(t) for t in texts)


def _wifi(probe, name, nm_available):
    wifi = {"ssid": None, "bssid": None, "security": UNKNOWN, "source": None}
    if probe.has("iw"):
        link = probe.run(["iw", "dev", name, "link"], "Wi-Fi link")
        if link is not None:
            parsed = parse_iw_link(link)
            wifi.update(ssid=parsed["ssid"], bssid=parsed["bssid"], source="iw")
    if nm_available:
        listing = probe.run(["nmcli", "-t", "-f", "ACTIVE,SSID,BSSID,SECURITY", "device", "wifi", "list",
                             "ifname", name, "--rescan", "no"], "Wi-Fi security (nmcli)")
        active = [w for w in parse_nmcli_wifi(listing) if w["active"]] if listing else []
        if active:
            wifi.update(ssid=wifi["ssid"] or active[0]["ssid"], bssid=wifi["bssid"] or active[0]["bssid"],
                        security=active[0]["security"], source="nmcli")
    if wifi["security"] == UNKNOWN and probe.has("wpa_cli"):
        status = parse_wpa_cli_status(probe.run(["wpa_cli", "-i", name, "status"], "Wi-Fi security (wpa_cli)"))
        if status:
            wifi.update(ssid=wifi["ssid"] or status["ssid"], bssid=wifi["bssid"] or status["bssid"],
                        security=wpa_security(status), source=wifi["source"] or "wpa_cli")
    if wifi["security"] == UNKNOWN:
        probe.unknown.append("Wi-Fi security of %s: neither NetworkManager nor wpa_supplicant answered" % name)
    wifi["bssid_hints"] = bssid_hints(wifi["bssid"])
    return wifi


def _resolve(host, timeout):
    """(addresses, error): getaddrinfo in a thread so a resolver that hangs cannot hold the check."""
    box = {}

    def work():
        try:
            infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
            box["addrs"] = sorted({i[4][0] for i in infos})
        except socket.gaierror as exc:
            box["error"] = "does not resolve (%s)" % exc.strerror
        except Exception as exc:  # noqa: BLE001 - any resolver failure is reported, never raised
            box["error"] = "resolver error (%s)" % exc

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return None, "no DNS answer within %.1f s" % timeout
    return box.get("addrs"), box.get("error")


def _connect_ms(addr, port, timeout):
    """(milliseconds, state): open | refused | unknown (no answer in time) | error."""
    start = time.monotonic()
    try:
        with socket.create_connection((addr, int(port)), timeout=timeout):
            return round((time.monotonic() - start) * 1000.0, 1), "open"
    except socket.timeout:
        return None, UNKNOWN
    except ConnectionRefusedError:
        return round((time.monotonic() - start) * 1000.0, 1), "refused"
    except OSError as exc:
        return None, "error: %s" % (exc.strerror or exc)


def _call_system(probe, targets, vpn_interface, samples, sample_timeout, interval):
    out = {"targets": [], "samples": None}
    first_open = None
    for t in targets:
        host, ports = str(t.get("host")), [int(p) for p in t.get("ports") or []]
        entry = {"host": host, "addresses": [], "resolved": None, "route_dev": None, "through_vpn": None,
                 "ports": {}}
        out["targets"].append(entry)
        if probe.deadline.expired():
            probe.unknown.append("call system %s: no time left" % host)
            continue
        addrs, error = _resolve(host, probe.deadline.budget())
        if addrs is None:
            entry["resolved"] = False if error and error.startswith("does not resolve") else None
            entry["error"] = error
            if entry["resolved"] is None:
                probe.unknown.append("call system %s: %s" % (host, error))
            continue
        entry.update(addresses=addrs, resolved=True)
        route = route_get(probe.run(["ip", "-j", "route", "get", addrs[0]], "route to %s" % host))
        if route:
            entry.update(route_dev=route["dev"], through_vpn=route["dev"] == vpn_interface)
        for port in ports:
            budget = probe.deadline.budget()
            if budget <= 0:
                entry["ports"][str(port)] = {"state": UNKNOWN, "ms": None}
                probe.unknown.append("call system %s:%d: no time left" % (host, port))
                continue
            ms, state = _connect_ms(addrs[0], port, budget)
            entry["ports"][str(port)] = {"state": state, "ms": ms}
            if state == UNKNOWN:
                probe.unknown.append("call system %s:%d: no answer within %.1f s" % (host, port, budget))
            elif state == "open" and first_open is None:
                first_open = (host, addrs[0], port)
    if first_open and samples > 0:
        got = []
        for i in range(samples):
            if probe.deadline.left() < sample_timeout + 0.1:
                probe.unknown.append("RTT samples: stopped after %d of %d (time limit)" % (i, samples))
                break
            ms, state = _connect_ms(first_open[1], first_open[2], sample_timeout)
            got.append(ms if state in ("open", "refused") else None)
            time.sleep(interval)
        out["samples"] = dict(rtt_stats(got), host=first_open[0], port=first_open[2], method="tcp-connect",
                              sample_timeout_ms=int(sample_timeout * 1000))
    return out


def gather(targets=(), vpn_interface="wg0", time_limit=10.0, probe_timeout=2.0, samples=10, sample_timeout=0.9,
           sample_interval=0.05, root="/"):
    """Everything in one dict (see docs/netcheck.md for its fields). Never raises for a missing tool or a
    network that misbehaves; finishes within `time_limit` seconds plus at most one probe's timeout."""
    probe = Probe(Deadline(time_limit, probe_timeout), root)
    started = time.monotonic()
    tools = {t: probe.has(t) for t in ("ip", "nmcli", "iw", "wpa_cli", "wg")}
    result = {"tools": tools, "uplink": None, "default_routes": [], "networkmanager": None, "android_metered": None,
              "wifi": None, "vpn": None, "call_system": None}
    routes = probe.run(["ip", "-j", "-4", "route", "show", "default"], "default route") if tools["ip"] else None
    if routes is None and not tools["ip"]:
        probe.unknown.append("default route: ip (iproute2) is not installed")
    if routes is not None:
        result["default_routes"] = default_routes(routes)
        physical = [r for r in result["default_routes"] if r["dev"] != vpn_interface]
        if not result["default_routes"]:
            probe.unknown.append("no default route: the laptop is offline")
        # With a full tunnel the default route is the VPN; the link that carries the tunnel is the next one.
        best = physical[0] if physical else None
        if best:
            link = _link(probe, best["dev"])
            nm = None
            if tools["nmcli"]:
                nm = parse_nmcli_device_show(probe.run(["nmcli", "-t", "-f", "GENERAL,DHCP4", "device", "show",
                                                        best["dev"]], "NetworkManager device"))
            kind, evidence = (classify_link(best["dev"], link["uevent"], link["driver"], link["wireless"],
                                            nm and nm["type"], link["virtual"]) if link["present"] else (UNKNOWN, []))
            result["uplink"] = {"interface": best["dev"], "gateway": best["gateway"], "kind": kind,
                                "driver": link["driver"], "devtype": link["uevent"].get("DEVTYPE"),
                                "usb_id": link["usb_id"], "present": link["present"], "evidence": evidence}
            result["networkmanager"] = nm
            metered = android_metered_in(" ".join((nm or {}).get("dhcp4", {}).values())) or None
            from_lease = _lease_android_metered(probe, best["dev"], link["uevent"].get("IFINDEX"))
            result["android_metered"] = True if (metered or from_lease) else from_lease
            if kind == "wifi":
                result["wifi"] = _wifi(probe, best["dev"], nm is not None)
    if vpn_interface:
        paths = Paths(vpn_interface)
        facts = deskguard_vpn_facts.gather(vpn_interface, paths.key, [paths.conf, paths.nm], KILL_SWITCH_TABLE,
                                           out=lambda argv: probe.run(argv, "VPN (%s)" % " ".join(argv[:2]))
                                           if shutil.which(argv[0]) else None)
        # `nft` and `wg` exit non-zero when the table or interface is absent: that is an answer, not an unknown.
        probe.unknown = [u for u in probe.unknown if not (u.startswith("VPN (") and " exited " in u)]
        ages = [p["latest_handshake_age"] for p in facts["peers"] if p["latest_handshake_age"] is not None]
        # `wg show` answers for an interface that is administratively down too: IFF_UP (0x1) decides.
        flags = probe.read("sys/class/net/%s/flags" % vpn_interface)
        admin_up = bool(flags) and bool(int(flags.strip(), 16) & 0x1)
        result["vpn"] = {"interface": vpn_interface, "up": bool(facts["interface_up"] and admin_up),
                         "admin_up": admin_up, "peers": len(facts["peers"]),
            "handshake_age": min(ages) if ages else None, "configured": bool(facts["config_files"])}
    if targets:
        result["call_system"] = _call_system(probe, list(targets), vpn_interface, int(samples),
                                             float(sample_timeout), float(sample_interval))
    result.update(unknown=probe.unknown, complete=not probe.unknown, time_limit=time_limit,
                  elapsed=round(time.monotonic() - started, 2))
    return result


def read_config(root="/"):
    """The targets and limits the network_posture role left on the laptop ({} when it has not run)."""
    try:
        with open(os.path.join(root, CONFIG_PATH)) as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def posture_section(root="/"):
    """The `network` section of the nightly posture (deskguard_posture.COLLECTORS): gather() with the settings
    the role deployed; without them, the link is still classified and the call-system probes say why not."""
    cfg = read_config(root)
    keys = ("targets", "vpn_interface", "time_limit", "probe_timeout", "samples", "sample_timeout")
    out = gather(root=root, **{k: cfg[k] for k in keys if k in cfg})
    out["configured"] = bool(cfg)
    return out
