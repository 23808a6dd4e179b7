# deskguard posture section `firewall` on Windows (FW-001), read-only: each profile as in force (ActiveStore:
# local settings merged with Group Policy), and the inbound rules that keep WinRM (the management channel)
# reachable. Not yet verified on a real Windows host.
# Copyright: deskguard contributors; Apache-2.0

Function Get-DeskguardPostureFirewall {
    param($Params)
    $port = 5986
    if ($Params -and $Params.management_port) { $port = [int]$Params.management_port }
    $profiles = @{}
    foreach ($fp in @(Get-NetFirewallProfile -PolicyStore ActiveStore -ErrorAction Stop)) {
        # Enabled is a GpoBoolean: True, False or NotConfigured; the actions Block, Allow or NotConfigured.
        $profiles[[string]$fp.Name] = @{ enabled = [string]$fp.Enabled
            default_inbound_action = [string]$fp.DefaultInboundAction
            default_outbound_action = [string]$fp.DefaultOutboundAction }
    }
    $management = @(Get-NetFirewallPortFilter -PolicyStore ActiveStore -Protocol TCP -ErrorAction SilentlyContinue |
        Where-Object { @($_.LocalPort) -contains [string]$port } | Get-NetFirewallRule -ErrorAction SilentlyContinue |
        Where-Object { [string]$_.Enabled -eq 'True' -and [string]$_.Direction -eq 'Inbound' -and [string]$_.Action -eq 'Allow' } |
        ForEach-Object { [string]$_.DisplayName })
    @{ tool = 'windows-firewall'; profiles = $profiles; management_port = $port; management_rules = $management }
}

Export-ModuleMember -Function Get-DeskguardPostureFirewall
