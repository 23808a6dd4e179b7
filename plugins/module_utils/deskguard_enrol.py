# -*- coding: utf-8 -*-
"""The enrolment request and answer (docs/enrolment.md), shared by the laptop's first boot and `deskguard serve`.

A laptop enrols with a request signed by the device key it just made, carrying that key's public half: the
signature proves the laptop holds the key it registers (nobody can register a key they do not hold), the nonce
and ``sent_at`` make a captured request usable once and only for CLOCK_SKEW_SECONDS. The token rides inside
the signed payload. Python 3.9+, stdlib and ``cryptography`` only, no Ansible and no deskguard import: this file
runs on the laptop (deployed beside deskguard_protocol).
"""

from __future__ import annotations

import base64
import binascii
import re

try:  # inside Ansible / on the laptop, the controller and in unit tests (module_utils on sys.path)
    from ansible.module_utils import deskguard_protocol as P
except ImportError:
    import deskguard_protocol as P

LIMIT = 8 * 1024            # an enrolment request is under 2 KiB
ANSWER_LIMIT = 8 * 1024
PATH = "/v1/enrol"
FIELDS = {"v", "type", "token", "hostname", "serial", "operator", "os", "os_version", "device_public_key",
          "wg_public_key", "nonce", "sent_at"}
_TOKEN = re.compile(r"dgenrol-[A-Za-z0-9_-]{43}\Z")
_HOSTNAME = re.compile(r"(?=.{1,63}\Z)[a-z0-9]([a-z0-9-]*[a-z0-9])?\Z")
_TEXT = re.compile(r"[^\x00-\x1f\x7f]{0,128}\Z")
_OS = re.compile(r"[a-z][a-z0-9._-]{0,31}\Z")


def check_wg_key(value):
    """A WireGuard public key: 32 bytes in standard base64 (44 characters)."""
    if not isinstance(value, str) or len(value) != 44:
        return False
    try:
        return len(base64.b64decode(value, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def build_request(token, hostname, device_key, wg_public_key, serial=None, operator=None, os_name="debian",
                  os_version=None, now=None):
    """The signed request (bytes) a laptop POSTs to PATH."""
    payload = {"v": P.VERSION, "type": "enrol", "token": token, "hostname": hostname, "serial": serial,
               "operator": operator, "os": os_name, "os_version": os_version,
               "device_public_key": P.public_key_pem(device_key).decode("ascii"), "wg_public_key": wg_public_key,
               "nonce": P.new_nonce(), "sent_at": P.format_time(now or P.utc_now())}
    problem = _shape(payload)
    if problem:
        raise ValueError("cannot build this enrolment request: %s" % problem)
    return P.sign(payload, device_key)


def open_request(data, now):
    """(payload, public key, skew) of a request signed by the key it carries; ProtocolError (oversized,
    malformed, unsupported, bad_signature, unknown_key) otherwise. ``skew`` is "clock_skew" or None."""
    envelope = P.parse_envelope(data, LIMIT)
    payload = envelope.unverified_payload()
    if payload.get("v") != P.VERSION or payload.get("type") != "enrol":
        raise P.ProtocolError("unsupported", "not a v1 enrolment request")
    problem = _shape(payload)
    if problem:
        raise P.ProtocolError("malformed", problem)
    try:
        key = P.load_public_key(payload["device_public_key"])
    except ValueError:
        raise P.ProtocolError("malformed", "device_public_key is not an ECDSA P-256 public key")
    P.verify(envelope, key)
    return payload, key, P._skew(payload["sent_at"], now)


def _shape(p):
    if set(p) != FIELDS:
        return "enrolment fields must be " + ", ".join(sorted(FIELDS))
    if not isinstance(p["token"], str) or not _TOKEN.match(p["token"]):
        return "token is not an enrolment token"
    if not isinstance(p["hostname"], str) or not _HOSTNAME.match(p["hostname"]):
        return "hostname is not a lower-case host name (letters, digits, '-')"
    for name in ("serial", "operator", "os_version"):
        if p[name] is not None and (not isinstance(p[name], str) or not _TEXT.match(p[name])):
            return "%s is not printable text of at most 128 characters" % name
    if not isinstance(p["os"], str) or not _OS.match(p["os"]):
        return "os is not a lower-case OS name"
    if not isinstance(p["device_public_key"], str) or len(p["device_public_key"]) > 512:
        return "device_public_key is not a PEM public key"
    if not check_wg_key(p["wg_public_key"]):
        return "wg_public_key is not a WireGuard public key"
    if not P._is_hex64(p["nonce"]) or not P._is_time(p["sent_at"]):
        return "nonce or sent_at"
    return None


def check_answer(answer):
    """The server's 200 answer, checked before the laptop writes anything from it: a dict with device_uuid and
    vpn {address, prefixlen, endpoint, gateway_public_key, allowed_ips, dns, mtu, keepalive, interface}; a
    short problem text, or None when it is well formed."""
    if not isinstance(answer, dict) or not P._is_uuid(answer.get("device_uuid")):
        return "no device_uuid"
    vpn = answer.get("vpn")
    if not isinstance(vpn, dict):
        return "no vpn settings"
    if not re.match(r"\d{1,3}(\.\d{1,3}){3}\Z|[0-9a-fA-F:]{2,39}\Z", str(vpn.get("address", ""))):
        return "vpn address"
    if not re.match(r"[A-Za-z0-9.:\[\]-]{1,260}:\d{1,5}\Z", str(vpn.get("endpoint", ""))):
        return "vpn endpoint"
    if not check_wg_key(vpn.get("gateway_public_key")):
        return "gateway public key"
    if not isinstance(vpn.get("allowed_ips"), list) or not all(
            isinstance(n, str) and re.match(r"[0-9a-fA-F.:]{2,39}/\d{1,3}\Z", n) for n in vpn["allowed_ips"]):
        return "allowed_ips"
    if not isinstance(vpn.get("dns"), list) or not all(
            isinstance(d, str) and re.match(r"[A-Za-z0-9.:-]{1,253}\Z", d) for d in vpn["dns"]):
        return "dns"
    for name, low, high in (("mtu", 1280, 1420), ("keepalive", 0, 65535), ("prefixlen", 0, 128)):
        if not isinstance(vpn.get(name), int) or isinstance(vpn.get(name), bool) or not low <= vpn[name] <= high:
            return name
    if not re.match(r"[a-zA-Z0-9_=+.-]{1,15}\Z", str(vpn.get("interface", ""))):
        return "interface"
    return None
