# deskguard: the Windows posture as one value, {posture, errors, timings}, from the section module_utils
# (Ansible.ModuleUtils.DeskguardPosture<Section>.psm1, each exporting Get-DeskguardPosture<Section>). Two
# callers, one collection: the nightly run's module (plugins/modules_windows/deskguard_posture.ps1, where
# Ansible bundles the section utils its #Requires lines name) and the check-in agent (roles/endpoint_agent's
# deskguard-agent.ps1, which imports the same files the role deploys next to it). The section functions are
# looked up when called, so they only have to be imported into the session, in any order. The Windows twin
# of deskguard_posture.collect() in plugins/module_utils/deskguard_posture.py. Read-only.
# Not yet verified on a real Windows host (docs/windows.md, docs/agent.md).
# Copyright: deskguard contributors; Apache-2.0

# Section name (as on Linux) -> the function that reads it; `os` first, it is what the judges branch on.
# Adding a section: its util, this entry, and its #Requires line in deskguard_posture.ps1 (a test keeps the
# three in step, and another that the agent deploys every util named here).
$script:DeskguardPostureCollectors = [ordered]@{
    os = 'Get-DeskguardPostureOs'
    disk = 'Get-DeskguardPostureDisk'
    screen_lock = 'Get-DeskguardPostureScreenLock'
    firewall = 'Get-DeskguardPostureFirewall'
    updates = 'Get-DeskguardPostureUpdates'
    usb = 'Get-DeskguardPostureUsb'
    vpn = 'Get-DeskguardPostureVpn'
    agent = 'Get-DeskguardPostureAgent'
    network = 'Get-DeskguardPostureNetwork'
    software = 'Get-DeskguardPostureSoftware'
    av = 'Get-DeskguardPostureAv'
    accounts = 'Get-DeskguardPostureAccounts'
}

Function Get-DeskguardPostureSectionName {
    # The known sections, in collection order.
    @($script:DeskguardPostureCollectors.Keys)
}

Function Invoke-DeskguardPostureCollection {
    # -Sections: the sections to read (all when empty); an unknown name is an ArgumentException before any is
    # read. -Params: {section: its params} as the controller builds them (deskguard.compliance.policy.
    # posture_params); a section without an entry gets an empty table, as on Linux.
    param([string[]]$Sections, $Params)
    $known = @($script:DeskguardPostureCollectors.Keys)
    $wanted = $known
    if ($Sections) { $wanted = @($Sections) }
    $unknown = @($wanted | Where-Object { $known -notcontains $_ } | Sort-Object)
    if ($unknown.Count -gt 0) {
        throw [System.ArgumentException]::new("unknown posture sections: $($unknown -join ', ') (known: $($known -join ', '))")
    }
    $posture = @{}
    $errors = @{}
    $timings = @{}
    foreach ($name in $wanted) {
        $watch = [System.Diagnostics.Stopwatch]::StartNew()
        $sectionParams = @{}
        if ($Params -is [System.Collections.IDictionary] -and $Params.ContainsKey($name) -and $null -ne $Params[$name]) {
            $sectionParams = $Params[$name]
        }
        try {
            # One broken section must not hide the others: it goes to `errors`, the controller scores its
            # controls as `error`, never as passed.
            $posture[$name] = & $script:DeskguardPostureCollectors[$name] -Params $sectionParams
        }
        catch {
            $message = [string]$_.Exception.Message
            if ($message.Length -gt 300) { $message = $message.Substring(0, 300) }
            $errors[$name] = '{0}: {1}' -f $_.Exception.GetType().Name, $message
        }
        $timings[$name] = [Math]::Round($watch.Elapsed.TotalSeconds, 3)
    }
    @{ posture = $posture; errors = $errors; timings = $timings }
}

Export-ModuleMember -Function Get-DeskguardPostureSectionName, Invoke-DeskguardPostureCollection
