"""Every control the compliance run scores: its title, severity, whether it is mandatory, and which role and
tag repair it (`comply --fix`). IDs are the ones in task names, tags, waivers and reports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Control:
    id: str
    title: str
    severity: str          # high | medium | low
    role: str              # the role that applies it; its <role>_enabled switch turns the control off
    mandatory: bool = False  # a failure makes the host non-compliant whatever its score; cannot be waived
    remediation: str = ""
    fixable: bool = True     # `comply --fix` can repair it by running the role (not so for the operator's network)


CONTROLS = {c.id: c for c in (
    Control("ENC-001", "Disk encrypted (LUKS2/BitLocker, approved cipher)", "high", "disk_encryption", True,
            "reinstall with full-disk encryption (the kit cannot encrypt a running root)"),
    Control("ENC-002", "Recovery key escrowed and verified", "high", "disk_encryption", True,
            "deskguard comply --fix (escrows a new key) or deskguard keys rotate HOST"),
    Control("ENC-003", "No keyslot outside the escrow record (no unescrowed key added behind the kit's back)",
            "high", "disk_encryption",
            remediation="deskguard comply --fix removes it (needs the laptop's key file, or DESKGUARD_OFFICER_KEY_FILE)"),
    Control("ENC-004", "Disk bound to this machine's TPM with the policy's PCRs, no key file in the initramfs",
            "high", "disk_encryption",
            remediation="deskguard comply --fix re-binds (once the TPM refuses the old binding it needs "
            "DESKGUARD_OFFICER_KEY_FILE: the escrowed recovery key unlocks)"),
    Control("LCK-001", "Idle screen lock within the policy's minutes, locked for the user", "medium", "screen_lock",
            remediation="deskguard comply --fix (screen_lock role)"),
    Control("FW-001", "Firewall on: inbound default-deny, management allowed", "high", "firewall",
            remediation="deskguard comply --fix (firewall role)"),
    Control("UPD-001", "Automatic security updates configured and scheduled", "high", "auto_update",
            remediation="deskguard comply --fix (auto_update role)"),
    Control("UPD-002", "Updates applied: no reboot pending, last run recent", "medium", "auto_update",
            remediation="ask the operator to reboot; check unattended-upgrades' log on the laptop"),
    Control("USB-001", "USB mass storage restricted as the policy says (block, read-only or allow-listed)", "high",
            "usb_control", remediation="deskguard comply --fix (usb_control role)"),
    Control("USB-002", "Approved USB devices allowed (allow-listed mode)", "low", "usb_control",
            remediation="deskguard comply --fix (usb_control role); deskguard usb approve for a missing device"),
    Control("USB-003", "USB policy in force: the daemon runs exactly the rendered rules", "high", "usb_control",
            remediation="deskguard comply --fix (usb_control role)"),
    Control("VPN-001", "VPN tunnel configured with the enrolled key", "high", "vpn",
            remediation="deskguard comply --fix (vpn role)"),
    Control("VPN-002", "VPN tunnel up, recent handshake with the gateway", "medium", "vpn",
            remediation="check the laptop's network and the gateway (deskguard vpn list); --fix restarts the tunnel"),
    Control("VPN-003", "VPN kill switch loaded (when the policy wants one)", "medium", "vpn",
            remediation="deskguard comply --fix (vpn role)"),
    Control("AGT-001", "Check-in agent healthy: timer on, device key present, a recent successful check-in, the kit's "
            "own code", "high",
            "endpoint_agent", remediation="deskguard comply --fix (endpoint_agent role); check that the laptop can "
            "reach endpoint_agent_server_url"),
    Control("ACC-001", "Operator is a standard user: not in sudo/admin/wheel or Administrators, no sudo rule",
            "high", "accounts", remediation="deskguard comply --fix (accounts role removes the admin groups); a sudo "
            "rule naming the operator is removed by hand"),
    Control("ACC-002", "Password quality and history as the policy says", "medium", "accounts",
            remediation="deskguard comply --fix (accounts role)"),
    Control("ACC-003", "Account locks after repeated failed logins", "medium", "accounts",
            remediation="deskguard comply --fix (accounts role)"),
    Control("ACC-004", "No automatic login, no guest session", "high", "accounts",
            remediation="deskguard comply --fix (accounts role)"),
    Control("ACC-005", "Management channel hardened: no root login, no passwords, key login for the management "
            "account", "high", "accounts", remediation="deskguard comply --fix (accounts role)"),
    Control("NET-001", "Not on a phone's tethering or mobile data (company mobile Wi-Fi allowed)", "high",
            "network_posture", remediation="the operator connects through the home broadband or the company mobile "
            "Wi-Fi; `deskguard netcheck HOST` tells the helpdesk what the laptop is on", fixable=False),
    Control("NET-002", "Not on open (or WEP) Wi-Fi", "high", "network_posture",
            remediation="the operator joins an encrypted network (WPA2/WPA3)", fixable=False),
    Control("NET-003", "Call system reachable through the VPN within the latency, jitter and loss limits", "medium",
            "network_posture", remediation="`deskguard netcheck HOST` for the cause (VPN down, DNS, a slow or lossy "
            "link)", fixable=False),
    Control("SW-001", "No denied software installed, the denylist pinned out", "high", "software_policy",
            remediation="deskguard comply --fix (software_policy role purges it)"),
    Control("SW-002", "Packages only from approved sources", "medium", "software_policy",
            remediation="remove the source by hand, or set software_policy_sources_mode: enforce and --fix"),
    Control("SW-003", "Managed browser policies in place (extensions, safe browsing, URL blocklist, DNS)", "medium",
            "software_policy", remediation="deskguard comply --fix (software_policy role)"),
    Control("AV-001", "Antivirus on and its signatures current", "high", "software_policy",
            remediation="deskguard comply --fix (software_policy role); signatures need the updater to reach its "
            "mirror"),
)}
