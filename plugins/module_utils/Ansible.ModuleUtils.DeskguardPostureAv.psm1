# AV-001 on Windows for the nightly posture: Microsoft Defender's state from Get-MpComputerStatus, read-only.
# Keys match the Linux `av` section where they mean the same (engine, installed, signature_age_days); the
# controller's judge (cli/deskguard/compliance/software.py) reads both. Not yet run on a real Windows host.

Function Get-DeskguardPostureAv {
    [CmdletBinding()]
    param($Params)
    $section = @{ engine = 'defender'; installed = $false }
    try {
        $status = Get-MpComputerStatus -ErrorAction Stop
    } catch {
        # No Defender module or service (another AV product took over, or Defender was removed).
        $section.error = "Get-MpComputerStatus failed: $($_.Exception.Message)"
        return $section
    }
    $section.installed = $true
    $section.realtime_protection = [bool]$status.RealTimeProtectionEnabled
    $section.antivirus_enabled = [bool]$status.AntivirusEnabled
    $section.am_service_enabled = [bool]$status.AMServiceEnabled
    $section.signature_age_days = [int]$status.AntivirusSignatureAge
    $section.signature_version = [string]$status.AntivirusSignatureVersion
    if ($status.AntivirusSignatureLastUpdated) {
        $section.signature_last_updated = ([datetime]$status.AntivirusSignatureLastUpdated).ToUniversalTime().ToString('o')
    }
    $section
}

Export-ModuleMember -Function Get-DeskguardPostureAv
