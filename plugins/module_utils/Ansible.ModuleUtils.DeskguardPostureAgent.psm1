# deskguard posture section `agent` on Windows (AGT-001), read-only: the PowerShell agent the endpoint_agent
# role installs, its scheduled task "deskguard-agent" (state, last run and its result), its CNG machine key
# and its last successful check-in (state.json). Keys as on Linux (timer_* = the scheduled task), so
# AGT-001 is judged by the same code. Not yet verified on a real Windows host.
# Copyright: deskguard contributors; Apache-2.0

Function Get-DeskguardPostureAgent {
    param($Params)
    $dir = 'C:\ProgramData\deskguard\agent'
    if ($Params -and $Params.dir) { $dir = [string]$Params.dir }
    $cfgPath = Join-Path $dir 'agent.json'
    $facts = @{ installed = $false; timer_enabled = $false; timer_active = $false; device_key_present = $false
        last_checkin = $null; last_checkin_age_seconds = $null; pending_refusals = 0; deadman_days = 0
        scheduler = 'scheduled task deskguard-agent'; task = $null; last_run_result = $null }
    $cfg = $null
    if (Test-Path -LiteralPath $cfgPath) {
        try { $cfg = [System.IO.File]::ReadAllText($cfgPath) | ConvertFrom-Json } catch { $cfg = $null }
    }
    $facts.installed = $null -ne $cfg -and (Test-Path -LiteralPath (Join-Path $dir 'deskguard-agent.ps1'))
    if (-not $facts.installed) { return $facts }
    $task = Get-ScheduledTask -TaskName 'deskguard-agent' -ErrorAction SilentlyContinue
    if ($task) {
        $info = Get-ScheduledTaskInfo -InputObject $task -ErrorAction SilentlyContinue
        $state = [string]$task.State
        $facts.timer_enabled = $state -ne 'Disabled'
        $facts.timer_active = $state -in @('Ready', 'Running') -and $info -and $null -ne $info.NextRunTime
        # LastTaskResult 0 = success; 267011 (0x41303) = has not run yet.
        $facts.last_run_result = if ($info) { [long]$info.LastTaskResult } else { $null }
        $facts.task = @{ state = $state
            last_run_time = if ($info -and $info.LastRunTime) { $info.LastRunTime.ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ') } else { $null }
            next_run_time = if ($info -and $info.NextRunTime) { $info.NextRunTime.ToUniversalTime().ToString('yyyy-MM-ddTHH:mm:ssZ') } else { $null } }
    }
    if ($cfg.device_key) {
        $provider = [Security.Cryptography.CngProvider]::MicrosoftSoftwareKeyStorageProvider
        $facts.device_key_present = [Security.Cryptography.CngKey]::Exists([string]$cfg.device_key, $provider,
            [Security.Cryptography.CngKeyOpenOptions]::MachineKey)
    }
    if ($cfg.deadman_days) { $facts.deadman_days = [int]$cfg.deadman_days }
    $stateDir = if ($cfg.state_dir) { [string]$cfg.state_dir } else { $dir }
    $statePath = Join-Path $stateDir 'state.json'
    if (Test-Path -LiteralPath $statePath) {
        $state = [System.IO.File]::ReadAllText($statePath) | ConvertFrom-Json
        $facts.pending_refusals = @($state.refusals | Where-Object { $null -ne $_ }).Count
        if ($state.last_checkin) {
            $seen = [datetime]::ParseExact([string]$state.last_checkin, "yyyy-MM-dd'T'HH:mm:ss'Z'",
                [Globalization.CultureInfo]::InvariantCulture, [Globalization.DateTimeStyles]'AssumeUniversal,AdjustToUniversal')
            $facts.last_checkin = [string]$state.last_checkin
            $facts.last_checkin_age_seconds = [Math]::Max(0, [int]([datetime]::UtcNow - $seen).TotalSeconds)
        }
    }
    $facts
}

Export-ModuleMember -Function Get-DeskguardPostureAgent
