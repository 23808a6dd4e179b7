# deskguard-agent for Windows: installed by the endpoint_agent role, run as SYSTEM by the scheduled task
# "deskguard-agent" (and by playbooks/wipe.yml with -Mode Ack / -Mode Execute). The same protocol as the Linux
# agent (docs/agent-protocol.md): envelopes of canonical JSON signed with ECDSA P-256 / SHA-256 in IEEE P1363
# form, which is what .NET Framework's ECDsaCng produces and verifies on Windows PowerShell 5.1.
# NOT YET RUN ON A REAL WINDOWS HOST: checked by the syntax gate, golden and structure tests; its C# transport
# ($AgentHttpSource) is compiled and run on Mono by the windows tier, which is not .NET Framework (docs/agent.md).
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
# A run makes at most three requests (the order, one acknowledgement, the check-in); together they get this
# many times timeout_seconds, and each at most timeout_seconds, whatever the server does (as on Linux).
$RunRequests = 3
$script:NetworkLeft = 0.0
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
    foreach ($name in @('deadman_locked_at', 'deadman_refused')) {
        if ($data.PSObject.Properties[$name]) { $state[$name] = ConvertTo-Hashtable $data.$name }
    }
    return $state
}

function Save-State([string]$Dir, [hashtable]$State) {
    $nonces = @{}
    foreach ($n in $State.nonces.Keys) { $nonces[$n] = @{ order_id = $State.nonces[$n] } }
    $doc = @{ v = 1; nonces = $nonces; cancelled = @($State.cancelled); acknowledged = $State.acknowledged
              last_checkin = $State.last_checkin; refusals = @($State.refusals | Select-Object -Last 50) }
    foreach ($name in @('deadman_locked_at', 'deadman_refused')) {
        if ($State.ContainsKey($name) -and $null -ne $State[$name]) { $doc[$name] = $State[$name] }
    }
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

# What the operator's toasts (deskguard-notify.ps1, run as the logged-on user) need from this run: whether a
# restart is pending and since when (the deadline counts from it), as the Linux agent's status.json. The folder
# is the role's operator folder (readable by Users, written by SYSTEM and Administrators only); nothing else of
# the posture goes there. Never fails the run: returns $true or why it could not be written.
function Save-OperatorStatus($Collected, [string]$Dir) {
    try {
        $updates = $Collected.posture['updates']
        $pending = ($null -ne $updates -and [bool]$updates['reboot_pending'])
        $now = [long][DateTimeOffset]::UtcNow.ToUnixTimeSeconds()
        $path = Join-Path $Dir 'status.json'
        $since = $null
        if ($pending) {
            $previous = $null
            try { $previous = [IO.File]::ReadAllText($path, $Utf8) | ConvertFrom-Json } catch { $previous = $null }
            $since = $now
            if ($null -ne $previous -and $previous.reboot_pending -and $previous.reboot_pending_since) {
                $since = [long]$previous.reboot_pending_since
            }
        }
        $data = @{ v = 1; written = $now; reboot_pending = $pending; reboot_pending_since = $since }
        $tmp = Join-Path $Dir ('.status-' + [guid]::NewGuid().ToString('N'))
        [IO.File]::WriteAllText($tmp, (ConvertTo-CanonicalJson $data), $Utf8)
        Move-Item -LiteralPath $tmp -Destination $path -Force
        return $true
    } catch {
        return ('{0}: {1}' -f $_.Exception.GetType().Name, $_.Exception.Message)
    }
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

# ---------------------------------------------------------------------------------------- dead-man switch

# What a dead-man lock keeps must be on the volume: every escrowed recovery protector the role wrote into
# agent.json (escrowed_keyslots, {"C:": ["{GUID}", ...]}). Returns $null when it is, else why not.
function Test-DeadmanKeep($Config) {
    $keep = @{}
    if ($Config.PSObject.Properties['escrowed_keyslots']) { $keep = ConvertTo-Hashtable $Config.escrowed_keyslots }
    if ($null -eq $keep -or $keep.Count -eq 0) { return @{ reason = 'malformed'; detail = 'a lock names no escrowed keyslot to keep' } }
    $local = Get-LocalVolumeIds
    foreach ($volume in @($keep.Keys | Sort-Object)) {
        if ($local -notcontains $volume) { return @{ reason = 'foreign_volumes'; detail = ('volume {0} is not on this laptop' -f $volume) } }
        $present = @((Get-BitLockerVolume -MountPoint $volume).KeyProtector | ForEach-Object { $_.KeyProtectorId })
        $missing = @(@($keep[$volume]) | Where-Object { $present -notcontains $_ })
        if (@($keep[$volume]).Count -eq 0 -or $missing.Count -gt 0) {
            return @{ reason = 'foreign_volumes'
                      detail = ('volume {0} no longer has the escrowed protector(s) {1}: nothing changed' -f $volume, ($missing -join ', ')) }
        }
    }
    return $null
}

# The dead-man switch (off unless deadman_days > 0), as on Linux (docs/agent.md): decided from the state
# file alone, before any request, so a server that stalls (or a thief's) cannot postpone it. After N days
# without a successful check-in (or since the enrolment, when there was none), lock once (never wipe); armed
# again by the next successful check-in. Returns $null (not due) or the report.
function Invoke-Deadman($Config, [hashtable]$State) {
    $days = 0
    if ($Config.PSObject.Properties['deadman_days']) { $days = [int]$Config.deadman_days }
    if ($days -le 0) { return $null }
    $now = [datetime]::UtcNow
    $last = $null
    if ($State.last_checkin) { $last = ConvertFrom-UtcText $State.last_checkin }
    if ($State.ContainsKey('deadman_locked_at') -and $State.deadman_locked_at -and
        ($null -eq $last -or (ConvertFrom-UtcText $State.deadman_locked_at) -ge $last)) { return $null }
    $start = $last
    if ($null -eq $start -and $Config.PSObject.Properties['installed_at'] -and $Config.installed_at) {
        $start = ConvertFrom-UtcText $Config.installed_at
    }
    if ($null -eq $start -or ($now - $start).TotalSeconds -le $days * 86400) { return $null }
    $refusal = Test-DeadmanKeep $Config
    if ($null -ne $refusal) {
        # Not a protocol refusal (there is no order): kept in the state for the AGT-001 facts.
        $State.deadman_refused = @{ reason = $refusal.reason; detail = $refusal.detail; at = (Get-UtcText $now) }
        return @{ acted = $false; refused = $refusal.reason; detail = $refusal.detail }
    }
    $report = Invoke-Lock
    $State.deadman_locked_at = Get-UtcText $now
    Save-State $Config.state_dir $State
    $report.reason = 'no check-in for {0} days' -f $days
    return $report
}

# -------------------------------------------------------------------------------------------------- URLs

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

# --------------------------------------------------------------------------------------------- transport

# The agent's HTTP client, compiled by Add-Type at the first request of a run. C#, not PowerShell: the
# deadline's timer and the certificate check run on other threads, where a script block has no runspace to
# run in; and Invoke-WebRequest -TimeoutSec bounds neither a dribbled body nor the whole exchange
# (docs/agent-protocol.md, "Transport").
$AgentHttpSource = @'
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Net;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Threading;

namespace Deskguard
{
    // The request did not produce a usable answer (unreachable, too slow, refused certificate, too big).
    public class HttpFailure : Exception
    {
        public readonly bool Oversized;
        public HttpFailure(string message, bool oversized) : base(message) { Oversized = oversized; }
    }

    public class HttpAnswer
    {
        public readonly int Status;
        public readonly byte[] Body;
        public HttpAnswer(int status, byte[] body) { Status = status; Body = body; }
    }

    // The server certificate check of one request: with a pinned CA (ca_file) the chain must end at one of its
    // certificates, by thumbprint, whatever the machine's trust store says; without one, the system's checks.
    // The host name must match either way.
    public class ServerCertificateCheck
    {
        readonly X509Certificate2[] pinned;
        readonly string host;
        public string Refusal;

        public ServerCertificateCheck(X509Certificate2[] pinned, string host) { this.pinned = pinned; this.host = host; }

        public bool Validate(object sender, X509Certificate certificate, X509Chain chain, SslPolicyErrors errors)
        {
            if (certificate == null || (errors & SslPolicyErrors.RemoteCertificateNotAvailable) != 0)
            {
                Refusal = "the server sent no certificate";
                return false;
            }
            X509Certificate2 leaf = new X509Certificate2(certificate);
            // The platform's name check and our own (the same rule on every runtime): subjectAltName DNS names
            // (a leading "*." matching one label) and IP addresses; the common name only without that extension.
            if ((errors & SslPolicyErrors.RemoteCertificateNameMismatch) != 0 || !NameMatches(leaf, host))
            {
                Refusal = "it is not valid for " + host;
                return false;
            }
            if (pinned == null || pinned.Length == 0)
            {
                if (errors == SslPolicyErrors.None) return true;
                Refusal = Describe(chain == null ? null : chain.ChainStatus, false);
                return false;
            }
            X509Chain own = new X509Chain();
            try
            {
                own.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                own.ChainPolicy.VerificationFlags = X509VerificationFlags.AllowUnknownCertificateAuthority;
                own.ChainPolicy.ExtraStore.AddRange(pinned);
                if (chain != null)      // the intermediates the server sent
                    foreach (X509ChainElement element in chain.ChainElements) own.ChainPolicy.ExtraStore.Add(element.Certificate);
                own.Build(leaf);
                List<X509ChainStatus> bad = new List<X509ChainStatus>();
                foreach (X509ChainStatus status in own.ChainStatus)
                    if (status.Status != X509ChainStatusFlags.NoError && status.Status != X509ChainStatusFlags.UntrustedRoot)
                        bad.Add(status);
                if (bad.Count > 0)
                {
                    Refusal = Describe(bad.ToArray(), true);
                    return false;
                }
                // The chain must end at a certificate of ca_file itself, not at one of the machine's roots.
                X509Certificate2 root = own.ChainElements[own.ChainElements.Count - 1].Certificate;
                foreach (X509Certificate2 ca in pinned)
                    if (string.Equals(ca.Thumbprint, root.Thumbprint, StringComparison.OrdinalIgnoreCase)) return true;
                Refusal = PinnedOnly;
                return false;
            }
            finally
            {
                own.Reset();
            }
        }

        const string PinnedOnly = "it is not issued by the pinned CA (ca_file)";

        static string Describe(X509ChainStatus[] statuses, bool pinnedCa)
        {
            if (statuses == null || statuses.Length == 0) return "it does not verify";
            foreach (X509ChainStatus status in statuses)
                if ((status.Status & X509ChainStatusFlags.NotTimeValid) != 0) return "certificate has expired or is not yet valid";
            foreach (X509ChainStatus status in statuses)
                if ((status.Status & (X509ChainStatusFlags.UntrustedRoot | X509ChainStatusFlags.PartialChain)) != 0)
                    return pinnedCa ? PinnedOnly : "it is not issued by a CA the machine trusts";
            return statuses[0].Status.ToString() + ": " + statuses[0].StatusInformation.Trim();
        }

        public static bool NameMatches(X509Certificate2 certificate, string host)
        {
            host = host.Trim('[', ']');
            IPAddress address;
            bool isAddress = IPAddress.TryParse(host, out address);
            foreach (X509Extension extension in certificate.Extensions)
            {
                if (extension.Oid == null || extension.Oid.Value != "2.5.29.17") continue;
                byte[] der = extension.RawData;
                int at = 1;
                if (der.Length < 2 || der[0] != 0x30) return false;
                int end = ReadLength(der, ref at);
                end += at;
                while (at < end && at < der.Length)
                {
                    byte tag = der[at++];
                    int length = ReadLength(der, ref at);
                    if (length < 0 || at + length > der.Length) return false;
                    if (tag == 0x82 && !isAddress && DnsMatches(Encoding.ASCII.GetString(der, at, length), host)) return true;
                    if (tag == 0x87 && isAddress)
                    {
                        byte[] want = address.GetAddressBytes();
                        if (want.Length == length)
                        {
                            bool same = true;
                            for (int i = 0; i < length; i++) same &= der[at + i] == want[i];
                            if (same) return true;
                        }
                    }
                    at += length;
                }
                return false;       // a subjectAltName is there: the common name does not count
            }
            return !isAddress && DnsMatches(certificate.GetNameInfo(X509NameType.SimpleName, false), host);
        }

        static int ReadLength(byte[] der, ref int at)
        {
            if (at >= der.Length) return -1;
            int first = der[at++];
            if (first < 0x80) return first;
            int count = first & 0x7f, length = 0;
            if (count > 3 || at + count > der.Length) return -1;
            for (int i = 0; i < count; i++) length = (length << 8) | der[at++];
            return length;
        }

        static bool DnsMatches(string name, string host)
        {
            if (string.IsNullOrEmpty(name) || string.IsNullOrEmpty(host)) return false;
            if (string.Equals(name, host, StringComparison.OrdinalIgnoreCase)) return true;
            if (!name.StartsWith("*.", StringComparison.Ordinal)) return false;
            int dot = host.IndexOf('.');
            return dot > 0 && string.Equals(name.Substring(2), host.Substring(dot + 1), StringComparison.OrdinalIgnoreCase);
        }
    }

    public static class AgentHttp
    {
        public const string UserAgent = "deskguard-agent/1";
        const int Piece = 16384;

        // The certificates of a PEM bundle (the site's ca_file), each decoded from its own block.
        public static X509Certificate2[] ReadCaFile(string path)
        {
            string text = File.ReadAllText(path);
            List<X509Certificate2> found = new List<X509Certificate2>();
            const string begin = "-----BEGIN CERTIFICATE-----", end = "-----END CERTIFICATE-----";
            int at = text.IndexOf(begin, StringComparison.Ordinal);
            while (at >= 0)
            {
                int stop = text.IndexOf(end, at, StringComparison.Ordinal);
                if (stop < 0) break;
                string body = text.Substring(at + begin.Length, stop - at - begin.Length);
                found.Add(new X509Certificate2(Convert.FromBase64String(body.Trim())));
                at = text.IndexOf(begin, stop, StringComparison.Ordinal);
            }
            if (found.Count == 0) throw new InvalidDataException(path + " holds no PEM certificate");
            return found.ToArray();
        }

        // One request within timeoutSeconds in all: connect, TLS, sending, the answer's head and its body. A
        // timer aborts the request at the deadline (HttpWebRequest.Abort ends a pending connect, handshake,
        // GetResponse or Read at once); Timeout and ReadWriteTimeout are set to the same figure, and the clock
        // is checked between reads of at most 16 KiB, so a server dribbling a byte at a time is cut off too.
        // The body is read to at most limit bytes. Non-2xx answers are answers; only transport failures throw.
        public static HttpAnswer Send(string method, string url, byte[] body, double timeoutSeconds, int limit,
                                      string caFile)
        {
            string what = method + " " + url;
            if (timeoutSeconds <= 0) throw new HttpFailure(what + ": not sent, no time left", false);
            Uri uri;
            if (!Uri.TryCreate(url, UriKind.Absolute, out uri) || (uri.Scheme != "https" && uri.Scheme != "http"))
                throw new HttpFailure("unsupported URL '" + url + "' (https:// or http://)", false);
            X509Certificate2[] pinned = null;
            if (!string.IsNullOrEmpty(caFile) && uri.Scheme == "https")
            {
                try
                {
                    pinned = ReadCaFile(caFile);
                }
                catch (Exception exc)
                {
                    throw new HttpFailure(what + ": cannot read the pinned CA (ca_file) " + caFile + ": " + Innermost(exc), false);
                }
            }
            int ms = (int)Math.Ceiling(timeoutSeconds * 1000);
            RequireTls12();
            Stopwatch clock = Stopwatch.StartNew();
            HttpWebRequest request = (HttpWebRequest)WebRequest.Create(uri);
            request.Method = method;
            request.AllowAutoRedirect = false;
            request.KeepAlive = false;
            request.UserAgent = UserAgent;
            request.Accept = "application/json";
            request.Timeout = ms;
            request.ReadWriteTimeout = ms;
            ServerCertificateCheck check = new ServerCertificateCheck(pinned, uri.Host);
            request.ServerCertificateValidationCallback = check.Validate;   // this request only
            bool[] late = new bool[1];
            Timer watchdog = new Timer(delegate { late[0] = true; request.Abort(); }, null, ms, Timeout.Infinite);
            try
            {
                if (body != null)
                {
                    request.ContentType = "application/json";
                    request.ContentLength = body.Length;
                    using (Stream up = request.GetRequestStream()) up.Write(body, 0, body.Length);
                }
                HttpWebResponse response;
                try
                {
                    response = (HttpWebResponse)request.GetResponse();
                }
                catch (WebException exc)
                {
                    if (exc.Response == null || late[0]) throw;
                    response = (HttpWebResponse)exc.Response;       // 4xx/5xx: an answer
                }
                using (response)
                using (Stream down = response.GetResponseStream())
                    return new HttpAnswer((int)response.StatusCode, ReadBounded(down, limit, clock, ms, late));
            }
            catch (HttpFailure)
            {
                throw;
            }
            catch (Exception exc)
            {
                if (late[0] || clock.ElapsedMilliseconds >= ms)
                    throw new HttpFailure(what + ": the server is too slow (its deadline, " +
                                          timeoutSeconds.ToString("0.0", System.Globalization.CultureInfo.InvariantCulture) +
                                          " s, passed)", false);
                if (check.Refusal != null)
                    throw new HttpFailure(what + ": the server's TLS certificate is refused: " + check.Refusal, false);
                throw new HttpFailure(what + ": " + Innermost(exc), false);
            }
            finally
            {
                watchdog.Dispose();
                clock.Stop();
            }
        }

        // TLS 1.2, and 1.3 where Schannel has it (Windows 11 / Server 2022, build 20348 on): never SSL 3, TLS 1.0
        // or 1.1. Process-wide in .NET Framework (there is no per-request setting); the agent is its own process.
        public static void RequireTls12()
        {
            SecurityProtocolType tls = SecurityProtocolType.Tls12;
            if (Enum.IsDefined(typeof(SecurityProtocolType), 12288) && Environment.OSVersion.Platform == PlatformID.Win32NT
                && Environment.OSVersion.Version.Build >= 20348)
                tls |= (SecurityProtocolType)12288;     // Tls13 (.NET Framework 4.8)
            ServicePointManager.SecurityProtocol = tls;
        }

        static byte[] ReadBounded(Stream stream, int limit, Stopwatch clock, int ms, bool[] late)
        {
            MemoryStream got = new MemoryStream();
            byte[] piece = new byte[Piece];
            while (true)
            {
                if (late[0] || clock.ElapsedMilliseconds >= ms) throw new TimeoutException();
                int n = stream.Read(piece, 0, (int)Math.Min(Piece, limit + 1 - got.Length));
                if (late[0]) throw new TimeoutException();    // aborted: what was read is not the whole body
                if (n <= 0) return got.ToArray();
                got.Write(piece, 0, n);
                if (got.Length > limit) throw new HttpFailure("answer larger than " + limit + " bytes", true);
            }
        }

        static string Innermost(Exception exc)
        {
            while (exc.InnerException != null) exc = exc.InnerException;
            return exc.Message;
        }
    }
}

'@

function Initialize-AgentHttp {
    if (-not ('Deskguard.AgentHttp' -as [type])) { Add-Type -TypeDefinition $AgentHttpSource -Language CSharp }
}

function Get-CaFile($Config) {
    if ($Config.PSObject.Properties['ca_file'] -and $Config.ca_file) { return [string]$Config.ca_file }
    return ''
}

function Write-AgentLog([string]$Message) {
    [Console]::Error.WriteLine('deskguard-agent: ' + $Message)
}

# One request, given the smaller of timeout_seconds and what is left of the run's network time
# ($RunRequests x timeout_seconds, as on Linux). Returns a Deskguard.HttpAnswer (non-2xx included); throws a
# Deskguard.HttpFailure for no usable answer. The URL is checked before anything is sent.
function Invoke-AgentRequest([string]$Method, [string]$Url, $Body, [int]$Limit, $Config) {
    if (-not (Test-UrlAllowed $Url $Config)) {
        throw (New-Object Deskguard.HttpFailure(('{0} is plain HTTP, refused (https:// only; allow_http is for a lab)' -f $Url), $false))
    }
    $timeout = [Math]::Min([double]$Config.timeout_seconds, $script:NetworkLeft)
    $clock = [Diagnostics.Stopwatch]::StartNew()
    try {
        return [Deskguard.AgentHttp]::Send($Method, $Url, $Body, $timeout, $Limit, (Get-CaFile $Config))
    } finally {
        $script:NetworkLeft -= $clock.Elapsed.TotalSeconds
    }
}

# The HttpFailure inside an error record (PowerShell wraps what a .NET method throws), or $null.
function Get-HttpFailure($ErrorRecord) {
    $exc = $ErrorRecord.Exception
    while ($null -ne $exc -and $exc -isnot [Deskguard.HttpFailure]) { $exc = $exc.InnerException }
    return $exc
}

function Get-FailureText($ErrorRecord) {
    $failure = Get-HttpFailure $ErrorRecord
    if ($null -ne $failure) { return $failure.Message }
    return ('{0}: {1}' -f $ErrorRecord.Exception.GetType().Name, $ErrorRecord.Exception.Message)
}

function Get-AnswerError($Answer) {
    # "HTTP 401 signed_fetch_required": the status and the server's error word, at most 60 characters of it.
    $text = 'HTTP {0}' -f $Answer.Status
    try { $doc = $Utf8.GetString($Answer.Body) | ConvertFrom-Json } catch { return $text }
    if ($doc -is [System.Management.Automation.PSCustomObject] -and $doc.PSObject.Properties['error'] -and $doc.error) {
        $word = [string]$doc.error
        if ($word.Length -gt 60) { $word = $word.Substring(0, 60) }
        $text = $text + ' ' + $word
    }
    return $text
}

function Get-OrderBody($Config, [hashtable]$State, [hashtable]$Out) {
    # signed (default): POST a fetch signed with the device key, fresh and usable once; `deskguard serve` gives
    # the order to this laptop only. static: a plain GET from any web server. Returns the body or $null, and
    # sets $Out.order to why there is none (none, unreachable with $Out.order_detail, oversized).
    $url = $Config.orders_url.TrimEnd('/') + '/' + $Config.device_uuid
    $body = $null
    $method = 'GET'
    if (-not ($Config.PSObject.Properties['order_fetch'] -and $Config.order_fetch -eq 'static')) {
        $fetch = @{ v = 1; type = 'fetch'; device_uuid = [string]$Config.device_uuid; nonce = (New-Nonce)
                    sent_at = (Get-UtcText ([datetime]::UtcNow)) }
        $body = $Utf8.GetBytes((New-Envelope $fetch $Config.device_key))
        $method = 'POST'
    }
    try {
        $answer = Invoke-AgentRequest $method $url $body $OrderLimit $Config
    } catch {
        $failure = Get-HttpFailure $_
        if ($null -ne $failure -and $failure.Oversized) {
            [void](Add-Refusal $State $null 'oversized' $Config)
            $Out.order = 'oversized'
        } else {
            $Out.order = 'unreachable'
            $Out.order_detail = Get-FailureText $_
        }
        return $null
    }
    if ($answer.Status -eq 404) { $Out.order = 'none'; return $null }
    if ($answer.Status -lt 200 -or $answer.Status -ge 300) {
        $Out.order = 'unreachable'
        $Out.order_detail = Get-AnswerError $answer
        return $null
    }
    return $Utf8.GetString($answer.Body)
}

# POST an envelope to {server_url}{Path}. The answer, or $null when there was none: then why is logged and
# kept in $Out.failure (as the Linux agent does).
function Send-Envelope([string]$Path, [string]$Envelope, $Config, [hashtable]$Out) {
    $url = $Config.server_url.TrimEnd('/') + $Path
    try {
        return (Invoke-AgentRequest 'POST' $url $Utf8.GetBytes($Envelope) $AnswerLimit $Config)
    } catch {
        $message = Get-FailureText $_
        Write-AgentLog $message
        $Out.failure = 'unreachable: ' + $message
        return $null
    }
}

function Test-Answered($Answer) { return ($null -ne $Answer -and $Answer.Status -ge 200 -and $Answer.Status -lt 300) }

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
    # The dead-man switch first, from the state alone: no request is made before it is decided.
    $deadman = Invoke-Deadman $Config $State
    if ($null -ne $deadman) {
        $out.deadman = $deadman
        if ($deadman.acted) {
            Save-State $Config.state_dir $State
            ConvertTo-CanonicalJson $out
            return
        }
    }
    Initialize-AgentHttp
    $script:NetworkLeft = $RunRequests * [double]$Config.timeout_seconds
    $body = Get-OrderBody $Config $State $out
    if ($null -ne $body) {
        $check = Test-Order ([string]$body) $Config $State
        $out.order = $check.Decision
        if ($check.Decision -eq 'cancel') {
            $State.cancelled = @($State.cancelled) + @([string]$check.Payload.order_id)
        } elseif ($check.Decision -eq 'accept') {
            $answer = Send-Envelope '/v1/ack' (New-Ack $check.Payload 'accepted' $null $Config) $Config $out
            # Acted on only after the server accepted the acknowledgement; otherwise retried next run.
            if (Test-Answered $answer) {
                $report = Invoke-Order $check.Payload $State $Config
                $out.acted = $true
                ConvertTo-CanonicalJson @{ order = 'accepted'; acted = $true; report = $report }
                return
            }
            if ($null -ne $answer) { $out.failure = 'acknowledgement not accepted (HTTP {0})' -f $answer.Status }
        } elseif (-not ($check.Decision -eq 'replayed' -and $null -ne $check.Payload -and
                        $State.nonces[[string]$check.Payload.nonce] -eq [string]$check.Payload.order_id)) {
            $ack = Add-Refusal $State $check.Payload $check.Decision $Config
            if ($null -ne $ack) { [void](Send-Envelope '/v1/ack' $ack $Config $out) }
        }
    }
    # The posture the nightly run would collect, so a laptop that is off at night is judged from it.
    $posture = Get-Posture $Config
    # The role's operator folder beside the agent's (C:\ProgramData\deskguard\operator): only where it is installed.
    $operatorDir = Join-Path (Split-Path -Parent $PSScriptRoot) 'operator'
    if (Test-Path -LiteralPath $operatorDir) { $out.operator_status = Save-OperatorStatus $posture $operatorDir }
    $refused = @($State.refusals | Select-Object -Last 50)
    $checkin = @{ v = 1; type = 'checkin'; device_uuid = [string]$Config.device_uuid; sent_at = (Get-UtcText ([datetime]::UtcNow))
                  agent_version = $AgentVersion; posture = $posture; refused = $refused }
    $answer = Send-Envelope '/v1/checkin' (New-Envelope $checkin $Config.device_key) $Config $out
    if (Test-Answered $answer) {
        $State.last_checkin = Get-UtcText ([datetime]::UtcNow)
        $State.refusals = @()
        $out.checkin = $true
    } elseif ($null -ne $answer) {
        $out.checkin_detail = 'HTTP {0}' -f $answer.Status
    } else {
        $out.checkin_detail = $out.failure
    }
    Save-State $Config.state_dir $State
    ConvertTo-CanonicalJson $out
} finally {
    $mutex.ReleaseMutex()
}
