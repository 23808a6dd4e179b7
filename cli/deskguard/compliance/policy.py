"""The policy a host is judged against, and the part of it the laptop needs to collect its posture.

The roles see their defaults overlaid by the inventory (group_vars/all's policy, group and host vars); the
compliance play runs no role, so the same layering is done here: every role's defaults/main.yml, then the
host's own variables. A policy that leaves a value at its default is judged by that default, as it was applied.
"""

from __future__ import annotations

# role_defaults: every role's defaults/main.yml, parsed once per process (the policy check reads them too).
from ..site import module_utils
from ..site.accounts_policy import management_name, operator_name
from ..site.policyspec import role_defaults
from .results import PolicyError


# Host variables that are policy (templated per host, like the roles see them).
POLICY_PREFIXES = ("screen_lock_", "firewall_", "auto_update_", "disk_encryption_", "usb_control_", "vpn_",
                   "network_posture_", "endpoint_agent_", "software_policy_", "accounts_", "deskguard_waivers",
                   "deskguard_checkin_", "deskguard_comply_evidence",
                   # Whose accounts ACC-* judge: the operator onboarding recorded, the account Ansible uses.
                   "deskguard_operator", "ansible_user")


def host_policy(task_vars: dict, template) -> dict:
    """The effective policy of the host whose task_vars these are (template: the action's templar.template).
    Only values holding a template are templated: templating 80 plain values was a fifth of judging a laptop
    from its check-in (tests/bench/comply_checkins.py)."""
    return effective({k: template(v) if _has_template(v) else v
                      for k, v in task_vars.items() if k.startswith(POLICY_PREFIXES)})


def _has_template(value) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value or "{#" in value
    if isinstance(value, dict):
        return any(_has_template(k) or _has_template(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_template(v) for v in value)
    return False


def effective(host_policy: dict) -> dict:
    return {**role_defaults(), **host_policy}


def approved_usb_devices(policy: dict) -> list[dict]:
    """The approved list as the usb_control role builds it: policy + group + host lists, checked."""
    entries = [*(policy.get("usb_control_approved_devices") or []),
               *(policy.get("usb_control_approved_devices_group") or []),
               *(policy.get("usb_control_approved_devices_host") or [])]
    utils = module_utils("deskguard_usb_policy")
    try:
        return utils.check_approved(entries)
    except utils.PolicyError as exc:
        raise PolicyError(str(exc)) from None


def posture_params(policy: dict) -> dict:
    """deskguard_posture's `params`: what the USB and VPN sections need to tell "in force" from "present", which
    accounts the accounts section looks at, and what the software section compares against. Sent alike to the
    Linux and the Windows module; each section reads what it needs (Windows: the VPN client)."""
    return {"usb": {"mode": policy.get("usb_control_mode"), "approved_devices": approved_usb_devices(policy),
                    "allowed_classes": list(policy.get("usb_control_allowed_classes") or [])},
            "vpn": {"interface": policy.get("vpn_interface") or "wg0",
                    "client": policy.get("vpn_windows_client") or "wireguard"},
            "accounts": {"operator": operator_name(policy), "management_user": management_name(policy)},
            "screen_lock": {"operator": operator_name(policy)},
            "software": software_params(policy)}


def software_params(policy: dict) -> dict:
    """What the software section compares against: the denylist, the approved sources, and the browser
    settings the role renders its policy files from (the same keys as the role's __software_policy_browser)."""
    browser = {"extension_allowlist": list(policy.get("software_policy_browser_extension_allowlist") or []),
               "firefox_extension_allowlist": list(policy.get("software_policy_firefox_extension_allowlist") or []),
               "url_blocklist": list(policy.get("software_policy_url_blocklist") or []),
               "doh_resolver": policy.get("software_policy_doh_resolver") or ""}
    return {"denied_packages": list(policy.get("software_policy_denied_packages") or []),
            "denied_windows_software": list(policy.get("software_policy_denied_windows_software") or []),
            "allowed_sources": list(policy.get("software_policy_allowed_sources") or []),
            "browser": browser,
            # Windows compares the registry values the role writes (Linux compares the rendered files).
            "browser_values": module_utils("deskguard_browser_policy").windows_registry(browser)["values"]}
