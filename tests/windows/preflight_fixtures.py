"""What a Windows laptop answers to cli/deskguard/windows/ps/preflight.ps1, and the faults WinRM sends, for the loopback
responder. None of this was recorded on Windows (docs/windows.md, "Recording fixtures on a real Windows VM",
says how to replace it); each value names the documentation it follows and how sure that is.
"""

from __future__ import annotations

import json

from responder import wsman_fault

# The JSON object preflight.ps1 prints (ConvertTo-Json -Compress of its [ordered] hashtable).
# - edition_id / product_name: values of HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion (EditionID,
#   ProductName); "Professional" and the Home ids "Core", "CoreSingleLanguage" are as public scripts read that
#   key (PSScriptTools Get-WindowsVersion on the PowerShell Gallery) [community]. ProductName saying
#   "Windows 10 Pro" on Windows 11 is the reason the kit reads EditionID [community, widely reported].
# - build 22631 / display_version 23H2: Windows 11 version 23H2 (Microsoft "Windows 11 release information")
#   [doc, recalled: check against the VM].
# - ps_version "5.1.22621.2506": Windows PowerShell 5.1 is the version in Windows 10/11
#   (learn.microsoft.com "Differences between Windows PowerShell 5.1 and PowerShell 7") [doc]; the revision
#   digits are illustrative.
# - is_admin: WindowsPrincipal.IsInRole(WindowsBuiltInRole.Administrator) (.NET API docs) [doc].
PRO = {"deskguard_preflight": 1, "computer_name": "LAP-0042", "user": "LAP-0042\\deskguard-test",
       "edition_id": "Professional", "product_name": "Windows 10 Pro", "build": "22631", "ubr": "2861",
       "display_version": "23H2", "ps_version": "5.1.22621.2506", "is_admin": True, "in_admin_group": True}
HOME = {**PRO, "edition_id": "Core", "product_name": "Windows 10 Home"}
NOT_ADMIN = {**PRO, "is_admin": False, "in_admin_group": False}
# Member of BUILTIN\Administrators, but WinRM handed out the UAC-filtered token (LocalAccountTokenFilterPolicy
# unset) [recall: Microsoft's "User Account Control and remote restrictions" article; check on the VM].
FILTERED_ADMIN = {**PRO, "is_admin": False, "in_admin_group": True}
OLD_POWERSHELL = {**PRO, "ps_version": "4.0"}

# MS-WSMV 3.1.4.5.2.1 "wsman:QuotaLimit": Create is refused when winrs MaxShellsPerUser is exceeded, with
# this f:Message; the code is ERROR_WSMAN_QUOTA_MAX_SHELLS (2150859173) from wsman.h / winerror.h.
QUOTA_FAULT = wsman_fault(2150859173, "QuotaLimit",
                          "The Windows Remote Shell cannot process the request. The server is already executing "
                          "the maximum number of concurrent shells a user can remotely open on the same system. "
                          "Retry later.")


def host(answer: dict, seen: list | None = None):
    """A responder script_handler that answers the preflight script with `answer`, and anything else with an
    error (the preflight must not send a second command)."""
    def handle(argv, script, stdin):
        if seen is not None:
            seen.append(script)
        if script and "deskguard_preflight" in script:
            return json.dumps(answer, separators=(",", ":")).encode() + b"\r\n", b"", 0
        return b"", b"unexpected command", 1
    return handle
