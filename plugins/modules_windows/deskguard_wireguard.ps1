#!powershell
# deskguard: the laptop's WireGuard key and tunnel service on Windows (VPN-001, VPN-003); documentation in
# deskguard_wireguard.py. Not yet verified on a real Windows host: see docs/vpn.md and docs/windows.md.
# Copyright: deskguard contributors; Apache-2.0

#AnsibleRequires -CSharpUtil Ansible.Basic

$spec = @{
    options = @{
        interface = @{ type = 'str'; default = 'wg0' }
        address = @{ type = 'str'; required = $true }
        gateway_public_key = @{ type = 'str'; required = $true }
        endpoint = @{ type = 'str'; required = $true }
        allowed_ips = @{ type = 'list'; elements = 'str'; required = $true }
        dns = @{ type = 'list'; elements = 'str'; default = @() }
        mtu = @{ type = 'int'; default = 1420 }
        keepalive = @{ type = 'int'; default = 25 }
        kill_switch = @{ type = 'bool'; default = $false }
        kill_switch_captive_ports = @{ type = 'list'; elements = 'str'; default = @() }
        management_networks = @{ type = 'list'; elements = 'str'; default = @() }
        rotate = @{ type = 'bool'; default = $false }
        rollback_seconds = @{ type = 'int'; default = 0 }
        backend = @{ type = 'str'; default = 'auto' }
        # Linux's kernel-or-wireguard-go choice; WireGuard for Windows brings its own implementation.
        implementation = @{ type = 'str'; default = 'auto' }
        handshake_max_age = @{ type = 'int'; default = 180 }
        config_dir = @{ type = 'path'; default = "$env:ProgramData\deskguard\wireguard" }
    }
    supports_check_mode = $true
}
$module = [Ansible.Basic.AnsibleModule]::Create($args, $spec)
$p = $module.Params
$module.Result.changed = $false
$module.Result.backend = 'wireguard-windows'
$module.Result.rollback_armed = $false

$wgDir = Join-Path $env:ProgramFiles 'WireGuard'
$wg = Join-Path $wgDir 'wg.exe'
$wireguard = Join-Path $wgDir 'wireguard.exe'
$service = 'WireGuardTunnel$' + $p.interface
$confPath = Join-Path $p.config_dir ($p.interface + '.conf')

if (-not (Test-Path -LiteralPath $wireguard)) {
    $module.FailJson("WireGuard for Windows is not installed ($wireguard): install its MSI first (software_policy)")
}

function Set-PrivateAcl {
    # SYSTEM and Administrators only, nothing inherited: the Windows counterpart of 0600 root.
    param([string]$Path)
    $acl = New-Object System.Security.AccessControl.DirectorySecurity
    if (Test-Path -LiteralPath $Path -PathType Leaf) { $acl = New-Object System.Security.AccessControl.FileSecurity }
    $acl.SetAccessRuleProtection($true, $false)
    foreach ($sid in 'S-1-5-18', 'S-1-5-32-544') {
        $id = New-Object System.Security.Principal.SecurityIdentifier($sid)
        $rule = New-Object System.Security.AccessControl.FileSystemAccessRule($id, 'FullControl', 'Allow')
        $acl.AddAccessRule($rule)
    }
    Set-Acl -LiteralPath $Path -AclObject $acl
}

function Get-PrivateKey {
    # The key lives only in the tunnel config (WireGuard for Windows reads it from there); read, never returned.
    if (-not (Test-Path -LiteralPath $confPath)) { return $null }
    foreach ($line in Get-Content -LiteralPath $confPath) {
        if ($line -match '^\s*PrivateKey\s*=\s*(\S+)\s*$') { return $Matches[1] }
    }
    return $null
}

function Get-PublicKey {
    param([string]$PrivateKey)
    ($PrivateKey | & $wg pubkey | Out-String).Trim()
}

$private = Get-PrivateKey
$newKey = ($null -eq $private) -or $p.rotate
if ($newKey -and $module.CheckMode) {
    $module.Result.changed = $true
    $module.Result.public_key = $null
    $module.Result.files = @($confPath)
    $module.ExitJson()
}
if ($newKey) {
    $private = (& $wg genkey | Out-String).Trim()
}
$publicKey = Get-PublicKey -PrivateKey $private

$lines = @(
    '# Managed by deskguard (VPN-001); local edits are replaced at the next run.',
    '[Interface]',
    "PrivateKey = $private",
    "Address = $($p.address)/32",
    "MTU = $($p.mtu)"
)
if ($p.dns.Count -gt 0) { $lines += "DNS = $($p.dns -join ', ')" }
$lines += @('', '[Peer]', "PublicKey = $($p.gateway_public_key)", "Endpoint = $($p.endpoint)",
    "AllowedIPs = $($p.allowed_ips -join ', ')")
if ($p.keepalive -gt 0) { $lines += "PersistentKeepalive = $($p.keepalive)" }
$content = ($lines -join "`r`n") + "`r`n"
$private = $null

$current = $null
if (Test-Path -LiteralPath $confPath) { $current = [System.IO.File]::ReadAllText($confPath) }
$svc = Get-Service -Name $service -ErrorAction SilentlyContinue
$differs = $current -ne $content
$module.Result.files = @()
if ($differs) { $module.Result.files = @($confPath) }
$module.Result.public_key = $publicKey

if ($differs -or $null -eq $svc -or $svc.Status -ne 'Running') {
    $module.Result.changed = $true
    if (-not $module.CheckMode) {
        if (-not (Test-Path -LiteralPath $p.config_dir)) { New-Item -ItemType Directory -Path $p.config_dir -Force | Out-Null }
        Set-PrivateAcl -Path $p.config_dir
        $staged = $confPath + '.new'
        [System.IO.File]::WriteAllText($staged, $content)
        Set-PrivateAcl -Path $staged
        if ($null -ne $current) { Copy-Item -LiteralPath $confPath -Destination ($confPath + '.previous') -Force }
        Move-Item -LiteralPath $staged -Destination $confPath -Force
        if ($null -eq $svc) {
            & $wireguard /installtunnelservice $confPath
        }
        else {
            Restart-Service -Name $service
        }
        $svc = Get-Service -Name $service -ErrorAction SilentlyContinue
        if ($null -eq $svc -or $svc.Status -ne 'Running') {
            if ($null -ne $current) {
                Copy-Item -LiteralPath ($confPath + '.previous') -Destination $confPath -Force
                Restart-Service -Name $service -ErrorAction SilentlyContinue
            }
            $module.FailJson("the tunnel service $service did not start; the previous configuration is back")
        }
    }
}

# VPN-003 on Windows: WireGuard for Windows blocks untunnelled traffic itself when the only peer takes
# 0.0.0.0/0 (full tunnel); a split tunnel has no kill switch there.
$full = $p.allowed_ips -contains '0.0.0.0/0'
$vpn3 = @{ state = 'not_applicable'; findings = @('the policy has no kill switch') }
if ($p.kill_switch) {
    if ($full) { $vpn3 = @{ state = 'compliant'; findings = @() } }
    else { $vpn3 = @{ state = 'noncompliant'; findings = @('WireGuard for Windows has a kill switch only in full-tunnel mode') } }
}
$running = $null -ne $svc -and $svc.Status -eq 'Running'
$vpn1 = @{ state = 'noncompliant'; findings = @("service $service is not running") }
if ($running -or $module.CheckMode) { $vpn1 = @{ state = 'compliant'; findings = @() } }
$module.Result.controls = @{ 'VPN-001' = $vpn1; 'VPN-003' = $vpn3 }
$module.ExitJson()
