"""Controller side of the endpoint_agent role: what the agent's configuration holds, and the device's public key
registered in the store. Independent of Ansible (the deskguard_agent action plugin calls it)."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import UsageError

CONFIG_PATH = "/etc/deskguard-agent/agent.json"
DEVICE_KEY = "/etc/deskguard-agent/device.key"
STATE_DIR = "/var/lib/deskguard-agent"


def escrowed_keyslots(store, device_uuid: str) -> dict[str, list[str]]:
    """{LUKS UUID: [fingerprint, ...]} of the device's active escrowed recovery slots: exactly what a lock order
    would keep (deskguard.orders.issue.order_targets), so a dead-man lock keeps the same. {} when the store
    has no such set (no escrow yet, or a volume without an active one): the dead-man switch then refuses."""
    from .issue import order_targets

    try:
        _, keep = order_targets(store, device_uuid, "lock")
    except UsageError:
        return {}
    return {uuid: sorted(fps) for uuid, fps in sorted((keep or {}).items())}


def order_public_pem(site: Path) -> str:
    from ..recovery.keys import load_order_public_key

    return load_order_public_key(site).public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def config(*, device_uuid: str, installed_at: str, orders_url: str, server_url: str, order_public_key: str,
           escrowed: dict, ca_file: str = "", order_fetch: str = "signed", allow_http: bool = False,
           timeout_seconds: int = 15, deadman_days: int = 0,
           interval_minutes: int = 15, device_key: str = DEVICE_KEY, state_dir: str = STATE_DIR,
           posture_params: dict | None = None) -> str:
    """The agent's /etc/deskguard-agent/agent.json (no secret in it: public keys, URLs, fingerprints)."""
    for name, url in (("orders_url", orders_url), ("server_url", server_url)):
        if not url.startswith(("https://", "http://")):
            raise UsageError(f"endpoint_agent_{name} must be an http(s) URL, not {url!r}")
        if url.startswith("http://") and not allow_http:
            raise UsageError(f"endpoint_agent_{name} {url!r} is plain HTTP: give an https:// URL "
                             "(endpoint_agent_allow_http is for a lab only)")
    if order_fetch not in ("signed", "static"):
        raise UsageError(f"endpoint_agent_order_fetch must be signed or static, not {order_fetch!r}")
    if deadman_days < 0 or not 1 <= interval_minutes <= 1440 or timeout_seconds < 1:
        raise UsageError("endpoint_agent: dead-man days >= 0, interval 1-1440 minutes, timeout >= 1 s")
    doc = {"device_uuid": device_uuid, "installed_at": installed_at, "orders_url": orders_url,
           "server_url": server_url, "ca_file": ca_file, "order_fetch": order_fetch, "allow_http": allow_http,
           "order_public_key": order_public_key,
           "device_key": device_key, "state_dir": state_dir, "timeout_seconds": timeout_seconds,
           "deadman_days": deadman_days, "interval_minutes": interval_minutes, "escrowed_keyslots": escrowed,
           # What the posture's USB and VPN sections need to tell "in force" from "present" (as in comply).
           "posture_params": posture_params or {}}
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def check_device_public_key(pem: str | None) -> str:
    """The laptop's answer must be an ECDSA P-256 public key in PEM, nothing else."""
    try:
        key = serialization.load_pem_public_key((pem or "").encode())
    except ValueError:
        raise UsageError("the laptop returned no valid device public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise UsageError("the laptop's device key is not ECDSA P-256")
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def register_public_key(store, device_uuid: str, pem: str) -> bool:
    """Record the device's public key (audited by the store); False when the store already has it."""
    if store.get_agent_public_key(device_uuid) == pem:
        return False
    store.set_agent_public_key(device_uuid, pem)
    return True


def record_ack(store, device_uuid: str, envelope: str | bytes, *, now=None, actor: str | None = None) -> dict:
    """An acknowledgement the agent gave through the management channel (playbooks/wipe.yml), checked like one
    posted to `deskguard serve`: signed by the device's registered key, well formed, for this device, on time;
    then applied to the order in the store. Returns {order_id, status, reason, changed}."""
    import datetime as dt

    from ..site import module_utils

    proto = module_utils("deskguard_protocol")
    pem = store.get_agent_public_key(device_uuid)
    if pem is None:
        raise UsageError(f"device {device_uuid} has no registered agent key: run the endpoint_agent role first")
    data = envelope.encode() if isinstance(envelope, str) else envelope
    try:
        payload = proto.open_envelope(data, proto.load_public_key(pem), proto.LIMITS["ack"])
        skew = proto.check_ack(payload, now or dt.datetime.now(dt.timezone.utc))
    except proto.ProtocolError as exc:
        raise UsageError(f"the laptop's acknowledgement is refused: {exc}") from None
    if skew:
        raise UsageError("the laptop's clock is more than 5 minutes off: its acknowledgement is refused")
    if payload["device_uuid"] != device_uuid:
        raise UsageError("the acknowledgement names another device")
    order, changed = store.acknowledge_order(payload["order_id"], device_uuid=device_uuid, nonce=payload["nonce"],
                                             status=payload["status"], reason=payload["reason"], actor=actor)
    return {"order_id": order.id, "status": payload["status"], "reason": payload["reason"], "changed": changed,
            "order_state": order.state}
