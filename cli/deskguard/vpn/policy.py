"""The VPN part of a site's policy, read on the controller (for commands that run outside a playbook): the vpn
role's defaults, then the site's policy (see deskguard.site.policyfile). Host or group exceptions for laptops do not
change the gateway's view.
"""

from __future__ import annotations

from pathlib import Path

from ..site import KIT_ROOT, policyfile
from .settings import VpnSettings, from_policy

DEFAULTS = KIT_ROOT / "roles" / "vpn" / "defaults" / "main.yml"


def load(site: Path, policy_file: Path | None = None) -> dict:
    return policyfile.load(site, "vpn_", defaults=DEFAULTS, policy_file=policy_file)


def settings(site: Path, policy_file: Path | None = None) -> VpnSettings:
    return from_policy(load(site, policy_file))
