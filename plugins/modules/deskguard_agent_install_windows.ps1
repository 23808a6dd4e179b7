#!powershell
# deskguard_agent_install_windows (the Windows twin of deskguard_agent_install.py): the agent's files (readable by SYSTEM and Administrators only), its device
# key made here in the machine's CNG key store (non-exportable: the private key never leaves the laptop), and
# the scheduled task that runs it as SYSTEM. Returns the public key only. Driven by the action deskguard_agent.
# Not yet verified on a real Windows host (docs/agent.md).

#AnsibleRequires -CSharpUtil Ansible.Basic

$spec = @{
    options = @{
        files = @{ type = 'list'; elements = 'dict'; required = $true; options = @{
            path = @{ type = 'str'; required = $true }
            content = @{ type = 'str'; default = '' }
            mode = @{ type = 'str'; default = '0644' }
            public = @{ type = 'bool'; default = $false }
        } }
        device_key = @{ type = 'str'; required = $true }
        windows_task = @{ type = 'dict'; default = @{} }
    }
    supports_check_mode = $true
}
$module = [Ansible.Basic.AnsibleModule]::Create($args, $spec)
$utf8 = New-Object System.Text.UTF8Encoding($false)
$changedFiles = New-Object System.Collections.Generic.List[string]

function Set-PrivateAcl([string]$Dir) {
    # SYSTEM and Administrators only, nothing inherited: the configuration pins keys and the state holds nonces.
    $acl = New-Object System.Security.AccessControl.DirectorySecurity
    $acl.SetAccessRuleProtection($true, $false)
    foreach ($sid in @('S-1-5-18', 'S-1-5-32-544')) {
        $account = (New-Object System.Security.Principal.SecurityIdentifier($sid))
        $rule = New-Object System.Security.AccessControl.FileSystemAccessRule($account, 'FullControl',
            'ContainerInherit,ObjectInherit', 'None', 'Allow')
        $acl.AddAccessRule($rule)
    }
    Set-Acl -LiteralPath $Dir -AclObject $acl
}

function Set-OperatorAcl([string]$Dir) {
    # The operator folder: what the logged-on user's deskguard-notify reads (its script, the words, the policy's
    # quiet hours, the agent's status.json). Users read; only SYSTEM and Administrators write, so an operator
    # cannot plant a status or a script there. Nothing inherited (ProgramData lets Users create files).
    Set-PrivateAcl $Dir
    $acl = Get-Acl -LiteralPath $Dir
    $users = (New-Object System.Security.Principal.SecurityIdentifier('S-1-5-32-545'))
    $acl.AddAccessRule((New-Object System.Security.AccessControl.FileSystemAccessRule($users, 'ReadAndExecute',
        'ContainerInherit,ObjectInherit', 'None', 'Allow')))
    Set-Acl -LiteralPath $Dir -AclObject $acl
}

foreach ($file in $module.Params.files) {
    $path = $file.path
    $want = $file.content
    $have = $null
    if (Test-Path -LiteralPath $path) { $have = [IO.File]::ReadAllText($path, $utf8) }
    if ($have -ceq $want) { continue }
    $changedFiles.Add($path)
    if ($module.CheckMode) { continue }
    $dir = Split-Path -Parent $path
    if (-not (Test-Path -LiteralPath $dir)) {
        New-Item -ItemType Directory -Path $dir -Force | Out-Null
        if ($file.public) { Set-OperatorAcl $dir } else { Set-PrivateAcl $dir }
    }
    $tmp = Join-Path $dir ('.deskguard-' + [guid]::NewGuid().ToString('N'))
    [IO.File]::WriteAllText($tmp, $want, $utf8)
    Move-Item -LiteralPath $tmp -Destination $path -Force
}

$keyName = $module.Params.device_key
$provider = [Security.Cryptography.CngProvider]::MicrosoftSoftwareKeyStorageProvider
$keyCreated = -not [Security.Cryptography.CngKey]::Exists($keyName, $provider, [Security.Cryptography.CngKeyOpenOptions]::MachineKey)
if ($keyCreated -and -not $module.CheckMode) {
    $params = New-Object Security.Cryptography.CngKeyCreationParameters
    $params.Provider = $provider
    $params.KeyCreationOptions = [Security.Cryptography.CngKeyCreationOptions]::MachineKey
    $params.ExportPolicy = [Security.Cryptography.CngExportPolicies]::None
    [Security.Cryptography.CngKey]::Create([Security.Cryptography.CngAlgorithm]::ECDsaP256, $keyName, $params) | Out-Null
}

$task = $module.Params.windows_task
$taskName = 'deskguard-agent'
$taskChanged = $false
if ($task.Count -gt 0) {
    $existing = Get-ScheduledTask -TaskName $taskName -ErrorAction SilentlyContinue
    $argument = '-NoProfile -NonInteractive -ExecutionPolicy Bypass -File "{0}" -Mode Run' -f $task.agent_path
    $wanted = $null -eq $existing -or $existing.Actions[0].Arguments -ne $argument -or
        $existing.Triggers.Count -ne 2 -or $existing.Triggers[1].Repetition.Interval -ne ('PT{0}M' -f $task.interval_minutes)
    if ($wanted) {
        $taskChanged = $true
        if (-not $module.CheckMode) {
            $action = New-ScheduledTaskAction -Execute 'powershell.exe' -Argument $argument
            $boot = New-ScheduledTaskTrigger -AtStartup
            $boot.Delay = 'PT{0}S' -f $task.boot_delay_seconds
            $every = New-ScheduledTaskTrigger -Once -At (Get-Date) -RepetitionInterval (New-TimeSpan -Minutes $task.interval_minutes) `
                -RandomDelay (New-TimeSpan -Seconds $task.jitter_seconds)
            $principal = New-ScheduledTaskPrincipal -UserId 'S-1-5-18' -LogonType ServiceAccount -RunLevel Highest
            $settings = New-ScheduledTaskSettingsSet -StartWhenAvailable -MultipleInstances IgnoreNew `
                -ExecutionTimeLimit (New-TimeSpan -Minutes 10) -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries
            Register-ScheduledTask -TaskName $taskName -Action $action -Trigger @($boot, $every) -Principal $principal `
                -Settings $settings -Force | Out-Null
        }
    }
}

# The operator's toasts: deskguard-notify.ps1 at each logon, as the user who logs on (group principal Users,
# interactive token: it runs in that user's session, where a toast can be shown; SYSTEM has no desktop), hidden,
# for as long as the session lasts (it checks every 5 minutes itself). Its log lines go to the Application log
# under the agent's source, registered here (writing an event needs no admin right; registering a source does).
$notifyName = 'deskguard-notify'
if ($task.Count -gt 0 -and $task.notify_path) {
    $existing = Get-ScheduledTask -TaskName $notifyName -ErrorAction SilentlyContinue
    $argument = '-NoProfile -NonInteractive -WindowStyle Hidden -ExecutionPolicy Bypass -File "{0}"' -f $task.notify_path
    if ($null -eq $existing -or $existing.Actions[0].Arguments -ne $argument -or
            $existing.Principal.GroupId -notmatch '(S-1-5-32-545|Users)$') {
        $taskChanged = $true
        if (-not $module.CheckMode) {
            $action = New-ScheduledTaskAction -Execute 'powershell.exe' -Argument $argument
            $logon = New-ScheduledTaskTrigger -AtLogOn
            $principal = New-ScheduledTaskPrincipal -GroupId 'S-1-5-32-545' -RunLevel Limited
            $settings = New-ScheduledTaskSettingsSet -MultipleInstances Parallel -ExecutionTimeLimit (New-TimeSpan) `
                -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries
            Register-ScheduledTask -TaskName $notifyName -Action $action -Trigger $logon -Principal $principal `
                -Settings $settings -Force | Out-Null
        }
    }
    if (-not $module.CheckMode -and -not [Diagnostics.EventLog]::SourceExists('deskguard-agent')) {
        New-EventLog -LogName Application -Source 'deskguard-agent'
        $taskChanged = $true
    }
}

$module.Result.changed = ($changedFiles.Count -gt 0) -or $keyCreated -or $taskChanged
$module.Result.files = @($changedFiles)
$module.Result.key_created = $keyCreated
if (-not $module.CheckMode) {
    $key = [Security.Cryptography.CngKey]::Open($keyName, $provider, [Security.Cryptography.CngKeyOpenOptions]::MachineKey)
    $blob = $key.Export([Security.Cryptography.CngKeyBlobFormat]::EccPublicBlob)
    # SubjectPublicKeyInfo of a P-256 key: fixed prefix, then the uncompressed point 04||X||Y.
    $spki = [byte[]](0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
                     0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04) + $blob[8..71]
    $module.Result.public_key = "-----BEGIN PUBLIC KEY-----`n" +
        [Convert]::ToBase64String([byte[]]$spki, 'InsertLineBreaks').Replace("`r`n", "`n") + "`n-----END PUBLIC KEY-----`n"
}
$module.ExitJson()
