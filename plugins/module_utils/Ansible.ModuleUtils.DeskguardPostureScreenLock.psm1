# deskguard posture section `screen_lock` on Windows (LCK-001), read-only: the machine inactivity limit the
# screen_lock role writes, and each loaded user's screen-saver policy (a user policy: it lives in that user's
# hive, so HKEY_USERS is read rather than the WinRM account's own HKCU). Not yet verified on a real Windows host.
# Copyright: deskguard contributors; Apache-2.0

Function Get-DeskguardPostureScreenLock {
    param($Params)
    $system = Get-ItemProperty -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Policies\System' -ErrorAction Stop
    $timeout = $null
    if ($null -ne $system.InactivityTimeoutSecs) { $timeout = [int]$system.InactivityTimeoutSecs }
    $savers = @()
    # Real user hives only (S-1-5-21-...), not their _Classes twins nor the service accounts.
    foreach ($hive in @(Get-ChildItem -LiteralPath 'Registry::HKEY_USERS' -ErrorAction Stop |
                Where-Object { $_.PSChildName -match '^S-1-5-21-[\d-]+$' })) {
        $key = "Registry::HKEY_USERS\$($hive.PSChildName)\Software\Policies\Microsoft\Windows\Control Panel\Desktop"
        $policy = Get-ItemProperty -LiteralPath $key -ErrorAction SilentlyContinue
        $savers += @{ sid = $hive.PSChildName
            active = if ($policy) { $policy.ScreenSaveActive } else { $null }
            secure = if ($policy) { $policy.ScreenSaverIsSecure } else { $null }
            timeout_secs = if ($policy -and $policy.ScreenSaveTimeOut) { [int]$policy.ScreenSaveTimeOut } else { $null } }
    }
    @{ inactivity_timeout_secs = $timeout; policy_key = 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Policies\System'
        screen_saver_policies = $savers }
}

Export-ModuleMember -Function Get-DeskguardPostureScreenLock
