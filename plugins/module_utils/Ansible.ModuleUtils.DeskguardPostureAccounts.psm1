# The `accounts` posture section on Windows (ACC-001..005), read only. Same keys as the Linux section
# (plugins/module_utils/deskguard_accounts.py) where they mean the same thing; Windows-only keys:
# password_complexity, management_channel ("winrm"), management_is_admin, winrm_allow_unencrypted,
# winrm_basic_auth. Groups and accounts are found by well-known SID, so a localised Windows reads the same.
# Not yet run on a real Windows host: syntax-gated only (tests/windows/test_ps_syntax.py).

Set-StrictMode -Version 2.0

$script:AdministratorsSid = 'S-1-5-32-544'

function Get-DeskguardSecurityPolicy {
    # [System Access] of the local security policy, exported by secedit to a file removed afterwards.
    $file = [System.IO.Path]::GetTempFileName()
    try {
        $null = & secedit.exe /export /cfg $file /areas SECURITYPOLICY /quiet
        $values = @{}
        foreach ($line in (Get-Content -LiteralPath $file)) {
            if ($line -match '^\s*(\w+)\s*=\s*(.*?)\s*$') {
                $values[$Matches[1]] = $Matches[2]
            }
        }
        return $values
    }
    finally {
        Remove-Item -LiteralPath $file -Force -ErrorAction SilentlyContinue
    }
}

function ConvertTo-DeskguardInt {
    param($Value)
    $number = 0
    if ($null -ne $Value -and [int]::TryParse([string]$Value, [ref]$number)) {
        return $number
    }
    return $null
}

function Get-DeskguardAdministratorNames {
    $names = @()
    foreach ($member in (Get-LocalGroupMember -SID $script:AdministratorsSid -ErrorAction SilentlyContinue)) {
        # "COMPUTER\name" -> "name"
        $names += ($member.Name -split '\\')[-1]
    }
    return $names
}

function Get-DeskguardPostureAccounts {
    # $Params: the section's posture params from the controller (operator, management_user), like every section.
    param($Params)
    $Operator = if ($Params -and $Params.operator) { [string]$Params.operator } else { '' }
    $ManagementUser = if ($Params -and $Params.management_user) { [string]$Params.management_user } else { '' }
    $admins = @(Get-DeskguardAdministratorNames)
    $operatorAccount = $null
    if ($Operator) {
        $operatorAccount = Get-LocalUser -Name $Operator -ErrorAction SilentlyContinue
    }
    $operatorGroups = @()
    if ($operatorAccount) {
        foreach ($group in (Get-LocalGroup)) {
            $members = @(Get-LocalGroupMember -Group $group -ErrorAction SilentlyContinue)
            foreach ($member in $members) {
                if ($member.SID -eq $operatorAccount.SID) {
                    $operatorGroups += $group.Name
                }
            }
        }
    }
    $privileged = @()
    if ($admins -contains $Operator) {
        $privileged += 'Administrators'
    }

    $policy = Get-DeskguardSecurityPolicy
    $lockoutMinutes = ConvertTo-DeskguardInt $policy['LockoutDuration']
    $resetMinutes = ConvertTo-DeskguardInt $policy['ResetLockoutCount']

    $winlogon = Get-ItemProperty -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Winlogon' -ErrorAction SilentlyContinue
    $autoLogon = $false
    $autoUsers = @()
    if ($winlogon -and ($winlogon.PSObject.Properties.Name -contains 'AutoAdminLogon')) {
        $autoLogon = ([string]$winlogon.AutoAdminLogon -eq '1')
        if ($autoLogon -and ($winlogon.PSObject.Properties.Name -contains 'DefaultUserName')) {
            $autoUsers += [string]$winlogon.DefaultUserName
        }
    }

    $guest = Get-LocalUser | Where-Object { $_.SID.Value -like 'S-1-5-21-*-501' } | Select-Object -First 1
    $guestEnabled = [bool]($guest -and $guest.Enabled)

    $management = $null
    if ($ManagementUser) {
        $management = Get-LocalUser -Name $ManagementUser -ErrorAction SilentlyContinue
    }
    $unencrypted = [string](Get-Item -Path 'WSMan:\localhost\Service\AllowUnencrypted' -ErrorAction SilentlyContinue).Value
    $basic = [string](Get-Item -Path 'WSMan:\localhost\Service\Auth\Basic' -ErrorAction SilentlyContinue).Value

    $resetSeconds = $null
    if ($null -ne $resetMinutes) {
        $resetSeconds = $resetMinutes * 60
    }
    $unlockSeconds = $null
    if ($null -ne $lockoutMinutes) {
        $unlockSeconds = $lockoutMinutes * 60
    }

    return @{
        operator                      = $Operator
        operator_exists               = [bool]$operatorAccount
        operator_groups               = @($operatorGroups | Sort-Object -Unique)
        operator_privileged_groups    = $privileged
        operator_sudo_rules           = @()
        password_minlen               = ConvertTo-DeskguardInt $policy['MinimumPasswordLength']
        password_complexity           = ([string]$policy['PasswordComplexity'] -eq '1')
        password_remember             = ConvertTo-DeskguardInt $policy['PasswordHistorySize']
        lockout_deny                  = ConvertTo-DeskguardInt $policy['LockoutBadCount']
        lockout_unlock_seconds        = $unlockSeconds
        lockout_fail_interval_seconds = $resetSeconds
        autologin_enabled             = $autoLogon
        autologin_users               = $autoUsers
        guest_enabled                 = $guestEnabled
        guest_account_enabled         = $guestEnabled
        management_channel            = 'winrm'
        management_user               = $ManagementUser
        management_exists             = [bool]$management
        management_is_admin           = [bool]($ManagementUser -and ($admins -contains $ManagementUser))
        winrm_allow_unencrypted       = ($unencrypted -eq 'true')
        winrm_basic_auth              = ($basic -eq 'true')
    }
}

Export-ModuleMember -Function Get-DeskguardPostureAccounts
