"""The order settings of a site's policy, checked before anything is signed or published."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from ..site import policyfile
from ..errors import UsageError
from ..store import state_dir

DEFAULT_TTL_DAYS = 30
DEFAULT_DONE_GRACE_HOURS = 72
ORDERS_SUBDIR = "orders"


@dataclass(frozen=True)
class OrderSettings:
    orders_dir: Path          # where `{device_uuid}` files are published (served by `deskguard serve` or any server)
    ttl_days: int             # an order expires this long after it is issued
    done_grace: dt.timedelta  # an acknowledged wipe is done when the laptop stays silent this long


def load(site: Path) -> OrderSettings:
    """deskguard_orders_dir (default <site>/.deskguard/orders; relative paths are under the site),
    deskguard_order_ttl_days (30), deskguard_order_done_grace_hours (72)."""
    values = policyfile.load(site, "deskguard_order")
    raw_dir = values.get("deskguard_orders_dir") or state_dir(site) / ORDERS_SUBDIR
    orders_dir = Path(str(raw_dir)).expanduser()
    if not orders_dir.is_absolute():
        orders_dir = Path(site) / orders_dir
    ttl = _positive_int(values, "deskguard_order_ttl_days", DEFAULT_TTL_DAYS, 365)
    grace = _positive_int(values, "deskguard_order_done_grace_hours", DEFAULT_DONE_GRACE_HOURS, 24 * 365)
    return OrderSettings(orders_dir.resolve(), ttl, dt.timedelta(hours=grace))


def _positive_int(values: dict, name: str, default: int, maximum: int) -> int:
    value = values.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise UsageError(f"policy {name}: {str(value)[:40]!r} is not a whole number from 1 to {maximum}")
    return value
