"""A site's policy read on the controller, for commands that run outside a playbook (vpn, wipe, serve).

Same precedence as Ansible for these files: a role's defaults first, then every file of the site's
inventory/group_vars/all/ (the policy) in name order. Host or group exceptions are not applied: these settings
are the controller's, not a laptop's.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from . import KIT_ROOT


def read(path: Path) -> dict:
    """One YAML file of variables; a clear one-line error if it cannot be read or is not a mapping."""
    from ruamel.yaml import YAML, YAMLError

    try:
        data = YAML(typ="safe").load(Path(path).read_text())
    except (OSError, YAMLError) as exc:
        raise UsageError(f"cannot read the policy file {path}: {' '.join(str(exc).split())[:200]}") from None
    if data is not None and not isinstance(data, dict):
        raise UsageError(f"{path}: a policy file is a mapping of variables")
    return data or {}


def load(site: Path, prefix: str, *, defaults: Path | None = None, policy_file: Path | None = None) -> dict:
    """The variables starting with ``prefix``: ``defaults``, then ``policy_file`` or the site's policy."""
    values = read(defaults) if defaults is not None else {}
    if policy_file is not None:
        values.update(read(Path(policy_file)))
    else:
        folder = Path(site) / "inventory" / "group_vars" / "all"
        if not folder.is_dir():
            folder = KIT_ROOT / "inventory" / "group_vars" / "all"
        for path in sorted(folder.glob("*.y*ml")):
            values.update(read(path))
    return {k: v for k, v in values.items() if k.startswith(prefix)}
