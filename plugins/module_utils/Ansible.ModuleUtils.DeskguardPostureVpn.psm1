# deskguard posture section `vpn` on Windows (VPN-001..003), read-only. WireGuard for Windows: the tunnel
# service WireGuardTunnel$<interface>, its config (which holds the private key: only whether its ACL is
# SYSTEM + Administrators is returned), `wg.exe show <interface> dump` parsed to the keys the Linux facts use
# (the private key field is dropped at once), and the kill switch WireGuard for Windows enables for a single
# full-tunnel peer. The built-in IKEv2 client: Get-VpnConnection. Not yet verified on a real Windows host.
# Copyright: deskguard contributors; Apache-2.0

Function Test-DeskguardPrivateAcl {
    param([string]$Path)
    # Only LocalSystem (S-1-5-18) and Administrators (S-1-5-32-544) may read the tunnel config.
    $sids = @((Get-Acl -LiteralPath $Path -ErrorAction Stop).Access | ForEach-Object {
            $_.IdentityReference.Translate([System.Security.Principal.SecurityIdentifier]).Value })
    @($sids | Where-Object { $_ -notin @('S-1-5-18', 'S-1-5-32-544') }).Count -eq 0
}

Function Get-DeskguardWireGuardFacts {
    param([string]$Interface)
    $service = 'WireGuardTunnel$' + $Interface
    $conf = Join-Path $env:ProgramData "deskguard\wireguard\$Interface.conf"
    $svc = Get-Service -Name $service -ErrorAction SilentlyContinue
    $facts = @{ interface = $Interface; client = 'wireguard'; config_files = @(); config_private = $null
        key_file = $null; interface_up = $false; public_key = $null; peers = @(); kill_switch = $false
        service = @{ name = $service; status = if ($svc) { [string]$svc.Status } else { $null }
            start_type = if ($svc) { [string]$svc.StartType } else { $null } } }
    if (Test-Path -LiteralPath $conf) {
        $facts.config_files = @($conf)
        $facts.config_private = Test-DeskguardPrivateAcl -Path $conf
    }
    $wg = Join-Path $env:ProgramFiles 'WireGuard\wg.exe'
    if (-not (Test-Path -LiteralPath $wg)) { return $facts }
    # Modules run with $ErrorActionPreference = 'Stop', under which Windows PowerShell may turn wg.exe's
    # stderr ("Unable to access interface") into an exception: that only means the tunnel is down.
    try { $dump = @(& $wg show $Interface dump 2>$null) } catch { return $facts }
    if ($LASTEXITCODE -ne 0 -or $dump.Count -eq 0) { return $facts }
    $facts.interface_up = $true
    $first = $dump[0] -split "`t"
    if ($first.Count -gt 1 -and $first[1] -ne '(none)') { $facts.public_key = $first[1] }
    $first = $null
    $now = [DateTimeOffset]::UtcNow.ToUnixTimeSeconds()
    foreach ($line in $dump | Select-Object -Skip 1) {
        $f = $line -split "`t"
        if ($f.Count -lt 8) { continue }
        $facts.peers += @{ public_key = $f[0]; endpoint = if ($f[2] -eq '(none)') { $null } else { $f[2] }
            allowed_ips = if ($f[3] -eq '(none)') { @() } else { @($f[3] -split ',') }
            latest_handshake_age = if ([long]$f[4] -gt 0) { [int]($now - [long]$f[4]) } else { $null }
            rx_bytes = [long]$f[5]; tx_bytes = [long]$f[6] }
    }
    $facts.kill_switch = $facts.peers.Count -eq 1 -and @($facts.peers[0].allowed_ips) -contains '0.0.0.0/0'
    $facts
}

Function Get-DeskguardPostureVpn {
    param($Params)
    $interface = 'wg0'
    if ($Params -and $Params.interface) { $interface = [string]$Params.interface }
    if ($Params -and $Params.client -eq 'ikev2') {
        $name = "deskguard-$interface"
        $conn = Get-VpnConnection -Name $name -AllUserConnection -ErrorAction SilentlyContinue
        return @{ interface = $interface; client = 'ikev2'; configured = $null -ne $conn
            ikev2 = if ($conn) { @{ name = $name; server = [string]$conn.ServerAddress; tunnel_type = [string]$conn.TunnelType
                    status = [string]$conn.ConnectionStatus; split_tunneling = [bool]$conn.SplitTunneling } } else { $null } }
    }
    Get-DeskguardWireGuardFacts -Interface $interface
}

Export-ModuleMember -Function Get-DeskguardPostureVpn
