# deskguard posture section `updates` on Windows (UPD-001, UPD-002), read-only: the Windows Update AU policy
# values the auto_update role writes, the update service, when updates last installed successfully, and the
# registry markers of a pending restart. `reboot_pending` / `last_run_age_days` mean what they mean on Linux,
# so UPD-002 is judged by the same code. Not yet verified on a real Windows host.
# Copyright: deskguard contributors; Apache-2.0

Function Get-DeskguardPostureUpdates {
    param($Params)
    $auKey = 'HKLM:\SOFTWARE\Policies\Microsoft\Windows\WindowsUpdate\AU'
    $au = Get-ItemProperty -LiteralPath $auKey -ErrorAction SilentlyContinue
    $policy = @{}
    foreach ($name in 'NoAutoUpdate', 'AUOptions', 'ScheduledInstallDay', 'ScheduledInstallTime',
                      'NoAutoRebootWithLoggedOnUsers', 'AlwaysAutoRebootAtScheduledTime') {
        $policy[$name] = if ($au -and $null -ne $au.$name) { [int]$au.$name } else { $null }
    }
    $svc = Get-Service -Name wuauserv -ErrorAction Stop
    # The Windows Update Agent's own record (IAutomaticUpdatesResults); a date of 0001-01-01 means never.
    $last = $null
    $age = $null
    $results = (New-Object -ComObject Microsoft.Update.AutoUpdate).Results
    if ($results.LastInstallationSuccessDate -is [datetime] -and $results.LastInstallationSuccessDate.Year -gt 1601) {
        $when = $results.LastInstallationSuccessDate.ToUniversalTime()
        $last = $when.ToString('yyyy-MM-ddTHH:mm:ssZ')
        $age = [Math]::Round(([datetime]::UtcNow - $when).TotalDays, 2)
    }
    # Restart markers: Windows Update's, component servicing's, and files replaced at the next boot.
    $reasons = @()
    if (Test-Path -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired') {
        $reasons += 'WindowsUpdate RebootRequired'
    }
    if (Test-Path -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending') {
        $reasons += 'Component Based Servicing RebootPending'
    }
    $session = Get-ItemProperty -LiteralPath 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager' -ErrorAction SilentlyContinue
    if ($session -and $session.PendingFileRenameOperations) { $reasons += 'PendingFileRenameOperations' }
    @{ tool = 'windows-update'; policy = $policy; policy_key = $auKey
        service = @{ name = 'wuauserv'; status = [string]$svc.Status; start_type = [string]$svc.StartType }
        last_install_success = $last; last_run_age_days = $age
        reboot_pending = $reasons.Count -gt 0; reboot_reasons = $reasons }
}

Export-ModuleMember -Function Get-DeskguardPostureUpdates
