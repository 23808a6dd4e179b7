#!powershell
# deskguard: the Windows laptop's security posture in one read-only call (the nightly compliance run);
# documentation in deskguard_posture.py. Ansible picks this file for a host whose shell is PowerShell (the
# winrm connection) and deskguard_posture.py for the others, so playbooks/comply.yml has no OS switch
# (tests/windows/test_posture_windows.py shows both). Same return shape as the Linux module: posture, errors
# and timings per section. Each section is one module_util, Ansible.ModuleUtils.DeskguardPosture<Section>.psm1
# exporting Get-DeskguardPosture<Section>: adding a section is one #Requires line and one table entry.
# Not yet verified on a real Windows host: see docs/windows.md.
# Copyright: deskguard contributors; Apache-2.0

#AnsibleRequires -CSharpUtil Ansible.Basic
#Requires -Module Ansible.ModuleUtils.DeskguardPostureOs
#Requires -Module Ansible.ModuleUtils.DeskguardPostureDisk
#Requires -Module Ansible.ModuleUtils.DeskguardPostureScreenLock
#Requires -Module Ansible.ModuleUtils.DeskguardPostureFirewall
#Requires -Module Ansible.ModuleUtils.DeskguardPostureUpdates
#Requires -Module Ansible.ModuleUtils.DeskguardPostureUsb
#Requires -Module Ansible.ModuleUtils.DeskguardPostureVpn
#Requires -Module Ansible.ModuleUtils.DeskguardPostureAgent
#Requires -Module Ansible.ModuleUtils.DeskguardPostureNetwork
#Requires -Module Ansible.ModuleUtils.DeskguardPostureSoftware
#Requires -Module Ansible.ModuleUtils.DeskguardPostureAv
#Requires -Module Ansible.ModuleUtils.DeskguardPostureAccounts

# Section name (as on Linux) -> the function that reads it; `os` first, it is what the judges branch on.
$collectors = [ordered]@{
    os = 'Get-DeskguardPostureOs'
    disk = 'Get-DeskguardPostureDisk'
    screen_lock = 'Get-DeskguardPostureScreenLock'
    firewall = 'Get-DeskguardPostureFirewall'
    updates = 'Get-DeskguardPostureUpdates'
    usb = 'Get-DeskguardPostureUsb'
    vpn = 'Get-DeskguardPostureVpn'
    agent = 'Get-DeskguardPostureAgent'
    network = 'Get-DeskguardPostureNetwork'
    software = 'Get-DeskguardPostureSoftware'
    av = 'Get-DeskguardPostureAv'
    accounts = 'Get-DeskguardPostureAccounts'
}

$spec = @{
    options = @{
        sections = @{ type = 'list'; elements = 'str' }
        params = @{ type = 'dict'; default = @{} }
    }
    supports_check_mode = $true
}
$module = [Ansible.Basic.AnsibleModule]::Create($args, $spec)
$module.Result.changed = $false

$wanted = @($collectors.Keys)
if ($module.Params.sections) { $wanted = @($module.Params.sections) }
$unknown = @($wanted | Where-Object { -not $collectors.Contains($_) } | Sort-Object)
if ($unknown.Count -gt 0) {
    $module.FailJson("unknown posture sections: $($unknown -join ', ') (known: $(@($collectors.Keys) -join ', '))")
}

$posture = @{}
$errors = @{}
$timings = @{}
foreach ($name in $wanted) {
    $watch = [System.Diagnostics.Stopwatch]::StartNew()
    $sectionParams = @{}
    if ($module.Params.params -and $module.Params.params.ContainsKey($name) -and $null -ne $module.Params.params[$name]) {
        $sectionParams = $module.Params.params[$name]
    }
    try {
        # One broken section must not hide the others: it goes to `errors`, the controller scores its
        # controls as `error`, never as passed.
        $posture[$name] = & $collectors[$name] -Params $sectionParams
    }
    catch {
        $message = [string]$_.Exception.Message
        if ($message.Length -gt 300) { $message = $message.Substring(0, 300) }
        $errors[$name] = '{0}: {1}' -f $_.Exception.GetType().Name, $message
    }
    $timings[$name] = [Math]::Round($watch.Elapsed.TotalSeconds, 3)
}
$module.Result.posture = $posture
$module.Result.errors = $errors
$module.Result.timings = $timings
$module.ExitJson()
