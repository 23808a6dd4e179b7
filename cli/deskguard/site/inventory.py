"""Writes the Ansible inventory of managed laptops: ``inventory/hosts.yml`` + ``inventory/host_vars/HOST.yml``.

- Round-trip YAML (ruamel.yaml): comments, order and hand edits of the admin are kept.
- Each file is replaced atomically (temp file + rename); an exclusive lock on ``inventory/.lock`` makes two
  admins (or two shells) queue instead of interleaving.
- A file that does not parse is never overwritten: the error names the file and line.
- ``register_and_add`` keeps the store and the inventory consistent: both change, or neither does.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..errors import DeskguardError, UsageError
from ..fsutil import atomic_write
from ..hostnames import validate_hostname

if TYPE_CHECKING:
    from ..store import Device, Store

DEFAULT_GROUP = "laptops"
LOCK_TIMEOUT = 30.0
_GROUP = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

HOSTS_HEADER = """\
# Managed laptops. `deskguard onboard` adds hosts here and `deskguard devices remove` takes them out;
# how to reach each one lives in host_vars/HOST.yml. Hand edits and comments are kept.
"""
HOST_VARS_HEADER = """\
# Written by deskguard for {hostname}; keys you add by hand are kept on re-runs.
"""


class InventoryError(DeskguardError):
    """An inventory file deskguard will not touch (broken YAML, unexpected shape), or a busy lock: exit 4."""


def _validate_group(group: str) -> str:
    if not isinstance(group, str) or not _GROUP.fullmatch(group) or group in ("all", "ungrouped"):
        raise UsageError(f"invalid inventory group {str(group)[:40]!r}: letters, digits and underscores")
    return group


def inventory_dir(site: Path) -> Path:
    return Path(site) / "inventory"


def hosts_file(site: Path) -> Path:
    return inventory_dir(site) / "hosts.yml"


def host_vars_file(site: Path, hostname: str) -> Path:
    return inventory_dir(site) / "host_vars" / f"{hostname}.yml"


# -- locking ------------------------------------------------------------------------------------------------

_held: dict[tuple[str, int, int], list[int]] = {}  # (lock, pid, thread) -> [fd, depth]: re-entrant


@contextlib.contextmanager
def locked(site: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Exclusive lock on inventory/.lock (fcntl; released by the kernel if the process dies). Re-entrant in
    one process, so register_and_add can hold it around the store transaction and add_host."""
    path = inventory_dir(site) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    key = (str(path.resolve()), os.getpid(), threading.get_ident())
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise InventoryError(f"{path}: another deskguard is changing the inventory; "
                                         f"try again when it has finished") from None
                time.sleep(0.05)
        _held[key] = [fd, 1]
        try:
            yield
        finally:
            del _held[key]
    finally:
        os.close(fd)  # closing drops the lock


# -- YAML ---------------------------------------------------------------------------------------------------

def _yaml():
    from ruamel.yaml import YAML

    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.indent(mapping=2, sequence=4, offset=2)
    y.width = 4096
    return y


def _load(path: Path):
    """(data, raw bytes) of a YAML file, (None, None) if missing. InventoryError names file:line if broken."""
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    try:
        return _yaml().load(raw.decode("utf-8")), raw
    except UnicodeDecodeError as exc:
        raise InventoryError(f"{path}: not UTF-8 text ({exc.reason}); fix it by hand, deskguard will not "
                             f"overwrite it") from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise InventoryError(f"{where}: {problem}; fix it by hand, deskguard will not overwrite it") from None
    except YAMLError as exc:
        problem = " ".join(str(exc).split())[:200]
        raise InventoryError(f"{path}: {problem}; fix it by hand, deskguard will not overwrite it") from None


def _dump(data, header: str = "") -> str:
    buf = io.StringIO()
    _yaml().dump(data, buf)
    return header + buf.getvalue() if header else buf.getvalue()


def _block_map():
    from ruamel.yaml.comments import CommentedMap

    m = CommentedMap()
    m.fa.set_block_style()
    return m


def _child_map(parent, key: str, path: Path, where: str):
    """parent[key] as a mapping (created if missing or empty/null); InventoryError if it is anything else."""
    from ruamel.yaml.comments import CommentedMap

    value = parent.get(key)
    if value is None:
        value = _block_map()
        parent[key] = value
    elif not isinstance(value, CommentedMap):
        raise InventoryError(f"{path}: {where}.{key} is not a mapping; fix it by hand, deskguard will not "
                             f"overwrite it")
    if not value:
        value.fa.set_block_style()
    return value


def _check_root(data, path: Path):
    from ruamel.yaml.comments import CommentedMap

    if data is None:
        return None
    if not isinstance(data, CommentedMap):
        raise InventoryError(f"{path}: the top level is not a mapping; fix it by hand, deskguard will not "
                             f"overwrite it")
    return data


def _group_hosts(data, group: str, path: Path):
    all_ = _child_map(data, "all", path, "")
    children = _child_map(all_, "children", path, "all")
    grp = _child_map(children, group, path, "all.children")
    return _child_map(grp, "hosts", path, f"all.children.{group}")


def _iter_host_maps(node) -> Iterator:
    """Every `hosts:` mapping in the group tree (all, its children, their children...)."""
    from ruamel.yaml.comments import CommentedMap

    if not isinstance(node, CommentedMap):
        return
    hosts = node.get("hosts")
    if isinstance(hosts, CommentedMap):
        yield hosts
    children = node.get("children")
    if isinstance(children, CommentedMap):
        for child in children.values():
            yield from _iter_host_maps(child)


def list_hosts(site: Path) -> list[str]:
    """Every host name in hosts.yml, any group, in file order."""
    path = hosts_file(site)
    data = _check_root(_load(path)[0], path)
    seen: dict[str, None] = {}
    if data is not None:
        for name, node in data.items():
            for hosts in _iter_host_maps(node):
                seen.update((str(h), None) for h in hosts)
    return list(seen)


def has_group(site: Path, group: str) -> bool:
    """Whether hosts.yml has `all.children.GROUP` (a playbook limit naming a missing group draws a warning)."""
    path = hosts_file(site)
    if not path.exists():
        return False
    data = _check_root(_load(path)[0], path)
    children = ((data or {}).get("all") or {}).get("children") or {}
    return hasattr(children, "get") and children.get(group) is not None


def require_site(site: Path) -> None:
    """A folder `deskguard init` made a site of (it has the inventory); else the same line, and exit 4, as a
    missing store gives."""
    if not hosts_file(site).exists():
        raise InventoryError(f"no site at {site} (no {hosts_file(site).relative_to(site)}); run `deskguard init` first")


def require_hosts(site: Path) -> list[str]:
    """list_hosts, refusing an inventory with no laptop (commands that act on the fleet need one)."""
    require_site(site)
    hosts = list_hosts(site)
    if not hosts:
        raise UsageError("no managed laptops in the inventory (add one with `deskguard onboard`)")
    return hosts


def match_hosts(site: Path, pattern: str, limit: str | None = None) -> list[str]:
    """The hosts a play over PATTERN with `--limit LIMIT` reaches, by Ansible's own rules (groups, wildcards,
    ~regex, !exclusion, &intersection): the count a progress display shows, and the check that a limit matches
    anything at all (Ansible runs nothing and records nothing for a pattern that matches no host)."""
    import contextlib
    import io

    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    # Ansible prints "Could not match supplied host pattern" itself; the caller says it in one line instead.
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        inv = InventoryManager(loader=DataLoader(), sources=[str(hosts_file(site))])
        try:
            inv.subset(limit)
            return [h.name for h in inv.get_hosts(pattern)]
        except Exception as exc:  # AnsibleError: a limit file that cannot be read, a bad regex
            raise UsageError(f"--limit {limit}: {' '.join(str(exc).split())[:200]}") from None


def play_hosts(site: Path, limit: str | None, group: str = DEFAULT_GROUP) -> list[str]:
    """The laptops of GROUP a run limited to LIMIT reaches; UsageError (exit 2) when there are none, so that a
    limit with a typo is said at once instead of an empty, unrecorded run."""
    require_hosts(site)
    hosts = match_hosts(site, group, limit)
    if not hosts:
        if limit:
            raise UsageError(f"--limit {limit} matches no laptop in the inventory (see `deskguard devices list`)")
        raise UsageError(f"no laptop in the inventory group {group!r} (add one with `deskguard onboard`)")
    return hosts


def ensure_hosts_file(site: Path) -> bool:
    """Create an empty hosts.yml (with the laptops group) if there is none. True if created."""
    path = hosts_file(site)
    with locked(site):
        if path.exists():
            return False
        data = _block_map()
        _group_hosts(data, DEFAULT_GROUP, path)
        atomic_write(path, _dump(data, HOSTS_HEADER))
        return True


# -- add / remove -------------------------------------------------------------------------------------------

def add_host(site: Path, hostname: str, hostvars: dict, group: str = DEFAULT_GROUP) -> bool:
    """Put HOST in `all.children.GROUP.hosts` and merge ``hostvars`` into host_vars/HOST.yml.

    Idempotent; keys and comments already in either file are kept (keys in ``hostvars`` are updated).
    Returns True if a file changed. Both files are checked before either is written; if the second write
    fails the first is put back.
    """
    hostname = validate_hostname(hostname)
    group = _validate_group(group)
    if not isinstance(hostvars, dict):
        raise UsageError("host variables must be a mapping")
    for key in hostvars:
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise UsageError(f"invalid host variable name {str(key)[:40]!r}")
    hpath, vpath = hosts_file(site), host_vars_file(site, hostname)
    with locked(site):
        data, hraw = _load(hpath)
        data = _check_root(data, hpath)
        vdata, vraw = _load(vpath)
        vdata = _check_root(vdata, vpath)

        new_hosts = None
        if data is None:
            data = _block_map()
        hosts = _group_hosts(data, group, hpath)
        if hostname not in hosts or hraw is None:
            hosts[hostname] = None
            new_hosts = _dump(data, HOSTS_HEADER if hraw is None else "")

        if vdata is None:
            vdata = _block_map()
        changed_vars = vraw is None
        for key, value in hostvars.items():
            if key not in vdata or vdata[key] != value:
                vdata[key] = value
                changed_vars = True
        new_vars = _dump(vdata, HOST_VARS_HEADER.format(hostname=hostname) if vraw is None else "") \
            if changed_vars else None

        # host_vars first: a host that is in hosts.yml always has its connection variables.
        if new_vars is not None:
            atomic_write(vpath, new_vars)
        try:
            if new_hosts is not None:
                atomic_write(hpath, new_hosts)
        except BaseException:
            if new_vars is not None:
                _restore(vpath, vraw)
            raise
        return new_vars is not None or new_hosts is not None


def remove_host(site: Path, hostname: str) -> bool:
    """Take HOST out of every group in hosts.yml and delete host_vars/HOST.yml. True if anything changed."""
    hostname = validate_hostname(hostname)
    hpath, vpath = hosts_file(site), host_vars_file(site, hostname)
    with locked(site):
        data, _ = _load(hpath)
        data = _check_root(data, hpath)
        changed = False
        if data is not None:
            for node in list(data.values()):
                for hosts in _iter_host_maps(node):
                    if hostname in hosts:
                        del hosts[hostname]
                        if not hosts:
                            hosts.fa.set_block_style()
                        changed = True
            if changed:
                atomic_write(hpath, _dump(data))
        # host_vars after hosts.yml: never a host listed without its variables.
        try:
            vpath.unlink()
            changed = True
        except FileNotFoundError:
            pass
        return changed


def _restore(path: Path, raw: bytes | None) -> None:
    if raw is None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        atomic_write(path, raw)


# -- store + inventory together -----------------------------------------------------------------------------

def device_hostvars(device: "Device", extra: dict | None = None) -> dict:
    """The host_vars deskguard writes for a device (Windows gets WinRM connection variables)."""
    hv = {"ansible_host": device.address, "ansible_port": device.port, "ansible_user": device.ssh_user}
    if device.os == "windows":
        # The secure defaults; onboarding adds the CA bundle (and its transport) from the same settings dict
        # the preflight gave pywinrm.
        from ..windows.winrm_settings import ansible_vars, secure_settings

        hv.update(ansible_vars(secure_settings()))
    hv.update({"deskguard_device_uuid": device.uuid, "deskguard_os": device.os})
    if device.operator:
        hv["deskguard_operator"] = device.operator
    hv.update(extra or {})
    return hv


def register_and_add(site: Path, store: "Store", hostname: str, *, os: str, address: str, port: int,
                     ssh_user: str, operator: str | None = None, os_version: str | None = None,
                     hostvars: dict | None = None, group: str = DEFAULT_GROUP,
                     actor: str | None = None) -> tuple["Device", bool]:
    """Register HOST in the store and add it to the inventory, consistently. Returns (device, created).

    Call it after preflight. Order: store transaction (device + audit row, not yet committed) → inventory
    written → commit. If the inventory write fails or is interrupted, the store transaction rolls back; if the
    commit fails, the inventory change is undone. A re-run converges: a live device with this hostname is
    reused (its connection details updated, audited) and the inventory is brought in line.
    """
    hostname = validate_hostname(hostname)
    group = _validate_group(group)
    with locked(site), _undo_files_on_error(site, hostname):
        with store.transaction():
            device = store.get_device(hostname)
            created = device is None
            if created:
                device = store.register_device(hostname, os, address, port, ssh_user, operator,
                                               os_version=os_version, actor=actor)
            else:
                device = store.update_device(hostname, actor=actor, os=os, address=address, port=port,
                                             ssh_user=ssh_user, operator=operator,
                                             os_version=os_version or device.os_version)
            add_host(site, hostname, device_hostvars(device, hostvars), group=group)
    return device, created


def remove_and_unlist(site: Path, store: "Store", hostname: str, *, actor: str | None = None) -> "Device":
    """Mark the device removed in the store (audited; escrowed secrets kept) and take it out of the inventory,
    consistently: if the inventory cannot be changed, the store change rolls back."""
    hostname = validate_hostname(hostname)
    with locked(site), _undo_files_on_error(site, hostname):
        with store.transaction():
            device = store.remove_device(hostname, actor=actor)
            remove_host(site, hostname)
    return device


@contextlib.contextmanager
def _undo_files_on_error(site: Path, hostname: str) -> Iterator[None]:
    """Under the inventory lock: refuse broken files up front, snapshot hosts.yml and host_vars/HOST.yml, and
    put them back byte for byte if the block fails (the store transaction inside has rolled back by then)."""
    hpath, vpath = hosts_file(site), host_vars_file(site, hostname)
    for path in (hpath, vpath):
        _check_root(_load(path)[0], path)
    before = {p: (p.read_bytes() if p.exists() else None) for p in (hpath, vpath)}
    try:
        yield
    except BaseException:
        for path, raw in before.items():
            if (path.read_bytes() if path.exists() else None) != raw:
                _restore(path, raw)
        raise
