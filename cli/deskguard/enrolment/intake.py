"""What `deskguard serve` does with an enrolment request body: check it, enrol the laptop, answer its VPN
settings. Plain synchronous code over the Store (the route, deskguard.enrolment.route, runs it in a worker
thread), so every decision is testable without a socket. Answers: docs/enrolment.md, "The endpoint".
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import DeskguardError
from ..orders.ingest import Answer
from ..orders.nonces import NonceMemory
from ..site import module_utils
from ..store import EnrolmentRefused, EnrolmentRequest, Store, StoreError, VpnPoolExhausted
from .settings import EnrolmentSettings

P = module_utils("deskguard_protocol")
E = module_utils("deskguard_enrol")
log = logging.getLogger("deskguard.serve")

# HTTP status of each refusal word of Store.enrol_device.
REFUSAL_STATUS = {"unknown_token": 403, "revoked": 403, "expired": 403, "used_up": 403,
                  "hostname_not_allowed": 403, "hostname_taken": 409, "key_in_use": 409, "malformed": 400}


@dataclass(frozen=True)
class EnrolmentConfig:
    """What the route needs from the site's policy, read once when the server starts."""

    vpn: object                    # deskguard.vpn.settings.VpnSettings
    enrolment: EnrolmentSettings


def load_config(site: Path) -> tuple[EnrolmentConfig | None, str | None]:
    """(config, None), or (None, why enrolment is off): the route then answers 503 and the server says why
    once when it starts. A site without a VPN gateway in its policy cannot enrol laptops."""
    from ..vpn import policy
    from . import settings

    try:
        return EnrolmentConfig(policy.settings(site), settings.load(site)), None
    except DeskguardError as exc:
        return None, str(exc)


class Intake:
    def __init__(self, store: Store, config: EnrolmentConfig | None, *, now=None):
        self.store, self.config = store, config
        self._now = now or (lambda: dt.datetime.now(dt.timezone.utc))
        self.nonces = NonceMemory(2 * P.CLOCK_SKEW_SECONDS)

    def enrol(self, body: bytes) -> Answer:
        if self.config is None:
            return Answer.error(503, "enrolment_unavailable", "this server has no VPN settings to give")
        try:
            payload, _key, skew = E.open_request(body, self._now())
        except P.ProtocolError as exc:
            # unknown_key / bad_signature: not signed by the device key the request registers (401).
            status = {"oversized": 413, "unknown_key": 401, "bad_signature": 401}.get(exc.reason, 400)
            return Answer.error(status, exc.reason)
        if skew:
            return Answer.error(400, "clock_skew", "the laptop's clock is more than 5 minutes off")
        first = self.nonces.first_use(payload["nonce"])
        if first is None:
            return Answer.error(503, "busy", "too many enrolments in the replay window")
        if not first:
            return Answer.error(409, "replayed", "this request was used already")
        vpn, conf = self.config.vpn, self.config.enrolment
        req = EnrolmentRequest(token=payload["token"], hostname=payload["hostname"], serial=payload["serial"],
                               operator=payload["operator"], os=payload["os"], os_version=payload["os_version"],
                               agent_public_key=P.public_key_pem(_key).decode("ascii"),
                               wg_public_key=payload["wg_public_key"], ssh_user=conf.management_user,
                               pool=vpn.pool, reserved=(vpn.gateway_address,),
                               requires_approval=conf.requires_approval)
        try:
            got = self.store.enrol_device(req)
        except EnrolmentRefused as refused:
            return Answer.error(REFUSAL_STATUS.get(refused.code, 403), refused.code)
        except VpnPoolExhausted:
            log.warning("enrolment refused: the VPN pool %s is exhausted", vpn.pool)
            return Answer.error(503, "pool_exhausted")
        except StoreError:
            return Answer.error(503, "store_unavailable")
        if not got.again:
            log.info("enrolled %s (%s) as %s, VPN %s", got.device.hostname, got.device.uuid, got.device.state,
                     got.peer.address)
        return Answer(200, answer(got.device, got.peer.address, vpn, again=got.again))


def answer(device, address: str, vpn, *, again: bool = False) -> dict:
    """The 200 body: who the laptop now is, and everything its wg-quick file needs (no secret: the laptop has
    its own private key, the gateway's is the gateway's)."""
    host_bits = 32 if ipaddress.ip_address(address).version == 4 else 128
    return {"ok": True, "device_uuid": device.uuid, "hostname": device.hostname, "state": device.state,
            "again": again,
            "vpn": {"address": address, "prefixlen": host_bits, "endpoint": vpn.endpoint,
                    "gateway_public_key": vpn.gateway_public_key, "allowed_ips": vpn.laptop_allowed_ips(),
                    "dns": list(vpn.dns), "mtu": vpn.mtu, "keepalive": vpn.keepalive, "interface": vpn.interface}}
