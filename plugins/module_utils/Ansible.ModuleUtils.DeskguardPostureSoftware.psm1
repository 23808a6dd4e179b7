# SW-001 and SW-003 on Windows for the nightly posture, read-only. Keys match the Linux `software` section where
# they mean the same (denied_installed, browsers). $Params: denied_windows_software (list of {name, product_code}),
# browser_values (the registry values the role writes: list of {key, name, data}). Not yet run on Windows.

Function Get-DeskguardInstalledProgram {
    $roots = @('HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall',
               'HKLM:\SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall')
    foreach ($r in $roots) {
        if (Test-Path -LiteralPath $r) {
            Get-ChildItem -LiteralPath $r | ForEach-Object {
                $name = (Get-ItemProperty -LiteralPath $_.PSPath).DisplayName
                if ($name) { [pscustomobject]@{ Code = $_.PSChildName; Name = $name } }
            }
        }
    }
}

Function Get-DeskguardPostureSoftware {
    [CmdletBinding()]
    param($Params)
    $programs = @(Get-DeskguardInstalledProgram)
    $denied = @()
    foreach ($d in @($Params.denied_windows_software)) {
        if (-not $d) { continue }
        $denied += @($programs | Where-Object { $_.Name -like $d.name } | ForEach-Object { $_.Name })
    }
    $drift = @()
    foreach ($v in @($Params.browser_values)) {
        if (-not $v) { continue }
        $current = $null
        if (Test-Path -LiteralPath $v.key) {
            $current = (Get-ItemProperty -LiteralPath $v.key -Name $v.name -ErrorAction SilentlyContinue).($v.name)
        }
        if ($null -eq $current -or "$current" -ne "$($v.data)") { $drift += "$($v.key)\$($v.name)" }
    }
    @{
        family = 'Windows'
        denied_installed = @($denied | Sort-Object -Unique)
        browsers = @{ registry = @{ checked = @($Params.browser_values).Count; differs = @($drift) } }
    }
}

Export-ModuleMember -Function Get-DeskguardPostureSoftware
