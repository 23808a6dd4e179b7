"""The deskguard store: devices, escrowed secrets (ciphertext only) and the hash-chained audit log.

SQLite under ``<site>/.deskguard/deskguard.db`` by default, ``DESKGUARD_DB_URL`` to use another database.
Schema changes are Alembic revisions in ``migrations/versions``, applied when a store is opened.
See docs/store.md.
"""

from .common import DeviceExists, DeviceNotFound, StoreError, default_actor
from .core import DB_URL_ENV, Store, db_url_for, default_db_path, migrate, state_dir
from .checkins import AgentKeyChanged, CheckinReplayed, VerifiedCheckin
from .enrolments import Enrolled, EnrolmentRefused, EnrolmentRequest
from .models import (DEVICE_STATES, ORDER_STATES, SECRET_STATES, VPN_PEER_STATES, AuditEntry, Checkin, Device, Order,
                     Secret, VpnPeer)
from .orders import OrderNotFound, OrderStateError, volume_of
from .vpnpeers import VpnPoolExhausted

__all__ = [
    "AgentKeyChanged", "CheckinReplayed", "Checkin", "ORDER_STATES", "Order", "OrderNotFound", "OrderStateError",
    "VerifiedCheckin", "volume_of", "Enrolled", "EnrolmentRefused", "EnrolmentRequest",
    "DB_URL_ENV", "DEVICE_STATES", "SECRET_STATES", "AuditEntry", "Device", "DeviceExists", "DeviceNotFound", "Secret", "Store",
    "StoreError", "VPN_PEER_STATES", "VpnPeer", "VpnPoolExhausted", "db_url_for", "default_actor", "default_db_path", "migrate", "state_dir",
]
