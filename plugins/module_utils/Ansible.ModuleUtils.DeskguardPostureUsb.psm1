# deskguard posture section `usb` on Windows (USB-001..003), read-only: every value under the two policy
# keys the usb_control role writes (removable-storage deny values, device-installation restrictions and
# their numbered lists), as path/name/type/data like the role's own value list, and the USB storage devices
# present. The controller compares them with deskguard_usb_windows.windows_usb_values for the policy's mode.
# Not yet verified on a real Windows host.
# Copyright: deskguard contributors; Apache-2.0

Function Get-DeskguardRegistryTree {
    param([string]$Path)
    if (-not (Test-Path -LiteralPath $Path)) { return }
    foreach ($key in @(Get-Item -LiteralPath $Path -ErrorAction Stop) + @(Get-ChildItem -LiteralPath $Path -Recurse -ErrorAction Stop)) {
        $psPath = 'HKLM:\' + ($key.Name -replace '^HKEY_LOCAL_MACHINE\\', '')
        foreach ($name in $key.GetValueNames()) {
            # Kind names in lower case (dword, string) are the types win_regedit and the role use.
            @{ path = $psPath; name = $name; type = $key.GetValueKind($name).ToString().ToLowerInvariant()
                data = $key.GetValue($name) }
        }
    }
}

Function Get-DeskguardPostureUsb {
    param($Params)
    $values = @(Get-DeskguardRegistryTree -Path 'HKLM:\SOFTWARE\Policies\Microsoft\Windows\RemovableStorageDevices') +
        @(Get-DeskguardRegistryTree -Path 'HKLM:\SOFTWARE\Policies\Microsoft\Windows\DeviceInstall\Restrictions')
    $attached = @(Get-PnpDevice -PresentOnly -ErrorAction SilentlyContinue |
        Where-Object { [string]$_.InstanceId -match '^(USBSTOR|SWD\\WPDBUSENUM)\\' } |
        ForEach-Object { @{ instance_id = [string]$_.InstanceId; name = [string]$_.FriendlyName; class = [string]$_.Class
            status = [string]$_.Status } })
    @{ tool = 'windows-policy'; values = $values; attached = $attached }
}

Export-ModuleMember -Function Get-DeskguardPostureUsb
