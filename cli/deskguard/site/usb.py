"""USB approvals in the policy files, and the USB report of one laptop (`deskguard usb ...`).

Approvals are written with ruamel round-trip YAML (comments and order kept), atomically, under the inventory
lock, and audited in the same store transaction: if the file cannot be written, the audit row rolls back.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from ..errors import UsageError
from . import module_utils

VAR_ALL = "usb_control_approved_devices"
VAR_GROUP = "usb_control_approved_devices_group"
VAR_HOST = "usb_control_approved_devices_host"
MAX_REASON = 200


def policy_utils():
    """plugins/module_utils/deskguard_usb_policy.py: the one definition of a device id (laptop, role, CLI)."""
    return module_utils("deskguard_usb_policy")


def parse_device(text: str) -> dict:
    """VENDOR:PRODUCT[:SERIAL] checked; UsageError (exit 2) with the expected form otherwise."""
    utils = policy_utils()
    try:
        return utils.parse_device(text)
    except utils.PolicyError as exc:
        raise UsageError(str(exc)) from None


def target_file(site: Path, *, group: str | None, host: str | None) -> tuple[Path, str]:
    """(file, variable) an approval goes to: the policy for group `all`, else the group's or host's file."""
    from .inventory import _validate_group, host_vars_file, inventory_dir, list_hosts, validate_hostname

    if (group is None) == (host is None):
        raise UsageError("give exactly one of --group G or --host H")
    if host is not None:
        hostname = validate_hostname(host)
        if hostname not in list_hosts(site):
            raise UsageError(f"{hostname} is not in the inventory (see `deskguard devices list`)")
        return host_vars_file(site, hostname), VAR_HOST
    if group == "all":
        return inventory_dir(site) / "group_vars" / "all" / "policy.yml", VAR_ALL
    group = _validate_group(group)
    base = inventory_dir(site) / "group_vars"
    single = base / f"{group}.yml"
    return (single if single.exists() else base / group / "usb_control.yml"), VAR_GROUP


def approve(site: Path, store, device_text: str, *, group: str | None = None, host: str | None = None,
            reason: str, actor: str | None = None) -> tuple[bool, Path, dict]:
    """Add the device to the chosen list. Returns (changed, file, entry); a duplicate changes nothing."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    from ..fsutil import atomic_write
    from .inventory import InventoryError, _check_root, _dump, _load, locked
    from ..store import default_actor

    device = parse_device(device_text)
    reason = " ".join(str(reason or "").split())
    if not reason or len(reason) > MAX_REASON or not reason.isprintable():
        raise UsageError(f"--reason is required: one line of at most {MAX_REASON} printable characters")
    path, var = target_file(site, group=group, host=host)
    who = actor or default_actor()
    with locked(site):
        data, raw = _load(path)
        data = _check_root(data, path)
        if data is None:
            data = CommentedMap()
        entries = data.get(var)
        if entries is None:
            entries = CommentedSeq()
            data[var] = entries
        elif not isinstance(entries, list):
            raise InventoryError(f"{path}: {var} is not a list; fix it by hand, deskguard will not overwrite it")
        utils = policy_utils()
        try:
            current = utils.check_approved(list(entries))
        except utils.PolicyError as exc:
            raise InventoryError(f"{path}: {exc}; fix it by hand, deskguard will not overwrite it") from None
        if any(e["id"] == device["id"] and e["serial"] == device["serial"] for e in current):
            return False, path, device
        if len(current) + 1 > utils.MAX_APPROVED:
            raise UsageError(f"{path}: {var} already has {len(current)} entries (at most {utils.MAX_APPROVED})")
        entry = CommentedMap()
        entry["id"] = device["id"]
        if device["serial"] is not None:
            entry["serial"] = device["serial"]
        entry["reason"] = reason
        entry["approved_by"] = who
        entry["approved_at"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        entry.fa.set_flow_style()
        entries.fa.set_block_style()
        entries.append(entry)
        scope = {"host": host} if host is not None else {"group": group}
        with store.transaction():
            store.audit(who, "usb.approve", host or f"group:{group}",
                        {"device": device["id"] + (f":{device['serial']}" if device["serial"] else ""),
                         "reason": reason, "file": str(path.relative_to(site)), **scope})
            atomic_write(path, _dump(data))
    return True, path, dict(entry)


def report(site: Path, store, host: str, *, actor: str | None = None):
    """Run the read-only USB report on HOST; returns (PlaybookResult, module result or None). Audited."""
    from ..runner import run_on_host

    hostname, result = run_on_host(site, "usb_report.yml", host)
    found = result.task_result("deskguard_usb_report")
    summary = {"exit_code": result.exit_code}
    if found:
        summary.update(attached=len(found["usb"].get("devices", [])), blocked=len(found["usb"].get("blocked", [])),
                       controls={c["id"]: c["status"] for c in found.get("controls", [])})
    store.audit(actor, "usb.list", hostname, summary)
    return result, found
