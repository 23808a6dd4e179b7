# deskguard WinRM preflight: everything onboarding needs to know about a Windows laptop, in ONE round trip.
# Sent with pywinrm's run_ps (powershell -EncodedCommand); comment lines are stripped before sending to keep
# the command line short (cmd.exe's limit is 8191 characters). Prints one JSON object on stdout and changes
# nothing on the laptop. The syntax gate (tests/windows/test_ps_syntax.py) parses this file and the stripped
# text that is actually sent.
$ErrorActionPreference = 'Stop'
try {
    # EditionID, not ProductName: Windows 11 still reports "Windows 10 ..." as ProductName. Home editions
    # are Core, CoreN, CoreSingleLanguage, CoreCountrySpecific (the same rule as deskguard_bitlocker.ps1).
    $cv = Get-ItemProperty -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion'
    $identity = [Security.Principal.WindowsIdentity]::GetCurrent()
    $principal = New-Object -TypeName Security.Principal.WindowsPrincipal -ArgumentList $identity
    # IsInRole looks at the token this WinRM session really has: what every Ansible task will run with.
    $isAdmin = $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)
    # S-1-5-32-544 (BUILTIN\Administrators) in the token's groups but IsInRole false means membership with a
    # UAC-filtered remote token: the fix differs from "not a member at all".
    $inAdminGroup = @($identity.Groups | Where-Object { $_.Value -eq 'S-1-5-32-544' }).Count -gt 0
    $result = [ordered]@{
        deskguard_preflight = 1
        computer_name = $env:COMPUTERNAME
        user = $identity.Name
        edition_id = [string]$cv.EditionID
        product_name = [string]$cv.ProductName
        build = [string]$cv.CurrentBuildNumber
        ubr = [string]$cv.UBR
        display_version = [string]$cv.DisplayVersion
        ps_version = $PSVersionTable.PSVersion.ToString()
        is_admin = $isAdmin
        in_admin_group = $inAdminGroup
    }
    $result | ConvertTo-Json -Compress
}
catch {
    # One line on stderr and exit 2: the controller reports it as "the preflight script failed: ...".
    [Console]::Error.WriteLine("deskguard preflight: $($_.Exception.Message)")
    exit 2
}
