"""A site's policy read on the controller: every file of it checked before anything runs (`check`), and the
settings of commands that run outside a playbook (vpn, wipe, serve) read from it (`load`).

Same precedence as Ansible for these files: a role's defaults first, then every file of the site's
inventory/group_vars/all/ (the policy) in name order. Host or group exceptions are not applied by `load`: those
settings are the controller's, not a laptop's.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import UsageError
from .site import KIT_ROOT

YAML_SUFFIXES = (".yml", ".yaml")
_CHECKED: dict = {}   # site -> the (path, mtime, size) of the files that passed `check`


def read(path: Path) -> dict:
    """One YAML file of variables; a clear one-line error if it cannot be read or is not a mapping."""
    return read_with_lines(path)[0]


def read_with_lines(path: Path) -> tuple[dict, dict[str, int]]:
    """(the file's variables as plain Python, key -> line number). Bad YAML, a duplicated key or a file that is
    not a mapping is one line naming the file and line. Round-trip loading, as Ansible reads a `!vault` value
    (a Windows laptop's host_vars) rather than failing on its tag."""
    from ruamel.yaml import YAML
    from ruamel.yaml.constructor import DuplicateKeyError
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    path = Path(path)
    try:
        text = path.read_text()
        data = YAML(typ="rt").load(text)
    except OSError as exc:
        raise UsageError(f"cannot read the policy file {path}: {exc.strerror or exc}") from None
    except DuplicateKeyError as exc:
        key = str(exc.problem).split('"')[1] if '"' in str(exc.problem) else "?"
        first = next((i for i, line in enumerate(text.splitlines(), 1) if re.match(rf"{re.escape(key)}\s*:", line)),
                     None)
        raise UsageError(f"{path}:{exc.problem_mark.line + 1}: {key}: set twice in this file"
                         + (f" (also on line {first})" if first else "") + "; keep one") from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UsageError(f"cannot read the policy file {where}: {exc.problem or exc.context}") from None
    except YAMLError as exc:
        raise UsageError(f"cannot read the policy file {path}: {' '.join(str(exc).split())[:200]}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}:1: a policy file is a mapping of variables (name: value), "
                         f"not a {'list' if isinstance(data, list) else type(data).__name__}")
    lines = {str(k): data.lc.key(k)[0] + 1 for k in data}
    return _plain(data), lines


def _plain(value):
    """ruamel's round-trip types as the plain Python Ansible's validator expects (a `!vault` value stays text)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    for kind in (int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return str(getattr(value, "value", value))


def load(site: Path, prefix: str, *, defaults: Path | None = None, policy_file: Path | None = None) -> dict:
    """The variables starting with ``prefix``: ``defaults``, then ``policy_file`` or the site's policy (checked
    whole first: a typo or a bad value elsewhere in it is refused here too)."""
    values = read(defaults) if defaults is not None else {}
    if policy_file is not None:
        check_file(Path(policy_file))
        values.update(read(Path(policy_file)))
    else:
        check(site)
        for path in _files(policy_dir(site)):
            values.update(read(path))
    return {k: v for k, v in values.items() if k.startswith(prefix)}


def policy_dir(site: Path) -> Path:
    folder = Path(site) / "inventory" / "group_vars" / "all"
    return folder if folder.is_dir() else KIT_ROOT / "inventory" / "group_vars" / "all"


def _files(folder: Path) -> list[Path]:
    """A group_vars/host_vars entry: a file, or a folder of files (Ansible reads both), in name order."""
    if folder.is_file():
        return [folder] if folder.suffix in YAML_SUFFIXES else []
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in YAML_SUFFIXES) if folder.is_dir() else []


def layers(site: Path) -> list[list[Path]]:
    """The site's variable files as Ansible layers them: [the policy (group_vars/all)], then one list per other
    group and per host (each applied over the policy). The lab's inventory (inventory/lab/) is included: its
    group_vars/lab.yml outranks the policy for lab hosts."""
    inventory = Path(site) / "inventory"
    out = [_files(policy_dir(site))]
    for vars_dir in sorted({p.resolve() for p in inventory.glob("**/group_vars")}):
        out += [_files(entry) for entry in sorted(vars_dir.iterdir()) if entry.name != "all"]
    for vars_dir in sorted({p.resolve() for p in inventory.glob("**/host_vars")}):
        out += [_files(entry) for entry in sorted(vars_dir.iterdir())]
    return [files for files in out if files]


def check(site: Path) -> None:
    """Before anything runs: every policy file parses, names only known variables with values of their type,
    and the roles' own range checks pass on the policy and on each group's and host's view of it. The first
    problem is one line naming the file, the line and the key (UsageError, exit 2)."""
    site = Path(site)
    all_layers = layers(site)
    signature = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for files in all_layers for p in files)
    if _CHECKED.get(site) == signature:
        return   # a command checks once, though several of its steps read the policy
    base: dict = {}
    where: dict = {}
    for i, files in enumerate(all_layers):
        view, seen = (base, where) if i == 0 else ({**base}, {**where})
        for path in files:
            view.update(_checked(path, seen))
        _check_view(view, seen, set(files))
    _CHECKED[site] = signature


def check_file(path: Path) -> None:
    """One policy file on its own (`deskguard vpn --policy FILE`)."""
    seen: dict = {}
    view = _checked(Path(path), seen)
    _check_view(view, seen, {Path(path)})


def _checked(path: Path, seen: dict) -> dict:
    """The file's variables, each a known key with a value of its type; ``seen`` learns where each is set."""
    from . import policyspec

    data, lines = read_with_lines(path)
    for key, value in data.items():
        why = policyspec.unknown(key) or policyspec.type_problem(key, value)
        if why:
            raise UsageError(f"{path}:{lines.get(key, 1)}: {key}: {why}")
        seen[key] = (path, lines.get(key, 1))
    return data


def _check_view(view: dict, seen: dict, layer: set) -> None:
    """The roles' range checks and the VPN's network checks on one layered view of the policy. A problem is
    shown at the line of a key it names, preferably one this layer (``layer``'s files) sets."""
    from ansible.module_utils.parsing.convert_bool import boolean

    from . import policyspec
    from .vpn.settings import VpnSettingsError, check_networks, from_policy

    problems = policyspec.range_problems(view)
    vpn = {**_vpn_defaults(), **view}
    try:
        (from_policy if boolean(vpn.get("vpn_enabled"), strict=False) else check_networks)(vpn)
    except VpnSettingsError as exc:
        problems.append((str(exc), str(exc)))
    for text, message in problems:
        named = [k for k in seen if re.search(rf"\b{re.escape(k)}\b", f"{text} {message}")]
        named = [k for k in named if seen[k][0] in layer] or named
        if named:
            path, line = seen[named[0]]
            raise UsageError(f"{path}:{line}: {message}")
        raise UsageError(f"the policy's defaults: {message}")


def _vpn_defaults() -> dict:
    from .vpn.policy import DEFAULTS

    return read(DEFAULTS)
