# -*- coding: utf-8 -*-
"""Converge a set of whole files in one pass: compare, validate, replace atomically, then run follow-ups.

Shared by the `deskguard_files` module and unit-tested without Ansible. One call per role instead of one
task per file matters: every module call costs a round trip (8-15 s on a TCG lab laptop).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
import subprocess
import tempfile


class FilesError(Exception):
    pass


def replace_file(path, data, mode):
    """Put `data` (bytes) at `path` with `mode`: a temporary file in the same folder, fsynced, renamed over it,
    so a reader sees the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".deskguard-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path, data, mode):
    """`data` as JSON (keys sorted, UTF-8 as is) through replace_file."""
    replace_file(path, json.dumps(data, sort_keys=True, ensure_ascii=False).encode("utf-8"), mode)


def read_json_object(path):
    """The JSON object in `path`, or None if it is missing, unreadable or not an object."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _owner_ids(owner, group):
    uid = pwd.getpwnam(owner).pw_uid if owner else 0
    gid = grp.getgrnam(group).gr_gid if group else 0
    return uid, gid


def plan(files):
    """Return the list of (spec, reason) that differ from the desired state; reads only."""
    todo = []
    for spec in files:
        path = spec["path"]
        state = spec.get("state", "present")
        exists = os.path.lexists(path)
        if state == "absent":
            if exists:
                todo.append((spec, "remove"))
            continue
        want = spec["content"].encode()
        if not exists:
            todo.append((spec, "create"))
            continue
        with open(path, "rb") as fh:
            have = fh.read()
        st = os.lstat(path)
        uid, gid = _owner_ids(spec.get("owner", "root"), spec.get("group", "root"))
        if have != want:
            todo.append((spec, "content"))
        elif stat.S_IMODE(st.st_mode) != int(spec.get("mode", "0644"), 8) or (st.st_uid, st.st_gid) != (uid, gid):
            todo.append((spec, "attributes"))
    return todo


def _write(spec):
    path = spec["path"]
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    mode = int(spec.get("mode", "0644"), 8)
    uid, gid = _owner_ids(spec.get("owner", "root"), spec.get("group", "root"))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".deskguard-")
    try:
        os.fchmod(fd, mode)
        os.fchown(fd, uid, gid)
        with os.fdopen(fd, "wb") as fh:
            fh.write(spec["content"].encode())
            fh.flush()
            os.fsync(fh.fileno())
        validate = spec.get("validate")
        if validate:
            argv = [tmp if a == "%s" else a for a in validate]
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if proc.returncode != 0:
                raise FilesError("validation of %s failed (%s): %s" % (
                    path, " ".join(validate), proc.stdout.decode(errors="replace").strip()[-500:]))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def units_to_enable(units):
    """Units that are not enabled-and-active yet (systemctl answers for all of them in two calls)."""
    if not units:
        return []
    enabled = subprocess.run(["systemctl", "is-enabled", *units], stdout=subprocess.PIPE).stdout.decode().split()
    active = subprocess.run(["systemctl", "is-active", *units], stdout=subprocess.PIPE).stdout.decode().split()
    return [u for u, e, a in zip(units, enabled, active) if e != "enabled" or a != "active"]


def apply(files, commands_if_changed, check_mode=False, enable_units=()):
    """Converge; returns {changed, files: [{path, reason}], units: [...], commands: [...]}.

    Validation happens on the new content before anything is replaced, so a bad file never goes live.
    Units are enabled and started after the files (and the follow-up commands) are in place.
    """
    todo = plan(files)
    units = units_to_enable(list(enable_units))
    result = {"changed": bool(todo or units), "files": [{"path": s["path"], "reason": r} for s, r in todo],
              "units": units, "commands": []}
    if check_mode or not result["changed"]:
        return result
    for spec, reason in todo:
        if reason == "remove":
            os.unlink(spec["path"])
        else:
            _write(spec)
    for argv in (commands_if_changed if todo else ()):
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output = proc.stdout.decode(errors="replace").strip()
        result["commands"].append({"argv": argv, "rc": proc.returncode, "output": output[-2000:]})
        if proc.returncode != 0:
            raise FilesError("%s failed (rc %d): %s" % (" ".join(argv), proc.returncode, output[-500:]))
    if units:
        proc = subprocess.run(["systemctl", "enable", "--now", *units], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            raise FilesError("systemctl enable --now %s failed: %s" % (
                " ".join(units), proc.stdout.decode(errors="replace").strip()[-500:]))
    return result
