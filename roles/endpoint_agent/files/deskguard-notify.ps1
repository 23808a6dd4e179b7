# deskguard-notify for Windows: the operator's restart reminders as toasts, in the operator's own session.
# Installed by the endpoint_agent role with the scheduled task "deskguard-notify", which runs it at each logon
# as the user who logs on (group principal BUILTIN\Users, interactive: never as SYSTEM, which has no desktop
# to show a toast on). The twin of plugins/module_utils/deskguard_operator_notify.py: the same policy
# (operator.json: quiet hours, one per kind per N hours, the restart deadline), the same words (operator-
# catalog.json, generated from the catalogs; tests/windows/test_notify_windows.py keeps the two in step), and
# what the agent (SYSTEM) saw after its last run (status.json, written by deskguard-agent.ps1). Every toast is
# also written to the Application event log (source deskguard-agent). Not yet verified on a real Windows host.
param([switch]$Once)

$ErrorActionPreference = 'Stop'
$Here = $PSScriptRoot
$CheckEverySeconds = 300
# A toast needs an application identity (AUMID); an unpackaged script registers its own for the user.
$AppId = 'deskguard.notify'
$Defaults = @{ language = ''; quiet_hours = '20:00-08:00'; notify_every_hours = 4; reboot_deadline_hours = 72 }
# The English source messages, exactly as in deskguard_operator_notify.py (the catalog's keys).
$RebootSummary = 'Please restart the laptop.'
$RebootBody = 'A security update needs a restart. Please restart by %(deadline)s, when you are not on a call.'
$RebootOverdue = 'A security update has been waiting for a restart since %(deadline)s. Please restart now if you are not on a call.'
$Utf8 = New-Object System.Text.UTF8Encoding($false)

function Read-JsonFile([string]$Path) {
    try { return ([IO.File]::ReadAllText($Path, $Utf8) | ConvertFrom-Json) } catch { return $null }
}

function Get-NotifySettings {
    $cfg = $Defaults.Clone()
    $read = Read-JsonFile (Join-Path $Here 'operator.json')
    if ($null -ne $read) {
        foreach ($key in @($Defaults.Keys)) {
            if ($read.PSObject.Properties[$key]) { $cfg[$key] = $read.$key }
        }
    }
    return $cfg
}

# The policy's forced language if it is one of ours, else the user's display language (what their Windows
# reads in), else English: the Windows counterpart of the session locale on Linux.
function Get-OperatorLanguage([string]$Forced) {
    if ($Forced -eq 'en' -or $Forced -eq 'ja') { return $Forced }
    if ((Get-UICulture).TwoLetterISOLanguageName -eq 'ja') { return 'ja' }
    return 'en'
}

function Get-OperatorText($Catalog, [string]$Language, [string]$Message, [hashtable]$Params) {
    $text = $null
    if ($null -ne $Catalog -and $Catalog.PSObject.Properties[$Language]) {
        $entry = $Catalog.$Language.PSObject.Properties[$Message]
        if ($null -ne $entry) { $text = [string]$entry.Value }
    }
    if (-not $text) { $text = $Message }   # never shipped untranslated (the catalogs' check); English rather than nothing
    foreach ($name in @($Params.Keys)) { $text = $text.Replace('%(' + $name + ')s', [string]$Params[$name]) }
    return $text
}

function Test-QuietTime([string]$QuietHours, [datetime]$Local) {
    if (-not $QuietHours) { return $false }
    $parts = $QuietHours -split '-'
    if ($parts.Count -ne 2) { return $false }
    try {
        $start, $end = foreach ($part in $parts) { $hm = $part -split ':'; [int]$hm[0] * 60 + [int]$hm[1] }
    } catch { return $false }
    $minute = $Local.Hour * 60 + $Local.Minute
    if ($start -le $end) { return ($start -le $minute -and $minute -lt $end) }
    return ($minute -ge $start -or $minute -lt $end)
}

# What to show now: at most one per kind, none in quiet hours, none of a kind shown less than N hours ago.
function Get-DueToast($Status, [hashtable]$Cfg, $Memory, [double]$Now) {
    if (Test-QuietTime ([string]$Cfg.quiet_hours) ([DateTimeOffset]::FromUnixTimeSeconds([long]$Now).LocalDateTime)) { return @() }
    $every = [double]$Cfg.notify_every_hours * 3600
    $out = @()
    if ($null -ne $Status -and $Status.reboot_pending -and $Status.reboot_pending_since) {
        $deadline = [double]$Status.reboot_pending_since + [double]$Cfg.reboot_deadline_hours * 3600
        $shown = [DateTimeOffset]::FromUnixTimeSeconds([long]$deadline).LocalDateTime.ToString('yyyy-MM-dd HH:mm')
        $body = if ($Now -ge $deadline) { $RebootOverdue } else { $RebootBody }
        $urgency = if ($deadline - $Now -le $every) { 'critical' } else { 'normal' }
        $out += , @{ kind = 'reboot'; summary = $RebootSummary; body = $body; params = @{ deadline = $shown }; urgency = $urgency }
    }
    return @($out | Where-Object {
        $last = 0
        if ($null -ne $Memory -and $Memory.PSObject.Properties[$_.kind]) { $last = [double]$Memory.($_.kind) }
        $Now - $last -ge $every
    })
}

function Register-ToastIdentity {
    $key = 'HKCU:\Software\Classes\AppUserModelId\' + $AppId
    if (-not (Test-Path -LiteralPath $key)) { New-Item -Path $key -Force | Out-Null }
    Set-ItemProperty -LiteralPath $key -Name DisplayName -Value 'deskguard'
    Set-ItemProperty -LiteralPath $key -Name ShowInSettings -Value 1 -Type DWord
}

# The toast's XML: title and text (escaped: the text is ours, the deadline a date, but XML is XML). An urgent
# one (the last N hours before the deadline, or past it) stays on screen until the operator closes it.
function New-ToastXml([string]$Title, [string]$Body, [string]$Urgency) {
    $duration = if ($Urgency -eq 'critical') { 'long' } else { 'short' }
    return ('<toast duration="{0}"><visual><binding template="ToastGeneric"><text>{1}</text><text>{2}</text>' +
            '</binding></visual><audio silent="false"/></toast>') -f $duration,
        [Security.SecurityElement]::Escape($Title), [Security.SecurityElement]::Escape($Body)
}

function Show-Toast([string]$Title, [string]$Body, [string]$Urgency) {
    [void][Windows.UI.Notifications.ToastNotificationManager, Windows.UI.Notifications, ContentType = WindowsRuntime]
    [void][Windows.Data.Xml.Dom.XmlDocument, Windows.Data.Xml.Dom.XmlDocument, ContentType = WindowsRuntime]
    $xml = New-Object Windows.Data.Xml.Dom.XmlDocument
    $xml.LoadXml((New-ToastXml $Title $Body $Urgency))
    $toast = New-Object Windows.UI.Notifications.ToastNotification($xml)
    [Windows.UI.Notifications.ToastNotificationManager]::CreateToastNotifier($AppId).Show($toast)
}

function Write-NotifyLog([string]$Line) {
    try { Write-EventLog -LogName Application -Source 'deskguard-agent' -EventId 3001 -EntryType Information -Message $Line }
    catch { [Console]::Error.WriteLine('deskguard-notify: ' + $Line) }
}

function Invoke-NotifyCheck {
    $now = [double][DateTimeOffset]::UtcNow.ToUnixTimeSeconds()
    $cfg = Get-NotifySettings
    $language = Get-OperatorLanguage ([string]$cfg.language)
    $catalog = Read-JsonFile (Join-Path $Here 'operator-catalog.json')
    $status = Read-JsonFile (Join-Path $Here 'status.json')
    $memoryDir = Join-Path $env:LOCALAPPDATA 'deskguard'
    $memoryPath = Join-Path $memoryDir 'notify.json'
    $memory = Read-JsonFile $memoryPath
    $remember = @{}
    if ($null -ne $memory) { foreach ($p in $memory.PSObject.Properties) { $remember[$p.Name] = $p.Value } }
    foreach ($due in @(Get-DueToast $status $cfg $memory $now)) {
        $title = Get-OperatorText $catalog $language $due.summary @{}
        $text = Get-OperatorText $catalog $language $due.body $due.params
        Show-Toast $title $text $due.urgency
        Write-NotifyLog ('notified {0} ({1}, {2}): {3} {4}' -f $env:USERNAME, $due.kind, $language, $title, $text)
        $remember[$due.kind] = $now
        if (-not (Test-Path -LiteralPath $memoryDir)) { New-Item -ItemType Directory -Path $memoryDir -Force | Out-Null }
        [IO.File]::WriteAllText($memoryPath, ($remember | ConvertTo-Json -Compress), $Utf8)
    }
}

Register-ToastIdentity
while ($true) {
    try { Invoke-NotifyCheck } catch { [Console]::Error.WriteLine('deskguard-notify: ' + $_.Exception.Message) }
    if ($Once) { break }
    Start-Sleep -Seconds $CheckEverySeconds
}
