# deskguard-agent for Windows: installed by the endpoint_agent role, run as SYSTEM by the scheduled task
# "deskguard-agent" (and by playbooks/wipe.yml with -Mode Ack / -Mode Execute). The same protocol as the Linux
# agent (docs/agent-protocol.md): envelopes of canonical JSON signed with ECDSA P-256 / SHA-256 in IEEE P1363
# form, which is what .NET Framework's ECDsaCng produces and verifies on Windows PowerShell 5.1.
# NOT YET RUN ON A REAL WINDOWS HOST: checked by the syntax gate and golden tests only (docs/agent.md).
[CmdletBinding()]
param(
    [ValidateSet('Run', 'Ack', 'Execute', 'PublicKey')]
    [string]$Mode = 'Run',
    [string]$Order = '',
    [string]$ConfigPath = 'C:\ProgramData\deskguard\agent\agent.json'
)

Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'
Add-Type -AssemblyName System.Core

$OrderLimit = 8192
$AnswerLimit = 4096
$SkewSeconds = 300
$AckRefusals = @('expired', 'not_yet_valid', 'replayed', 'foreign_volumes', 'unsupported')
$Utf8 = New-Object System.Text.UTF8Encoding($false)
# 2: check-ins carry the whole posture (1 carried only the agent's own facts).
$AgentVersion = '2-windows'

# ------------------------------------------------------------------------------------------- JSON and time

function ConvertTo-JsonString([string]$Text) {
    $sb = New-Object System.Text.StringBuilder
    [void]$sb.Append('"')
    foreach ($ch in $Text.ToCharArray()) {
        $code = [int]$ch
        if ($ch -eq '"') { [void]$sb.Append('\"') }
        elseif ($ch -eq '\') { [void]$sb.Append('\\') }
        elseif ($code -eq 10) { [void]$sb.Append('\n') }
        elseif ($code -eq 13) { [void]$sb.Append('\r') }
        elseif ($code -eq 9) { [void]$sb.Append('\t') }
        elseif ($code -lt 32) { [void]$sb.Append(('\u{0:x4}' -f $code)) }
        else { [void]$sb.Append($ch) }
    }
    [void]$sb.Append('"')
    return $sb.ToString()
}

# Canonical JSON as Python's json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False): keys
# sorted by code point, no whitespace. Besides what acknowledgements carry (strings, integers, booleans, null,
# lists, hashtables), check-ins carry the posture sections' values: every integer width, floating point
# (round-trip form, invariant culture: a German laptop must not send "1,5"), enums by name, times as UTC text,
# and objects with note properties. Anything else is an error, so the caller can set that section aside.
$IntegerTypes = @([byte], [sbyte], [int16], [uint16], [int], [uint32], [long], [uint64])
$Invariant = [Globalization.CultureInfo]::InvariantCulture

function ConvertTo-CanonicalJson($Value) {
    if ($null -eq $Value) { return 'null' }
    if ($Value -is [bool]) { if ($Value) { return 'true' } else { return 'false' } }
    if ($Value -is [string] -or $Value -is [char] -or $Value -is [guid]) { return (ConvertTo-JsonString ([string]$Value)) }
    if ($Value -is [enum]) { return (ConvertTo-JsonString $Value.ToString()) }
    foreach ($type in $IntegerTypes) { if ($Value -is $type) { return $Value.ToString($Invariant) } }
    if ($Value -is [double] -or $Value -is [single] -or $Value -is [decimal]) {
        $number = [double]$Value
        # JSON has no NaN or Infinity (the server refuses them, as Python's allow_nan=False does).
        if ([double]::IsNaN($number) -or [double]::IsInfinity($number)) { return 'null' }
        return $number.ToString('R', $Invariant)
    }
    if ($Value -is [datetime]) { return (ConvertTo-JsonString (Get-UtcText $Value)) }
    if ($Value -is [System.Collections.IDictionary]) {
        $keys = [string[]]@($Value.Keys)
        [Array]::Sort($keys, [StringComparer]::Ordinal)
        $parts = foreach ($k in $keys) { (ConvertTo-JsonString $k) + ':' + (ConvertTo-CanonicalJson $Value[$k]) }
        return '{' + (@($parts) -join ',') + '}'
    }
    if ($Value -is [System.Management.Automation.PSCustomObject]) {
        $table = @{}
        foreach ($p in $Value.PSObject.Properties) { $table[$p.Name] = $p.Value }
        return (ConvertTo-CanonicalJson $table)
    }
    if ($Value -is [System.Collections.IEnumerable]) {
        $parts = foreach ($item in $Value) { ConvertTo-CanonicalJson $item }
        return '[' + (@($parts) -join ',') + ']'
    }
    throw "cannot encode a value of type $($Value.GetType().FullName)"
}

function Get-UtcText([datetime]$When) { return $When.ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ') }

function ConvertFrom-UtcText([string]$Text) {
    $styles = [Globalization.DateTimeStyles]::AdjustToUniversal -bor [Globalization.DateTimeStyles]::AssumeUniversal
    return [datetime]::ParseExact($Text, 'yyyy-MM-ddTHH:mm:ssZ', [Globalization.CultureInfo]::InvariantCulture, $styles)
}

# ------------------------------------------------------------------------------------------------- keys

function Get-KeyId([byte[]]$SpkiDer) {
    $sha = [Security.Cryptography.SHA256]::Create()
    $hex = -join ($sha.ComputeHash($SpkiDer) | ForEach-Object { $_.ToString('x2') })
    return $hex.Substring(0, 16)
}

function ConvertFrom-Pem([string]$Pem) {
    $body = ($Pem -split "`n" | Where-Object { $_ -notmatch '-----' }) -join ''
    return [Convert]::FromBase64String($body.Trim())
}

# A P-256 SubjectPublicKeyInfo is a fixed 26-byte prefix and the uncompressed point 04||X||Y.
$SpkiPrefix = [byte[]](0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
                       0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00)

function Get-VerifierFromSpki([byte[]]$SpkiDer) {
    if ($SpkiDer.Length -ne 91 -or $SpkiDer[26] -ne 4) { throw 'the pinned order key is not an ECDSA P-256 key' }
    for ($i = 0; $i -lt 26; $i++) { if ($SpkiDer[$i] -ne $SpkiPrefix[$i]) { throw 'the pinned order key is not P-256' } }
    # BCRYPT_ECCPUBLIC_BLOB: magic "ECS1", key length 32, then X and Y.
    $blob = New-Object byte[] 72
    [BitConverter]::GetBytes([int]0x31534345).CopyTo($blob, 0)
    [BitConverter]::GetBytes([int]32).CopyTo($blob, 4)
    [Array]::Copy($SpkiDer, 27, $blob, 8, 64)
    $key = [Security.Cryptography.CngKey]::Import($blob, [Security.Cryptography.CngKeyBlobFormat]::EccPublicBlob)
    $ecdsa = New-Object Security.Cryptography.ECDsaCng($key)
    $ecdsa.HashAlgorithm = [Security.Cryptography.CngAlgorithm]::Sha256
    return $ecdsa
}

function Get-DeviceKey([string]$Name) {
    $provider = [Security.Cryptography.CngProvider]::MicrosoftSoftwareKeyStorageProvider
    $key = [Security.Cryptography.CngKey]::Open($Name, $provider, [Security.Cryptography.CngKeyOpenOptions]::MachineKey)
    $ecdsa = New-Object Security.Cryptography.ECDsaCng($key)
    $ecdsa.HashAlgorithm = [Security.Cryptography.CngAlgorithm]::Sha256
    return $ecdsa
}

function Get-DeviceSpki([string]$Name) {
    $ecdsa = Get-DeviceKey $Name
    $blob = $ecdsa.Key.Export([Security.Cryptography.CngKeyBlobFormat]::EccPublicBlob)
    $spki = New-Object byte[] 91
    $SpkiPrefix.CopyTo($spki, 0)
    $spki[26] = 4
    [Array]::Copy($blob, 8, $spki, 27, 64)
    return $spki
}

function New-Envelope([hashtable]$Payload, [string]$KeyName) {
    $ecdsa = Get-DeviceKey $KeyName
    $body = $Utf8.GetBytes((ConvertTo-CanonicalJson $Payload))
    $signature = $ecdsa.SignData($body)      # IEEE P1363: r||s, 64 bytes
    $envelope = @{ format = 'deskguard/1'; key_id = (Get-KeyId (Get-DeviceSpki $KeyName))
                   payload = [Convert]::ToBase64String($body); signature = [Convert]::ToBase64String($signature) }
    return (ConvertTo-CanonicalJson $envelope)
}

# -------------------------------------------------------------------------------------------- state file

function Read-State([string]$Dir) {
    $path = Join-Path $Dir 'state.json'
    $state = @{ v = 1; nonces = @{}; cancelled = @(); acknowledged = @{}; last_checkin = $null; refusals = @() }
    if (-not (Test-Path -LiteralPath $path)) { return $state }
    $data = Get-Content -LiteralPath $path -Raw -Encoding UTF8 | ConvertFrom-Json
    if ($data.v -ne 1) { throw "$path has an unknown format: refusing to start from a blank memory" }
    foreach ($p in $data.nonces.PSObject.Properties) { $state.nonces[$p.Name] = $p.Value.order_id }
    foreach ($p in $data.acknowledged.PSObject.Properties) { $state.acknowledged[$p.Name] = $p.Value }
    $state.cancelled = @($data.cancelled)
    $state.last_checkin = $data.last_checkin
    $state.refusals = @($data.refusals | ForEach-Object { @{ order_id = $_.order_id; reason = $_.reason; at = $_.at } })
    return $state
}

function Save-State([string]$Dir, [hashtable]$State) {
    $nonces = @{}
    foreach ($n in $State.nonces.Keys) { $nonces[$n] = @{ order_id = $State.nonces[$n] } }
    $doc = @{ v = 1; nonces = $nonces; cancelled = @($State.cancelled); acknowledged = $State.acknowledged
              last_checkin = $State.last_checkin; refusals = @($State.refusals | Select-Object -Last 50) }
    $tmp = Join-Path $Dir ('.state-' + [guid]::NewGuid().ToString('N'))
    [IO.File]::WriteAllText($tmp, (ConvertTo-CanonicalJson $doc), $Utf8)
    Move-Item -LiteralPath $tmp -Destination (Join-Path $Dir 'state.json') -Force
}

# ------------------------------------------------------------------------------------------ verification

# Orders name a BitLocker volume by its mount point ("C:"), as the escrow records it (docs/wipe.md).
function Get-LocalVolumeIds {
    $volumes = Get-CimInstance -Namespace 'root\cimv2\Security\MicrosoftVolumeEncryption' -ClassName Win32_EncryptableVolume
    return @($volumes | ForEach-Object { $_.DriveLetter } | Where-Object { $_ })
}

# Returns @{ Decision = 'accept' | 'cancel' | <reason>; Payload = <object or $null> }.
function Test-Order([string]$Body, $Config, [hashtable]$State) {
    $result = @{ Decision = 'malformed'; Payload = $null }
    if ($Utf8.GetByteCount($Body) -gt $OrderLimit) { $result.Decision = 'oversized'; return $result }
    try { $env = $Body | ConvertFrom-Json } catch { return $result }
    $names = @($env.PSObject.Properties | ForEach-Object { $_.Name } | Sort-Object)
    if (($names -join ',') -ne 'format,key_id,payload,signature') { return $result }
    if ($env.format -ne 'deskguard/1') { $result.Decision = 'unsupported'; return $result }
    $spki = ConvertFrom-Pem $Config.order_public_key
    if ($env.key_id -ne (Get-KeyId $spki)) { $result.Decision = 'unknown_key'; return $result }
    try {
        $payloadBytes = [Convert]::FromBase64String($env.payload)
        $signature = [Convert]::FromBase64String($env.signature)
    } catch { return $result }
    if ($signature.Length -ne 64) { return $result }
    $verifier = Get-VerifierFromSpki $spki
    # The signature covers the payload bytes as sent; they are parsed only after it verified.
    if (-not $verifier.VerifyData($payloadBytes, $signature)) { $result.Decision = 'bad_signature'; return $result }
    try { $payload = $Utf8.GetString($payloadBytes) | ConvertFrom-Json } catch { return $result }
    $result.Payload = $payload
    if ($payload.v -ne 1) { $result.Decision = 'unsupported'; return $result }
    if ($payload.type -eq 'cancel') {
        if ($payload.device_uuid -ne $Config.device_uuid) { $result.Decision = 'foreign_device'; return $result }
        $result.Decision = 'cancel'
        return $result
    }
    if ($payload.type -ne 'order' -or @('wipe', 'lock') -notcontains $payload.action) {
        $result.Decision = 'unsupported'
        return $result
    }
    if ($payload.device_uuid -ne $Config.device_uuid) { $result.Decision = 'foreign_device'; return $result }
    if ($State.nonces.ContainsKey($payload.nonce) -or $State.cancelled -contains $payload.order_id) {
        $result.Decision = 'replayed'
        return $result
    }
    $now = [datetime]::UtcNow
    if ($now -gt (ConvertFrom-UtcText $payload.expires_at)) { $result.Decision = 'expired'; return $result }
    if ((ConvertFrom-UtcText $payload.issued_at) -gt $now.AddSeconds($SkewSeconds)) {
        $result.Decision = 'not_yet_valid'
        return $result
    }
    $local = Get-LocalVolumeIds
    $volumes = @($payload.volumes)
    if ($volumes.Count -eq 0 -or @($volumes | Where-Object { $local -notcontains $_ }).Count -gt 0) {
        $result.Decision = 'foreign_volumes'
        return $result
    }
    if ($payload.action -eq 'lock') {
        # A lock must leave every volume openable with its escrowed recovery protector: each volume names the
        # protector ids to keep, and each of them must be on the volume now.
        foreach ($volume in $volumes) {
            $keep = @($payload.keep_keyslots.$volume)
            $present = @((Get-BitLockerVolume -MountPoint $volume).KeyProtector | ForEach-Object { $_.KeyProtectorId })
            if ($keep.Count -eq 0 -or @($keep | Where-Object { $present -notcontains $_ }).Count -gt 0) {
                $result.Decision = 'foreign_volumes'
                return $result
            }
        }
    }
    $result.Decision = 'accept'
    return $result
}

function New-Ack($Payload, [string]$Status, $Reason, $Config) {
    $ack = @{ v = 1; type = 'ack'; order_id = [string]$Payload.order_id; device_uuid = [string]$Config.device_uuid
              nonce = [string]$Payload.nonce; status = $Status; reason = $Reason; sent_at = (Get-UtcText ([datetime]::UtcNow)) }
    return (New-Envelope $ack $Config.device_key)
}

# ---------------------------------------------------------------------------------------------- posture

# Windows PowerShell 5.1 parses agent.json into PSCustomObjects; the section collectors get what the nightly
# module gets from Ansible: hashtables and arrays.
function ConvertTo-Hashtable($Value) {
    if ($Value -is [System.Management.Automation.PSCustomObject]) {
        $table = @{}
        foreach ($p in $Value.PSObject.Properties) { $table[$p.Name] = ConvertTo-Hashtable $p.Value }
        return $table
    }
    if ($Value -is [System.Collections.IEnumerable] -and $Value -isnot [string] -and
        $Value -isnot [System.Collections.IDictionary]) {
        return , @(foreach ($item in $Value) { ConvertTo-Hashtable $item })
    }
    return $Value
}

# The posture the nightly run's deskguard_posture.ps1 collects, by the same code: the role deploys the kit's
# posture module_utils (Ansible.ModuleUtils.DeskguardCollectPosture.psm1 and the section utils) from their one
# source into module_utils\ next to this script; they run with the policy's posture params from agent.json.
# Returns the module's shape, {posture, errors, timings}. Never throws: a check-in still goes out (its age and
# the agent's signature are evidence too), and the controller scores what is missing as `error`.
function Get-Posture($Config) {
    $dir = Join-Path $PSScriptRoot 'module_utils'
    try {
        # As under Ansible (module_wrapper.ps1): the utils imported into the global scope, where the collection
        # finds the section functions by name, and ErrorActionPreference Stop there.
        $global:ErrorActionPreference = 'Stop'
        foreach ($util in @(Get-ChildItem -LiteralPath $dir -Filter '*.psm1' | Sort-Object Name)) {
            Import-Module -Name $util.FullName -Global -Force -DisableNameChecking
        }
        $params = @{}
        if ($Config.PSObject.Properties['posture_params']) { $params = ConvertTo-Hashtable $Config.posture_params }
        $collected = Invoke-DeskguardPostureCollection -Params $params
    } catch {
        $message = [string]$_.Exception.Message
        if ($message.Length -gt 300) { $message = $message.Substring(0, 300) }
        return @{ posture = @{}; errors = @{ collection = ('{0}: {1}' -f $_.Exception.GetType().Name, $message) }
                  timings = @{} }
    }
    # A section whose value cannot be sent as JSON is set aside like a section that failed, not the check-in.
    foreach ($name in @($collected.posture.Keys)) {
        try { [void](ConvertTo-CanonicalJson $collected.posture[$name]) } catch {
            $collected.posture.Remove($name)
            $collected.errors[$name] = 'cannot be sent: {0}' -f $_.Exception.Message
        }
    }
    return $collected
}

# ---------------------------------------------------------------------------------------------- actions

function Invoke-Wipe {
    # MDM_RemoteWipe through the WMI bridge, as SYSTEM. doWipeProtectedMethod: the wipe survives a power loss
    # and cannot be cancelled by the user (it may leave the device unbootable; that is the point here).
    $namespace = 'root\cimv2\mdm\dmmap'
    $session = New-CimSession
    $instance = Get-CimInstance -Namespace $namespace -ClassName 'MDM_RemoteWipe' -Filter "ParentID='./Vendor/MSFT' and InstanceID='RemoteWipe'"
    $params = New-Object Microsoft.Management.Infrastructure.CimMethodParametersCollection
    $params.Add([Microsoft.Management.Infrastructure.CimMethodParameter]::Create('param', '', 'String', 'In'))
    $session.InvokeMethod($namespace, $instance, 'doWipeProtectedMethod', $params) | Out-Null
    return @{ acted = $true; action = 'wipe'; method = 'doWipeProtectedMethod' }
}

function Invoke-Lock {
    # The next boot asks for the BitLocker recovery password, which only the escrow holds.
    $out = & manage-bde.exe -forcerecovery C: 2>&1
    if ($LASTEXITCODE -ne 0) { throw "manage-bde -forcerecovery C: failed: $out" }
    Start-Process -FilePath shutdown.exe -ArgumentList '/r', '/t', '5', '/c', 'deskguard lock' -NoNewWindow
    return @{ acted = $true; action = 'lock'; then = 'reboot' }
}

function Invoke-Order($Payload, [hashtable]$State, $Config) {
    $State.nonces[[string]$Payload.nonce] = [string]$Payload.order_id
    $State.acknowledged.Remove([string]$Payload.nonce)
    Save-State $Config.state_dir $State
    if ($Payload.action -eq 'wipe') { $report = Invoke-Wipe } else { $report = Invoke-Lock }
    $report.order_id = [string]$Payload.order_id
    return $report
}

function Test-UrlAllowed([string]$Url, $Config) {
    # Plain http:// only with allow_http (a lab): the posture and a pending order would travel in clear text.
    if (-not $Url.StartsWith('http://')) { return $true }
    return ($Config.PSObject.Properties['allow_http'] -and $Config.allow_http -eq $true)
}

function New-Nonce {
    $bytes = New-Object byte[] 32
    $rng = [Security.Cryptography.RandomNumberGenerator]::Create()
    try { $rng.GetBytes($bytes) } finally { $rng.Dispose() }
    return (-join ($bytes | ForEach-Object { $_.ToString('x2') }))
}

function Get-OrderBody($Config, [hashtable]$Out) {
    # signed (default): POST a fetch signed with the device key, fresh and usable once; `deskguard serve` gives
    # the order to this laptop only. static: a plain GET from any web server. Returns the body or $null, and
    # sets $Out.order to why there is none (none, unreachable, oversized, plain_http_refused).
    $url = $Config.orders_url.TrimEnd('/') + '/' + $Config.device_uuid
    if (-not (Test-UrlAllowed $url $Config)) { $Out.order = 'plain_http_refused'; return $null }
    $common = @{ Uri = $url; TimeoutSec = [int]$Config.timeout_seconds; UseBasicParsing = $true; MaximumRedirection = 0 }
    try {
        if ($Config.PSObject.Properties['order_fetch'] -and $Config.order_fetch -eq 'static') {
            $resp = Invoke-WebRequest @common
        } else {
            $fetch = @{ v = 1; type = 'fetch'; device_uuid = [string]$Config.device_uuid; nonce = (New-Nonce)
                        sent_at = (Get-UtcText ([datetime]::UtcNow)) }
            $resp = Invoke-WebRequest @common -Method Post -Body $Utf8.GetBytes((New-Envelope $fetch $Config.device_key)) `
                -ContentType 'application/json'
        }
    } catch {
        $response = $null
        if ($_.Exception.PSObject.Properties['Response']) { $response = $_.Exception.Response }
        if ($null -ne $response -and [int]$response.StatusCode -eq 404) { $Out.order = 'none' } else { $Out.order = 'unreachable' }
        return $null
    }
    if ($resp.RawContentLength -gt $OrderLimit) { $Out.order = 'oversized'; return $null }
    return $resp.Content
}

function Send-Json([string]$Url, [string]$Body, $Config) {
    if (-not (Test-UrlAllowed $Url $Config)) { return 0 }
    try {
        $resp = Invoke-WebRequest -Uri $Url -Method Post -Body $Utf8.GetBytes($Body) -ContentType 'application/json' `
            -TimeoutSec ([int]$Config.timeout_seconds) -UseBasicParsing -MaximumRedirection 0
        return [int]$resp.StatusCode
    } catch {
        return 0
    }
}

function Add-Refusal([hashtable]$State, $Payload, [string]$Reason, $Config) {
    $authentic = $null -ne $Payload -and $Payload.device_uuid -eq $Config.device_uuid -and $AckRefusals -contains $Reason
    $orderId = $null
    if ($authentic) {
        $orderId = [string]$Payload.order_id
        if (@('replayed', 'not_yet_valid') -notcontains $Reason) { $State.nonces[[string]$Payload.nonce] = $orderId }
    }
    $State.refusals = @($State.refusals) + @(@{ order_id = $orderId; reason = $Reason; at = (Get-UtcText ([datetime]::UtcNow)) })
    if ($authentic) { return (New-Ack $Payload 'refused' $Reason $Config) }
    return $null
}

# ------------------------------------------------------------------------------------------------- modes

$Config = Get-Content -LiteralPath $ConfigPath -Raw -Encoding UTF8 | ConvertFrom-Json
if ($Mode -eq 'PublicKey') {
    '-----BEGIN PUBLIC KEY-----'
    [Convert]::ToBase64String((Get-DeviceSpki $Config.device_key), 'InsertLineBreaks')
    '-----END PUBLIC KEY-----'
    return
}
$mutex = New-Object Threading.Mutex($false, 'Global\deskguard-agent')
if (-not $mutex.WaitOne(120000)) { throw 'another deskguard-agent run holds the lock for over 120 s' }
try {
    $State = Read-State $Config.state_dir
    if ($Mode -eq 'Ack' -or $Mode -eq 'Execute') {
        if ($Utf8.GetByteCount($Order) -gt $OrderLimit) { $Order = $Order.Substring(0, $OrderLimit + 1) }
        $check = Test-Order $Order $Config $State
        if ($Mode -eq 'Ack') {
            if ($check.Decision -eq 'cancel') {
                $State.cancelled = @($State.cancelled) + @([string]$check.Payload.order_id)
                $out = @{ status = 'cancelled'; order_id = [string]$check.Payload.order_id }
            } elseif ($check.Decision -eq 'accept') {
                $State.acknowledged[[string]$check.Payload.nonce] = [string]$check.Payload.order_id
                $out = @{ status = 'accepted'; order_id = [string]$check.Payload.order_id; action = [string]$check.Payload.action
                          ack = (New-Ack $check.Payload 'accepted' $null $Config) }
            } else {
                $ack = Add-Refusal $State $check.Payload $check.Decision $Config
                $out = @{ status = 'refused'; reason = $check.Decision; ack = $ack }
            }
            Save-State $Config.state_dir $State
        } elseif ($check.Decision -ne 'accept') {
            $out = @{ acted = $false; status = 'refused'; reason = $check.Decision }
        } elseif ($State.acknowledged[[string]$check.Payload.nonce] -ne [string]$check.Payload.order_id) {
            $out = @{ acted = $false; status = 'refused'; reason = 'not_acknowledged' }
        } else {
            $out = Invoke-Order $check.Payload $State $Config
        }
        ConvertTo-CanonicalJson $out
        return
    }

    # Run: one check-in cycle, as the scheduled task does it.
    $out = @{ order = 'none'; acted = $false; checkin = $false }
    $body = Get-OrderBody $Config $out
    if ($null -ne $body) {
        $check = Test-Order ([string]$body) $Config $State
        $out.order = $check.Decision
        if ($check.Decision -eq 'cancel') {
            $State.cancelled = @($State.cancelled) + @([string]$check.Payload.order_id)
        } elseif ($check.Decision -eq 'accept') {
            $status = Send-Json ($Config.server_url.TrimEnd('/') + '/v1/ack') (New-Ack $check.Payload 'accepted' $null $Config) $Config
            # Acted on only after the server accepted the acknowledgement; otherwise retried next run.
            if ($status -ge 200 -and $status -lt 300) {
                $report = Invoke-Order $check.Payload $State $Config
                $out.acted = $true
                ConvertTo-CanonicalJson @{ order = 'accepted'; acted = $true; report = $report }
                return
            }
        } elseif (-not ($check.Decision -eq 'replayed' -and $null -ne $check.Payload -and
                        $State.nonces[[string]$check.Payload.nonce] -eq [string]$check.Payload.order_id)) {
            $ack = Add-Refusal $State $check.Payload $check.Decision $Config
            if ($null -ne $ack) { [void](Send-Json ($Config.server_url.TrimEnd('/') + '/v1/ack') $ack $Config) }
        }
    }
    # The posture the nightly run would collect, so a laptop that is off at night is judged from it.
    $posture = Get-Posture $Config
    $refused = @($State.refusals | Select-Object -Last 50)
    $checkin = @{ v = 1; type = 'checkin'; device_uuid = [string]$Config.device_uuid; sent_at = (Get-UtcText ([datetime]::UtcNow))
                  agent_version = $AgentVersion; posture = $posture; refused = $refused }
    $status = Send-Json ($Config.server_url.TrimEnd('/') + '/v1/checkin') (New-Envelope $checkin $Config.device_key) $Config
    if ($status -ge 200 -and $status -lt 300) {
        $State.last_checkin = Get-UtcText ([datetime]::UtcNow)
        $State.refusals = @()
        $out.checkin = $true
    }
    Save-State $Config.state_dir $State
    ConvertTo-CanonicalJson $out
} finally {
    $mutex.ReleaseMutex()
}
