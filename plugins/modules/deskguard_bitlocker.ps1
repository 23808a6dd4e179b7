#!powershell
# deskguard: BitLocker inventory and the steps of ENC-001/ENC-002 on one volume (documentation in
# deskguard_bitlocker.py). Not yet verified on a real Windows host: see docs/windows.md.
# Copyright: deskguard contributors; Apache-2.0

#AnsibleRequires -CSharpUtil Ansible.Basic
#Requires -Module Ansible.ModuleUtils.DeskguardPostureDisk

$spec = @{
    options = @{
        state = @{ type = 'str'; default = 'inventory'; choices = 'inventory', 'add_recovery', 'enable', 'remove_protector' }
        mount_point = @{ type = 'str'; default = $env:SystemDrive }
        recovery_password = @{ type = 'str'; no_log = $true }
        protector_id = @{ type = 'str' }
        encryption_method = @{ type = 'str'; default = 'XtsAes256'; choices = 'Aes128', 'Aes256', 'XtsAes128', 'XtsAes256' }
        protector = @{ type = 'str'; default = 'tpm'; choices = 'tpm', 'tpm_pin' }
        pin = @{ type = 'str'; no_log = $true }
    }
    required_if = @(
        @('state', 'add_recovery', @('recovery_password')),
        @('state', 'remove_protector', @('protector_id'))
    )
    supports_check_mode = $true
}
$module = [Ansible.Basic.AnsibleModule]::Create($args, $spec)
$state = $module.Params.state
$mountPoint = $module.Params.mount_point
$module.Result.changed = $false
$module.Result.mount_point = $mountPoint

# Key protector types bound to the TPM: removing one could leave the laptop unbootable without the recovery
# password, so this module never does it (a lock or wipe is a separate, audited order).
$tpmTypes = @('Tpm', 'TpmPin', 'TpmStartupKey', 'TpmPinStartupKey')

# Edition, TPM and volume reading live in Ansible.ModuleUtils.DeskguardPostureDisk.psm1, shared with the nightly
# posture's `disk` section (deskguard_posture.ps1).

function Get-DeskguardVolume {
    param([string]$MountPoint)
    try {
        Get-BitLockerVolume -MountPoint $MountPoint -ErrorAction Stop
    }
    catch {
        $module.FailJson("cannot read BitLocker state of $($MountPoint): $($_.Exception.Message)", $_)
    }
}

function Get-RecoveryProtector {
    param($Volume)
    @(@($Volume.KeyProtector) | Where-Object { $null -ne $_ -and [string]$_.KeyProtectorType -eq 'RecoveryPassword' })
}

function Get-Finding {
    # Plain sentences for the nightly report; the controller does not re-derive them.
    param($Edition, $Tpm, $OsVolume, [string]$WantedMethod)
    if (-not $Edition.bitlocker_capable) {
        return "edition $($Edition.name) cannot use BitLocker"
    }
    if (-not $Tpm.present) { 'no TPM: a TPM protector is not possible' }
    elseif (-not $Tpm.ready) { 'TPM is present but not ready' }
    if ($null -eq $OsVolume) {
        return 'OS volume not found by Get-BitLockerVolume'
    }
    switch ($OsVolume.volume_status) {
        'FullyDecrypted' { 'OS volume is not encrypted' }
        'FullyEncrypted' { }
        default { "OS volume is $($OsVolume.volume_status) ($($OsVolume.encryption_percentage)%)" }
    }
    if ($OsVolume.volume_status -ne 'FullyDecrypted' -and $OsVolume.encryption_method -ne $WantedMethod) {
        "encryption method is $($OsVolume.encryption_method), policy wants $WantedMethod"
    }
    if ($OsVolume.volume_status -eq 'FullyEncrypted' -and $OsVolume.protection_status -ne 'On') {
        'OS volume is encrypted but protection is off (suspended)'
    }
    if (-not @($OsVolume.protectors | Where-Object { $_.type -eq 'RecoveryPassword' })) {
        'OS volume has no recovery-password protector'
    }
}

function Invoke-Inventory {
    $edition = Get-DeskguardWindowsEdition
    $tpm = Get-DeskguardTpm
    $volumes = @()
    if ($edition.bitlocker_capable) {
        $volumes = @(Get-BitLockerVolume -ErrorAction SilentlyContinue | ForEach-Object { ConvertTo-DeskguardBitLockerVolume -Volume $_ })
    }
    $osVolume = $volumes | Where-Object { $_.volume_type -eq 'OperatingSystem' } | Select-Object -First 1
    $module.Result.edition = $edition
    $module.Result.tpm = $tpm
    $module.Result.volumes = $volumes
    $module.Result.findings = @(Get-Finding -Edition $edition -Tpm $tpm -OsVolume $osVolume -WantedMethod $module.Params.encryption_method)
}

function Invoke-AddRecovery {
    $password = $module.Params.recovery_password
    # 48 digits in 8 groups of 6; Windows checks the arithmetic of each group itself.
    if ($password -notmatch '^\d{6}(-\d{6}){7}$') {
        $module.FailJson('recovery_password must be 8 groups of 6 digits separated by "-"')
    }
    $existing = Get-RecoveryProtector -Volume (Get-DeskguardVolume -MountPoint $mountPoint) |
        Where-Object { $_.RecoveryPassword -ceq $password } | Select-Object -First 1
    if ($existing) {
        $module.Result.protector_id = [string]$existing.KeyProtectorId
        $module.Result.verified = $true
        return
    }
    $module.Result.changed = $true
    $module.Result.protector_id = $null
    $module.Result.verified = $false
    if ($module.CheckMode) { return }
    try {
        # The cmdlet returns the volume, whose protectors carry every recovery password: discard it.
        $null = Add-BitLockerKeyProtector -MountPoint $mountPoint -RecoveryPasswordProtector -RecoveryPassword $password -ErrorAction Stop
    }
    catch {
        $module.FailJson("adding the recovery password to $mountPoint failed: $($_.Exception.Message)", $_)
    }
    # Read back from a fresh query: the escrow is only as good as what the volume really holds.
    $found = Get-RecoveryProtector -Volume (Get-DeskguardVolume -MountPoint $mountPoint) |
        Where-Object { $_.RecoveryPassword -ceq $password } | Select-Object -First 1
    if ($found) {
        $module.Result.protector_id = [string]$found.KeyProtectorId
        $module.Result.verified = $true
    }
}

function Invoke-Enable {
    $edition = Get-DeskguardWindowsEdition
    if (-not $edition.bitlocker_capable) {
        $module.FailJson("edition $($edition.name) cannot use BitLocker")
    }
    $volume = Get-DeskguardVolume -MountPoint $mountPoint
    $module.Result.volume_status = [string]$volume.VolumeStatus
    $module.Result.encryption_percentage = [double]$volume.EncryptionPercentage
    $module.Result.hardware_test_pending = $false
    if ([string]$volume.VolumeStatus -ne 'FullyDecrypted') {
        # Encrypting, encrypted, or paused: nothing to start (Enable-BitLocker would take no action either).
        return
    }
    # Escrow before enable, on the device too: without a recovery password that the controller has escrowed
    # (ENC-002), a TPM failure would lock the operator out for good.
    if (-not (Get-RecoveryProtector -Volume $volume)) {
        $module.FailJson("refusing to enable BitLocker on $($mountPoint): it has no recovery-password protector; escrow one first (ENC-002)")
    }
    if (@($volume.KeyProtector | Where-Object { $null -ne $_ -and $tpmTypes -contains [string]$_.KeyProtectorType })) {
        # A TPM protector on a decrypted volume: Enable-BitLocker already ran and waits for the hardware test
        # at the next restart. Running it again would not help; report it instead.
        $module.Result.hardware_test_pending = $true
        return
    }
    $tpm = Get-DeskguardTpm
    if (-not $tpm.ready) {
        $module.FailJson("refusing to enable BitLocker on $($mountPoint): the TPM is not present or not ready")
    }
    $enable = @{
        MountPoint = $mountPoint
        EncryptionMethod = $module.Params.encryption_method
        ErrorAction = 'Stop'
    }
    if ($module.Params.protector -eq 'tpm_pin') {
        if (-not $module.Params.pin) {
            $module.FailJson('protector tpm_pin needs pin')
        }
        $enable.TpmAndPinProtector = $true
        $enable.Pin = ConvertTo-SecureString -String $module.Params.pin -AsPlainText -Force
    }
    else {
        $enable.TpmProtector = $true
    }
    $module.Result.changed = $true
    if ($module.CheckMode) { return }
    # No -SkipHardwareTest: the test restart proves the TPM (and the PIN entry) unlocks the disk before any
    # data is encrypted, so a failure leaves the laptop decrypted instead of at the recovery screen.
    # No -UsedSpaceOnly: free space is encrypted too, so a later crypto-erase leaves no old plaintext.
    try {
        $null = Enable-BitLocker @enable
    }
    catch {
        $module.FailJson("Enable-BitLocker on $mountPoint failed: $($_.Exception.Message)", $_)
    }
    $after = Get-DeskguardVolume -MountPoint $mountPoint
    $module.Result.volume_status = [string]$after.VolumeStatus
    $module.Result.encryption_percentage = [double]$after.EncryptionPercentage
    $module.Result.hardware_test_pending = [string]$after.VolumeStatus -eq 'FullyDecrypted'
}

function Invoke-RemoveProtector {
    $wanted = $module.Params.protector_id
    $volume = Get-DeskguardVolume -MountPoint $mountPoint
    $all = @(@($volume.KeyProtector) | Where-Object { $null -ne $_ })
    $target = $all | Where-Object { [string]$_.KeyProtectorId -eq $wanted } | Select-Object -First 1
    if (-not $target) { return }
    $type = [string]$target.KeyProtectorType
    if ($tpmTypes -contains $type) {
        $module.FailJson("refusing to remove $type protector $($wanted): it is what unlocks the disk at boot")
    }
    if ($type -eq 'RecoveryPassword' -and @(Get-RecoveryProtector -Volume $volume).Count -le 1) {
        $module.FailJson("refusing to remove $($wanted): it is the last recovery-password protector of $mountPoint")
    }
    if ($all.Count -le 1) {
        # Deleting the last protector turns protection off and leaves the volume key in the clear.
        $module.FailJson("refusing to remove $($wanted): it is the last key protector of $mountPoint")
    }
    $module.Result.changed = $true
    if ($module.CheckMode) { return }
    try {
        $null = Remove-BitLockerKeyProtector -MountPoint $mountPoint -KeyProtectorId $wanted -ErrorAction Stop
    }
    catch {
        $module.FailJson("removing protector $wanted from $mountPoint failed: $($_.Exception.Message)", $_)
    }
}

switch ($state) {
    'inventory' { Invoke-Inventory }
    'add_recovery' { Invoke-AddRecovery }
    'enable' { Invoke-Enable }
    'remove_protector' { Invoke-RemoveProtector }
}
$module.ExitJson()
