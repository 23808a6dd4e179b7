#!powershell
# deskguard: the Windows laptop's security posture in one read-only call (the nightly compliance run);
# documentation in deskguard_posture.py. Ansible picks this file for a host whose shell is PowerShell (the
# winrm connection) and deskguard_posture.py for the others, so playbooks/comply.yml has no OS switch
# (tests/windows/test_posture_windows.py shows both). Same return shape as the Linux module: posture, errors
# and timings per section. Each section is one module_util, Ansible.ModuleUtils.DeskguardPosture<Section>.psm1
# exporting Get-DeskguardPosture<Section>; the collection itself (the section table, one error per broken
# section, timings) is Ansible.ModuleUtils.DeskguardCollectPosture.psm1, which the check-in agent runs too.
# Adding a section is one #Requires line here and one table entry there.
# Not yet verified on a real Windows host: see docs/windows.md.
# Copyright: deskguard contributors; Apache-2.0

#AnsibleRequires -CSharpUtil Ansible.Basic
#Requires -Module Ansible.ModuleUtils.DeskguardCollectPosture
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

$spec = @{
    options = @{
        sections = @{ type = 'list'; elements = 'str' }
        params = @{ type = 'dict'; default = @{} }
    }
    supports_check_mode = $true
}
$module = [Ansible.Basic.AnsibleModule]::Create($args, $spec)
$module.Result.changed = $false

try {
    $collected = Invoke-DeskguardPostureCollection -Sections $module.Params.sections -Params $module.Params.params
}
catch [System.ArgumentException] {
    $module.FailJson($_.Exception.Message)
}
$module.Result.posture = $collected.posture
$module.Result.errors = $collected.errors
$module.Result.timings = $collected.timings
$module.ExitJson()
