# deskguard posture section `disk` on Windows: the BitLocker inventory (edition, TPM, every volume with its
# protection status, encryption method and key protector ids/types), read-only. deskguard_bitlocker.ps1
# (state=inventory) reads the same through these functions, so the nightly run and the escrow steps see one
# shape. Recovery passwords are never read into the result. Not yet verified on a real Windows host.
# Copyright: deskguard contributors; Apache-2.0

Function Get-DeskguardWindowsEdition {
    # EditionID rather than ProductName: Windows 11 still reports "Windows 10 ..." as ProductName.
    # Home editions are "Core", "CoreN", "CoreSingleLanguage", "CoreCountrySpecific".
    $cv = Get-ItemProperty -LiteralPath 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion'
    $editionId = [string]$cv.EditionID
    $isHome = $editionId.StartsWith('Core')
    @{
        name = if ($isHome) { 'Home' } else { $editionId }
        edition_id = $editionId
        build = [string]$cv.CurrentBuildNumber
        bitlocker_capable = -not $isHome
    }
}

Function Get-DeskguardTpm {
    try {
        $tpm = Get-Tpm -ErrorAction Stop
        @{ present = [bool]$tpm.TpmPresent; ready = [bool]$tpm.TpmReady }
    }
    catch {
        # Get-Tpm needs an elevated session; a failure here is reported, not fatal, so the inventory still runs.
        @{ present = $false; ready = $false; error = $_.Exception.Message }
    }
}

Function ConvertTo-DeskguardBitLockerVolume {
    param($Volume)
    # Enums become their names (JSON would give numbers); never copy RecoveryPassword into the result.
    $protectors = @(foreach ($kp in @($Volume.KeyProtector)) {
            if ($null -ne $kp) {
                @{ id = [string]$kp.KeyProtectorId; type = [string]$kp.KeyProtectorType }
            }
        })
    @{
        mount_point = [string]$Volume.MountPoint
        volume_type = [string]$Volume.VolumeType
        protection_status = [string]$Volume.ProtectionStatus
        volume_status = [string]$Volume.VolumeStatus
        encryption_method = [string]$Volume.EncryptionMethod
        encryption_percentage = [double]$Volume.EncryptionPercentage
        lock_status = [string]$Volume.LockStatus
        protectors = $protectors
    }
}

Function Get-DeskguardPostureDisk {
    param($Params)
    $edition = Get-DeskguardWindowsEdition
    $volumes = @()
    if ($edition.bitlocker_capable) {
        # -ErrorAction Stop: a volume list that cannot be read is a collection error, never "no volumes".
        $volumes = @(Get-BitLockerVolume -ErrorAction Stop | ForEach-Object { ConvertTo-DeskguardBitLockerVolume -Volume $_ })
    }
    @{ edition = $edition; tpm = Get-DeskguardTpm; volumes = $volumes }
}

Export-ModuleMember -Function Get-DeskguardPostureDisk, Get-DeskguardWindowsEdition, Get-DeskguardTpm, ConvertTo-DeskguardBitLockerVolume
