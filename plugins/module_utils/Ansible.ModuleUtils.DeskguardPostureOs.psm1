# deskguard posture section `os` on Windows: edition, build and uptime (read-only). The `family` key is what
# the controller's judges branch on (cli/deskguard/compliance/windows.py). Not yet verified on a real
# Windows host (docs/windows.md).
# Copyright: deskguard contributors; Apache-2.0

Function Get-DeskguardPostureOs {
    param($Params)
    $cv = Get-ItemProperty -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion' -ErrorAction Stop
    $os = Get-CimInstance -ClassName Win32_OperatingSystem -ErrorAction Stop
    $editionId = [string]$cv.EditionID
    # Caption rather than ProductName: Windows 11 still reports "Windows 10 ..." as ProductName.
    @{
        family = 'Windows'
        id = 'windows'
        edition = [string]$os.Caption
        edition_id = $editionId
        home_edition = $editionId.StartsWith('Core')
        display_version = [string]$cv.DisplayVersion
        build = [string]$cv.CurrentBuildNumber
        version_id = '{0}.{1}' -f $cv.CurrentBuildNumber, $cv.UBR
        kernel = [string]$os.Version
        uptime_seconds = [int]((Get-Date) - $os.LastBootUpTime).TotalSeconds
    }
}

Export-ModuleMember -Function Get-DeskguardPostureOs
