#!powershell
# deskguard: the laptop's network environment on Windows (NET-001..003), read-only; documentation in
# deskguard_network_posture.py. Returns the same `network` shape as the Linux gatherer so the controller judges
# both alike. The gathering lives in Ansible.ModuleUtils.DeskguardPostureNetwork.psm1, shared with the nightly
# posture (deskguard_posture.ps1). Not yet verified on a real Windows host: see docs/netcheck.md and docs/windows.md.
# Copyright: deskguard contributors; Apache-2.0

#AnsibleRequires -CSharpUtil Ansible.Basic
#Requires -Module Ansible.ModuleUtils.DeskguardPostureNetwork

$spec = @{
    options = @{
        targets = @{ type = 'list'; elements = 'dict'; default = @() }
        vpn_interface = @{ type = 'str'; default = 'wg0' }
        time_limit = @{ type = 'float'; default = 10.0 }
        probe_timeout = @{ type = 'float'; default = 2.0 }
        samples = @{ type = 'int'; default = 10 }
        sample_timeout = @{ type = 'float'; default = 0.9 }
    }
    supports_check_mode = $true
}
$module = [Ansible.Basic.AnsibleModule]::Create($args, $spec)
$module.Result.changed = $false
$module.Result.network = Get-DeskguardNetworkState -Options $module.Params
$module.ExitJson()
