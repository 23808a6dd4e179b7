"""The VPN part of a site's policy, read on the controller (for commands that run outside a playbook).

Same precedence as Ansible for these files: the vpn role's defaults, then every file of the site's
inventory/group_vars/all/ (the policy). Host or group exceptions for laptops do not change the gateway's view.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from ..site import KIT_ROOT
from .settings import VpnSettings, from_policy

DEFAULTS = KIT_ROOT / "roles" / "vpn" / "defaults" / "main.yml"


def _read(path: Path) -> dict:
    from ruamel.yaml import YAML, YAMLError

    try:
        data = YAML(typ="safe").load(path.read_text())
    except (OSError, YAMLError) as exc:
        raise UsageError(f"cannot read the policy file {path}: {' '.join(str(exc).split())[:200]}") from None
    if data is not None and not isinstance(data, dict):
        raise UsageError(f"{path}: a policy file is a mapping of variables")
    return data or {}


def load(site: Path, policy_file: Path | None = None) -> dict:
    values = _read(DEFAULTS)
    if policy_file is not None:
        return {**values, **_read(Path(policy_file))}
    folder = Path(site) / "inventory" / "group_vars" / "all"
    if not folder.is_dir():
        folder = KIT_ROOT / "inventory" / "group_vars" / "all"
    for path in sorted(folder.glob("*.y*ml")):
        values.update(_read(path))
    return {k: v for k, v in values.items() if k.startswith("vpn_")}


def settings(site: Path, policy_file: Path | None = None) -> VpnSettings:
    return from_policy(load(site, policy_file))
