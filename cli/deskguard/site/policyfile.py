"""A site's policy read on the controller: every file of it checked before anything runs (`check`), and the
settings of commands that run outside a playbook (vpn, wipe, serve) read from it (`load`).

Same precedence as Ansible for these files: a role's defaults first, then every file of the site's
inventory/group_vars/all/ (the policy) in name order. Host or group exceptions are not applied by `load`: those
settings are the controller's, not a laptop's.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from ..errors import UsageError
from . import KIT_ROOT

YAML_SUFFIXES = (".yml", ".yaml")
_CHECKED: dict = {}   # site -> the (path, mtime, size) of the files that passed `check`


def read(path: Path) -> dict:
    """One YAML file of variables; a clear one-line error if it cannot be read or is not a mapping."""
    return read_with_lines(path)[0]


def read_with_lines(path: Path) -> tuple[dict, dict[str, int]]:
    """(the file's variables, key -> line number). Bad YAML, a duplicated key or a file that is not a mapping
    is one line naming the file and line. Read as Ansible reads it (PyYAML, YAML 1.1: `yes` is true), with a
    `!vault` or `!unsafe` value kept as its text; the C parser, because a fleet has a host_vars file per laptop."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the policy file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, {}
        if not isinstance(node, yaml.MappingNode):
            kind = "list" if isinstance(node, yaml.SequenceNode) else "single value"
            raise UsageError(f"{path}:{node.start_mark.line + 1}: a policy file is a mapping of variables "
                             f"(name: value), not a {kind}")
        lines: dict[str, int] = {}
        for key_node, _value in node.value:
            key, line = str(key_node.value), key_node.start_mark.line + 1
            if key in lines:
                raise UsageError(f"{path}:{line}: {key}: set twice in this file (also on line {lines[key]}); "
                                 "keep one")
            lines[key] = line
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UsageError(f"cannot read the policy file {where}: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"cannot read the policy file {path}: {' '.join(str(exc).split())[:200]}") from None
    finally:
        loader.dispose()
    return {str(k): v for k, v in data.items()}, lines


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """Ansible's own tags, read as their text (the checks never need a secret's value)."""


for _tag in ("!vault", "!unsafe"):
    _Loader.add_constructor(_tag, lambda loader, node: loader.construct_scalar(node))


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
    group and per host (each applied over the policy; only those with files). The lab's inventory
    (inventory/lab/) is included: its group_vars/lab.yml outranks the policy for lab hosts."""
    inventory = Path(site) / "inventory"
    others = []
    for vars_dir in sorted({p.resolve() for p in inventory.glob("**/group_vars")}):
        others += [_files(entry) for entry in sorted(vars_dir.iterdir()) if entry.name != "all"]
    for vars_dir in sorted({p.resolve() for p in inventory.glob("**/host_vars")}):
        others += [_files(entry) for entry in sorted(vars_dir.iterdir())]
    return [_files(policy_dir(site)), *(files for files in others if files)]


def check(site: Path) -> None:
    """Before anything runs: every policy file parses, names only known variables with values of their type,
    and the roles' own range checks pass on the policy and on each group's and host's view of it. The first
    problem is one line naming the file, the line and the key (UsageError, exit 2)."""
    from . import policyspec

    site = Path(site)
    all_layers = layers(site)
    signature = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for files in all_layers for p in files)
    if _CHECKED.get(site) == signature:
        return   # a command checks once, though several of its steps read the policy
    base: dict = {}
    where: dict = {}
    for i, files in enumerate(all_layers):
        view, seen = (base, where) if i == 0 else ({**base}, {**where})
        own: dict = {}
        for path in files:
            own.update(_checked(path, seen))
        view.update(own)
        # A group's or host's file that sets nothing a range check reads (connection variables, the device id)
        # leaves the verdict on the policy as it was.
        if i == 0 or any(k.startswith("vpn_") or k in policyspec.range_names() for k in own):
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
    from ..vpn.settings import VpnSettingsError, check_networks, from_policy

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
    # From the roles' defaults (parsed once), not deskguard.vpn.policy, which reads the policy through this module.
    from . import policyspec

    return {k: v for k, v in policyspec.role_defaults().items() if k.startswith("vpn_")}
