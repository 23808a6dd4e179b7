# deskguard: the laptop's network environment on Windows (NET-001..003), read-only: the default route's link
# kind, Wi-Fi security, Windows' connection cost, the VPN tunnel and the call system's reachability and
# RTT/jitter/loss. The same `network` shape as the Linux gatherer (plugins/module_utils/deskguard_network.py),
# so the controller judges both alike. Used by deskguard_network_posture.ps1 (`deskguard netcheck`) and, as
# the posture section `network`, by deskguard_posture.ps1 with the settings the network_posture role left.
# Not yet verified on a real Windows host: see docs/netcheck.md and docs/windows.md.
# Copyright: deskguard contributors; Apache-2.0

function Get-Budget($p, $clock) {
    # Seconds the next probe may take: the probe timeout, or what is left of the time limit.
    $left = $p.time_limit - $clock.Elapsed.TotalSeconds
    return [Math]::Max(0.0, [Math]::Min($p.probe_timeout, $left))
}

# Link kinds from the adapter: PhysicalMediaType (NDIS_PHYSICAL_MEDIUM names), the driver file and the
# PnP id. usb8023.sys is Windows' in-box RNDIS driver ("Remote NDIS based Internet Sharing Device", what an
# Android phone's USB tethering binds); netaapl64.sys is Apple's "Apple Mobile Device Ethernet" (iPhone).
function Get-LinkKind($adapter) {
    $media = [string]$adapter.PhysicalMediaType
    $driver = [string]$adapter.DriverFileName
    $desc = [string]$adapter.InterfaceDescription
    if ($media -eq 'BlueTooth' -or $desc -match 'Bluetooth') { return 'bluetooth_pan' }
    if ($media -eq 'Wireless WAN' -or $desc -match 'Mobile Broadband') { return 'mobile_broadband' }
    if ($driver -match '^(usb8023|rndismp6?|netaapl64|netaapl)\.sys$' -or $desc -match 'Remote NDIS|Apple Mobile Device Ethernet') {
        return 'usb_tether'
    }
    if ($media -match '802\.11') { return 'wifi' }
    if ($adapter.Virtual -or $desc -match 'WireGuard|TAP-Windows|Hyper-V') { return 'virtual' }
    if ($media -eq '802.3') { return 'wired' }
    return 'unknown'
}

function Get-WifiSecurity($auth) {
    switch -regex ([string]$auth) {
        '^Open$' { return 'open' }
        'WPA3' { return 'wpa3' }
        'Enterprise' { return 'enterprise' }
        'WPA2' { return 'wpa2' }
        '^WPA' { return 'wpa' }
        'WEP|Shared' { return 'wep' }
        default { return 'unknown' }
    }
}

function Measure-Connect([string]$address, [int]$port, [double]$timeout) {
    $client = New-Object System.Net.Sockets.TcpClient
    $watch = [System.Diagnostics.Stopwatch]::StartNew()
    try {
        $task = $client.ConnectAsync($address, $port)
        if (-not $task.Wait([int]($timeout * 1000))) { return @{ state = 'unknown'; ms = $null } }
        return @{ state = 'open'; ms = [Math]::Round($watch.Elapsed.TotalMilliseconds, 1) }
    } catch {
        $inner = $_.Exception.InnerException
        if ($inner -and $inner.InnerException) { $inner = $inner.InnerException }
        if ($inner -is [System.Net.Sockets.SocketException] -and $inner.SocketErrorCode -eq 'ConnectionRefused') {
            return @{ state = 'refused'; ms = [Math]::Round($watch.Elapsed.TotalMilliseconds, 1) }
        }
        return @{ state = "error: $($_.Exception.Message)"; ms = $null }
    } finally {
        $client.Dispose()
    }
}

Function Get-DeskguardNetworkState {
    # $Options: targets, vpn_interface, time_limit, probe_timeout, samples, sample_timeout (all required; the
    # callers fill the defaults).
    param($Options)
    $p = $Options
    $clock = [System.Diagnostics.Stopwatch]::StartNew()
    $unknown = New-Object System.Collections.Generic.List[string]

    $network = @{ tools = @{ ip = $true; nmcli = $false; iw = $false; wpa_cli = $false; wg = $true }
        uplink = $null; default_routes = @(); networkmanager = $null; android_metered = $null; wifi = $null
        vpn = $null; call_system = $null; metered_cost = $null }

    $routes = @(Get-NetRoute -DestinationPrefix '0.0.0.0/0' -ErrorAction SilentlyContinue |
        Sort-Object { $_.RouteMetric + $_.InterfaceMetric })
    $network.default_routes = @($routes | ForEach-Object {
        @{ dev = $_.InterfaceAlias; gateway = $_.NextHop; metric = [int]($_.RouteMetric + $_.InterfaceMetric) } })
    $best = $routes | Where-Object { $_.InterfaceAlias -ne $p.vpn_interface } | Select-Object -First 1
    if (-not $routes) { $unknown.Add('no default route: the laptop is offline') }
    if ($best) {
        $adapter = Get-NetAdapter -InterfaceIndex $best.ifIndex -ErrorAction SilentlyContinue
        if (-not $adapter) {
            $unknown.Add("interface $($best.InterfaceAlias) disappeared during the check")
            $network.uplink = @{ interface = $best.InterfaceAlias; gateway = $best.NextHop; kind = 'unknown'; present = $false }
        } else {
            $usbId = $null
            if ([string]$adapter.PnPDeviceID -match 'VID_([0-9A-F]{4})&PID_([0-9A-F]{4})') {
                $usbId = ('{0}:{1}' -f $Matches[1], $Matches[2]).ToLowerInvariant()
            }
            $kind = Get-LinkKind $adapter
            $network.uplink = @{ interface = $adapter.Name; gateway = $best.NextHop; kind = $kind
                driver = $adapter.DriverFileName; devtype = [string]$adapter.PhysicalMediaType; usb_id = $usbId
                present = $true; evidence = @("driver $($adapter.DriverFileName)", "media $($adapter.PhysicalMediaType)",
                    "adapter $($adapter.InterfaceDescription)") }
            if ($kind -eq 'wifi') {
                $wifi = @{ ssid = $null; bssid = $null; security = 'unknown'; source = 'netsh'; bssid_hints = @() }
                $text = netsh.exe wlan show interfaces 2>$null
                foreach ($line in $text) {
                    if ($line -match '^\s*SSID\s*:\s*(.*)$') { $wifi.ssid = $Matches[1].Trim() }
                    elseif ($line -match '^\s*(AP )?BSSID\s*:\s*(.*)$') { $wifi.bssid = $Matches[2].Trim().ToLowerInvariant() }
                    elseif ($line -match '^\s*Authentication\s*:\s*(.*)$') { $wifi.security = Get-WifiSecurity $Matches[1].Trim() }
                }
                if ($wifi.bssid -and $wifi.bssid.StartsWith('02:1a:11')) { $wifi.bssid_hints += 'android_softap_bssid' }
                if ($wifi.security -eq 'unknown') { $unknown.Add('Wi-Fi security: netsh wlan did not say') }
                $network.wifi = $wifi
            }
        }
    }

    # Windows' own view of cost (Windows.Networking.Connectivity): Variable or Fixed means a metered data plan.
    try {
        $null = [Windows.Networking.Connectivity.NetworkInformation, Windows.Networking.Connectivity, ContentType = WindowsRuntime]
        $connProfile = [Windows.Networking.Connectivity.NetworkInformation]::GetInternetConnectionProfile()
        if ($connProfile) {
            $cost = $connProfile.GetConnectionCost()
            $network.metered_cost = [string]$cost.NetworkCostType
            $metered = if ($cost.NetworkCostType -in @('Fixed', 'Variable') -or $cost.Roaming) { 'yes' } else { 'no' }
            $network.networkmanager = @{ type = $null; driver = $null; metered = $metered; connection = $connProfile.ProfileName; dhcp4 = @{} }
        }
    } catch {
        $unknown.Add('metered state: the connection cost API is not available')
    }

    if ($p.vpn_interface) {
        $tunnel = Get-NetAdapter -Name $p.vpn_interface -ErrorAction SilentlyContinue
        $network.vpn = @{ interface = $p.vpn_interface; up = [bool]($tunnel -and $tunnel.Status -eq 'Up')
            admin_up = [bool]$tunnel; peers = $null; handshake_age = $null; configured = [bool]$tunnel }
        $wgExe = Join-Path $env:ProgramFiles 'WireGuard\wg.exe'
        if ($network.vpn.up -and (Test-Path $wgExe)) {
            $now = [DateTimeOffset]::UtcNow.ToUnixTimeSeconds()
            $ages = @(& $wgExe show $p.vpn_interface latest-handshakes 2>$null | ForEach-Object {
                $f = $_ -split "`t"; if ($f.Count -eq 2 -and [long]$f[1] -gt 0) { $now - [long]$f[1] } })
            if ($ages) { $network.vpn.handshake_age = [int]($ages | Measure-Object -Minimum).Minimum }
        }
    }

    if ($p.targets.Count -gt 0) {
        $cs = @{ targets = @(); samples = $null }
        $first = $null
        foreach ($t in $p.targets) {
            $entry = @{ host = [string]$t.host; addresses = @(); resolved = $null; route_dev = $null; through_vpn = $null; ports = @{} }
            $budget = Get-Budget $p $clock
            if ($budget -le 0) { $unknown.Add("call system $($t.host): no time left"); $cs.targets += $entry; continue }
            $job = Start-Job -ScriptBlock { param($n) Resolve-DnsName -Name $n -Type A -QuickTimeout -ErrorAction Stop |
                Where-Object { $_.IPAddress } | ForEach-Object { $_.IPAddress } } -ArgumentList $entry.host
            if (Wait-Job $job -Timeout ([Math]::Max(1, [int][Math]::Ceiling($budget)))) {
                try {
                    $entry.addresses = @(Receive-Job $job -ErrorAction Stop | Sort-Object -Unique)
                    $entry.resolved = $entry.addresses.Count -gt 0
                    if (-not $entry.resolved) { $entry.error = 'does not resolve (no A record)' }
                } catch {
                    $entry.resolved = $false
                    $entry.error = "does not resolve ($($_.Exception.Message))"
                }
            } else {
                $entry.error = "no DNS answer within $budget s"
                $unknown.Add("call system $($entry.host): $($entry.error)")
            }
            Remove-Job $job -Force
            if ($entry.resolved) {
                $route = Find-NetRoute -RemoteIPAddress $entry.addresses[0] -ErrorAction SilentlyContinue |
                    Where-Object { $_.InterfaceAlias } | Select-Object -First 1
                if ($route) {
                    $entry.route_dev = $route.InterfaceAlias
                    $entry.through_vpn = $route.InterfaceAlias -eq $p.vpn_interface
                }
                foreach ($port in $t.ports) {
                    $r = Measure-Connect $entry.addresses[0] ([int]$port) (Get-Budget $p $clock)
                    $entry.ports["$port"] = $r
                    if ($r.state -eq 'unknown') { $unknown.Add("call system $($entry.host):$($port): no answer in time") }
                    elseif ($r.state -eq 'open' -and -not $first) { $first = @($entry.host, $entry.addresses[0], [int]$port) }
                }
            }
            $cs.targets += $entry
        }
        if ($first -and $p.samples -gt 0) {
            $got = New-Object System.Collections.Generic.List[object]
            for ($i = 0; $i -lt [Math]::Min($p.samples, 50); $i++) {
                if (($p.time_limit - $clock.Elapsed.TotalSeconds) -lt ($p.sample_timeout + 0.1)) {
                    $unknown.Add("RTT samples: stopped after $i of $($p.samples) (time limit)")
                    break
                }
                $r = Measure-Connect $first[1] $first[2] $p.sample_timeout
                if ($r.state -in @('open', 'refused')) { $got.Add($r.ms) } else { $got.Add($null) }
            }
            $answered = @($got | Where-Object { $null -ne $_ })
            $s = @{ sent = $got.Count; received = $answered.Count; host = $first[0]; port = $first[2]; method = 'tcp-connect'
                loss_pct = $null; rtt_avg_ms = $null; rtt_min_ms = $null; rtt_max_ms = $null; jitter_ms = $null
                sample_timeout_ms = [int]($p.sample_timeout * 1000) }
            if ($got.Count -gt 0) { $s.loss_pct = [Math]::Round(100.0 * ($got.Count - $answered.Count) / $got.Count, 1) }
            if ($answered.Count -gt 0) {
                $m = $answered | Measure-Object -Average -Minimum -Maximum
                $s.rtt_avg_ms = [Math]::Round($m.Average, 1); $s.rtt_min_ms = $m.Minimum; $s.rtt_max_ms = $m.Maximum
            }
            if ($answered.Count -ge 2) {
                $sum = 0.0
                for ($i = 1; $i -lt $answered.Count; $i++) { $sum += [Math]::Abs($answered[$i] - $answered[$i - 1]) }
                $s.jitter_ms = [Math]::Round($sum / ($answered.Count - 1), 1)
            }
            $cs.samples = $s
        }
        $network.call_system = $cs
    }

    $network.unknown = @($unknown)
    $network.complete = $unknown.Count -eq 0
    $network.time_limit = $p.time_limit
    $network.elapsed = [Math]::Round($clock.Elapsed.TotalSeconds, 2)

    $network.unknown = @($unknown)
    $network.complete = $unknown.Count -eq 0
    $network.time_limit = $p.time_limit
    $network.elapsed = [Math]::Round($clock.Elapsed.TotalSeconds, 2)
    $network
}

# The module's defaults (deskguard_network_posture.ps1), for the posture section which has no options.
$script:DeskguardNetworkDefaults = @{ targets = @(); vpn_interface = 'wg0'; time_limit = 10.0; probe_timeout = 2.0
    samples = 10; sample_timeout = 0.9 }

Function Get-DeskguardPostureNetwork {
    # The `network` posture section: the targets and limits the network_posture role left on the laptop
    # (none: the link is still classified, `configured` says why the call system was not probed).
    param($Params)
    $path = 'C:\ProgramData\deskguard\network-posture.json'
    $options = $script:DeskguardNetworkDefaults.Clone()
    $configured = Test-Path -LiteralPath $path
    if ($configured) {
        $saved = [System.IO.File]::ReadAllText($path) | ConvertFrom-Json -ErrorAction Stop
        foreach ($name in @($options.Keys)) {
            if ($null -ne $saved.$name) { $options[$name] = $saved.$name }
        }
        $options.targets = @($options.targets)
    }
    $network = Get-DeskguardNetworkState -Options $options
    $network.configured = $configured
    $network
}

Export-ModuleMember -Function Get-DeskguardNetworkState, Get-DeskguardPostureNetwork
