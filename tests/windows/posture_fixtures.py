"""Scripted answers of deskguard_posture.ps1 for the responder: what the module would return on a Windows 11
Pro laptop the kit has hardened. Built from Microsoft's documentation examples, not recorded from a real
host (none is available here); each section names its source. Values the kit sets are the roles' own.
"""

from __future__ import annotations

import copy

GATEWAY = "GwGatewayPublicKeyForTheLoopbackTest0000000="   # 44 characters, 32 bytes: a valid WireGuard key
LAPTOP_KEY = "LtLaptopPublicKeyForTheLoopbackTest000000000="
OS_PROTECTOR = "{6A1B2C3D-0000-4000-8000-00000000BEEF}"
TPM_PROTECTOR = "{0B9C8D7E-1111-4111-8111-0000000000A1}"
HOUR = 3600

# Policy the fixture complies with (role defaults otherwise); given to the play as extra vars.
POLICY = {"deskguard_hosts": "win-loopback", "vpn_enabled": True, "vpn_gateway_public_key": GATEWAY,
          "endpoint_agent_enabled": True, "usb_control_mode": "block",
          "network_posture_call_system": [{"host": "cti.example.com", "ports": [5061]}],
          "deskguard_operator": "tanaka"}

POSTURE = {
    # Win32_OperatingSystem (Microsoft Learn, "Win32_OperatingSystem class": Caption, Version,
    # LastBootUpTime) and HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion (EditionID, DisplayVersion,
    # CurrentBuildNumber, UBR) of Windows 11 23H2.
    "os": {"family": "Windows", "id": "windows", "edition": "Microsoft Windows 11 Pro", "edition_id": "Professional",
           "home_edition": False, "display_version": "23H2", "build": "22631", "version_id": "22631.2861",
           "kernel": "10.0.22631", "uptime_seconds": 2 * 86400},
    # Get-BitLockerVolume (Microsoft Learn, BitLocker module, "Get-BitLockerVolume", example 1: an
    # OperatingSystem volume C:, FullyEncrypted, 100 %, KeyProtector {Tpm, RecoveryPassword}, ProtectionStatus
    # On); EncryptionMethod XtsAes256 as disk_encryption_windows_method; Get-Tpm's TpmPresent / TpmReady.
    "disk": {"edition": {"name": "Professional", "edition_id": "Professional", "build": "22631",
                         "bitlocker_capable": True},
             "tpm": {"present": True, "ready": True},
             "volumes": [{"mount_point": "C:", "volume_type": "OperatingSystem", "protection_status": "On",
                          "volume_status": "FullyEncrypted", "encryption_method": "XtsAes256",
                          "encryption_percentage": 100.0, "lock_status": "Unlocked",
                          "protectors": [{"id": TPM_PROTECTOR, "type": "Tpm"},
                                         {"id": OS_PROTECTOR, "type": "RecoveryPassword"}]}]},
    # "Interactive logon: Machine inactivity limit" (Microsoft Learn, security policy settings:
    # InactivityTimeoutSecs under ...\Policies\System), 300 s as screen_lock_idle_minutes=5 writes it.
    "screen_lock": {"inactivity_timeout_secs": 300,
                    "policy_key": "HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Policies\\System",
                    "screen_saver_policies": [{"sid": "S-1-5-21-1004336348-1177238915-682003330-1001",
                                               "active": None, "secure": None, "timeout_secs": None}]},
    # Get-NetFirewallProfile (Microsoft Learn, NetSecurity module, "Get-NetFirewallProfile": Name, Enabled,
    # DefaultInboundAction, DefaultOutboundAction) as the firewall role sets them; the WinRM HTTPS rule name
    # is the one `winrm quickconfig -transport:https` documentation shows.
    "firewall": {"tool": "windows-firewall", "management_port": 5986,
                 "management_rules": ["Windows Remote Management (HTTPS-In)"],
                 "profiles": {name: {"enabled": "True", "default_inbound_action": "Block",
                                     "default_outbound_action": "Allow"} for name in ("Domain", "Private", "Public")}},
    # "Configure Automatic Updates" (Microsoft Learn, Windows Update policy registry values under
    # ...\WindowsUpdate\AU: AUOptions 4 = auto download and schedule the install, ScheduledInstallDay 0 = every
    # day); IAutomaticUpdatesResults.LastInstallationSuccessDate; no restart markers.
    "updates": {"tool": "windows-update",
                "policy": {"NoAutoUpdate": 0, "AUOptions": 4, "ScheduledInstallDay": 0, "ScheduledInstallTime": 6,
                           "NoAutoRebootWithLoggedOnUsers": 1, "AlwaysAutoRebootAtScheduledTime": 0},
                "service": {"name": "wuauserv", "status": "Running", "start_type": "Manual"},
                "last_install_success": "2026-11-28T03:12:40Z", "last_run_age_days": 1.05,
                "reboot_pending": False, "reboot_reasons": []},
    # ADMX RemovableStorage / Policy CSP Storage: "All Removable Storage classes: Deny all access" is
    # Deny_All=1 under ...\RemovableStorageDevices (the usb_control role's `block` mode).
    "usb": {"tool": "windows-policy", "attached": [],
            "values": [{"path": "HKLM:\\SOFTWARE\\Policies\\Microsoft\\Windows\\RemovableStorageDevices",
                        "name": "Deny_All", "type": "dword", "data": 1}]},
    # WireGuard for Windows: service WireGuardTunnel$wg0 (Get-Service Status/StartType), `wg show wg0 dump`
    # as wg(8) documents it (interface line, then one line per peer: key, psk, endpoint, allowed ips, latest
    # handshake, rx, tx, keepalive).
    "vpn": {"interface": "wg0", "client": "wireguard", "config_files": ["C:\\ProgramData\\deskguard\\wireguard\\wg0.conf"],
            "config_private": True, "key_file": None, "interface_up": True, "public_key": LAPTOP_KEY,
            "kill_switch": False, "service": {"name": "WireGuardTunnel$wg0", "status": "Running", "start_type": "Automatic"},
            "peers": [{"public_key": GATEWAY, "endpoint": "198.51.100.7:51820", "allowed_ips": ["10.20.0.0/16"],
                       "latest_handshake_age": 40, "rx_bytes": 91234, "tx_bytes": 45678}]},
    # Get-ScheduledTask / Get-ScheduledTaskInfo (Microsoft Learn, ScheduledTasks module: State Ready,
    # LastTaskResult 0, NextRunTime) and the agent's own state.json.
    "agent": {"installed": True, "timer_enabled": True, "timer_active": True, "device_key_present": True,
              "last_checkin": "2026-11-29T03:40:00Z", "last_checkin_age_seconds": 600, "pending_refusals": 0,
              "deadman_days": 0, "scheduler": "scheduled task deskguard-agent", "last_run_result": 0,
              "task": {"state": "Ready", "last_run_time": "2026-11-29T03:40:00Z",
                       "next_run_time": "2026-11-29T03:55:00Z"}},
    # The network shape of deskguard_network_posture.ps1 (Get-NetRoute / Get-NetAdapter: an Intel wired
    # adapter, PhysicalMediaType 802.3), the call system reached through wg0.
    "network": {"configured": True, "uplink": {"interface": "Ethernet", "kind": "wired", "driver": "e1d68x64.sys",
                                               "usb_id": None, "present": True},
                "default_routes": [{"dev": "Ethernet", "gateway": "192.168.1.1", "metric": 25}],
                "networkmanager": {"type": None, "metered": "no"}, "android_metered": None, "wifi": None,
                "vpn": {"interface": "wg0", "up": True, "handshake_age": 40},
                "call_system": {"targets": [{"host": "cti.example.com", "addresses": ["10.20.0.5"], "resolved": True,
                                             "route_dev": "wg0", "through_vpn": True,
                                             "ports": {"5061": {"state": "open", "ms": 28.0}}}],
                                "samples": {"sent": 10, "received": 10, "loss_pct": 0.0, "rtt_avg_ms": 28.4,
                                            "jitter_ms": 2.1}},
                "unknown": [], "complete": True, "elapsed": 2.2, "time_limit": 10},
    # DeskguardPostureSoftware.psm1: the Uninstall keys hold nothing denied; every browser registry value the
    # role writes (posture params browser_values) compared and equal.
    "software": {"family": "Windows", "denied_installed": [], "browsers": {"registry": {"checked": 9, "differs": []}}},
    # DeskguardPostureAv.psm1 from Get-MpComputerStatus (Microsoft Learn, Get-MpComputerStatus, Example 1:
    # AMServiceEnabled, AntivirusEnabled, RealTimeProtectionEnabled True, AntivirusSignatureAge 0).
    "av": {"engine": "defender", "installed": True, "realtime_protection": True, "antivirus_enabled": True,
           "am_service_enabled": True, "signature_age_days": 0, "signature_version": "1.403.2104.0",
           "signature_last_updated": "2026-11-29T01:12:00.0000000Z"},
    # DeskguardPostureAccounts.psm1: net accounts / secedit values (Microsoft Learn, "Account Lockout Policy",
    # "Password Policy"), the operator only in Users, AutoAdminLogon 0, Guest disabled, WinRM without
    # AllowUnencrypted or Basic.
    "accounts": {"operator": "tanaka", "operator_exists": True, "operator_groups": ["Users"],
                 "operator_privileged_groups": [], "operator_sudo_rules": [], "password_minlen": 12,
                 "password_complexity": True, "password_remember": 5, "lockout_deny": 5,
                 "lockout_unlock_seconds": 900, "lockout_fail_interval_seconds": 900, "autologin_enabled": False,
                 "autologin_users": [], "guest_enabled": False, "guest_account_enabled": False,
                 "management_channel": "winrm", "management_user": "deskguard-test", "management_exists": True,
                 "management_is_admin": True, "winrm_allow_unencrypted": False, "winrm_basic_auth": False},
}


def answer(posture: dict | None = None, errors: dict | None = None) -> dict:
    """The module's JSON: the same shape as the Linux deskguard_posture (posture, errors, timings)."""
    posture = copy.deepcopy(POSTURE if posture is None else posture)
    return {"changed": False, "posture": posture, "errors": errors or {},
            "timings": {name: 0.05 for name in posture}}


def changed(section: str, **values) -> dict:
    """POSTURE with some keys of one section replaced."""
    posture = copy.deepcopy(POSTURE)
    posture[section].update(values)
    return posture


def escrow_recovery_password(site, uuid, protector=OS_PROTECTOR, hostname="win-loopback"):
    """The store as after onboarding: the OS volume's recovery password escrowed, named by its protector id
    (so ENC-002 passes for POSTURE)."""
    from deskguard.recovery import escrow, keys
    from deskguard.store import Store

    inventory = {"edition": POSTURE["disk"]["edition"],
                 "volumes": [{"mount_point": "C:", "volume_type": "OperatingSystem", "protectors": []}]}
    remote = lambda module, args: {"verified": True, "protector_id": protector}  # noqa: E731
    with Store.open(site) as store:
        escrow.run_bitlocker(store, keys.load_escrow_public_key(site), remote,
                             escrow.Request(device_uuid=uuid, hostname=hostname), inventory)
