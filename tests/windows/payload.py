"""Decode what a WinRM client asks a Windows host to run: a PowerShell `-EncodedCommand` script, and the
module payload that ansible-core 2.19's exec wrapper reads from stdin.

ansible-core 2.19 (`ansible/executor/powershell/module_manifest.py`) runs `bootstrap_wrapper.ps1` and feeds it
on stdin: one JSON line (the exec wrapper's own script and parameters), a line of four NUL characters, then a
JSON manifest `{scripts, actions, signed_hashlist}`. The `module_wrapper.ps1` action names the module's script
(`Script`) and carries its arguments as the global variable `complex_args`. Nothing here runs PowerShell.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

SEPARATOR = "\n\0\0\0\0\n"


def encoded_script(args: list[str]) -> str | None:
    """The script of `powershell ... -EncodedCommand B64` (base64 of UTF-16-LE), or None for other commands."""
    lowered = [a.lower() for a in args]
    for flag in ("-encodedcommand", "-enc", "-e"):
        if flag in lowered:
            i = lowered.index(flag)
            if i + 1 < len(args):
                return base64.b64decode(args[i + 1]).decode("utf-16-le")
    return None


@dataclass
class ModuleCall:
    """One module invocation as the exec wrapper would run it. `module` is the name the task used, fully
    qualified (`ansible.windows.win_regedit`, or `deskguard_bitlocker` from the kit's library); `args` keeps
    no_log values: memory only."""

    module: str
    args: dict
    internal: dict = field(default_factory=dict)
    script: str = ""                                    # the module file sent, e.g. `deskguard_posture.ps1`
    bundled: list[str] = field(default_factory=list)    # every script in the manifest (module_utils included)

    @property
    def short(self) -> str:
        return self.module.rsplit(".", 1)[-1]

    @property
    def check_mode(self) -> bool:
        return bool(self.internal.get("_ansible_check_mode"))

    @property
    def no_log(self) -> bool:
        return bool(self.internal.get("_ansible_no_log"))


def module_call(stdin: bytes) -> ModuleCall | None:
    """The module and arguments in an exec-wrapper payload, or None when stdin is not one (e.g. put_file)."""
    text = stdin.decode("utf-8")
    if SEPARATOR not in text:
        return None
    bootstrap, manifest = text.split(SEPARATOR, 1)
    if json.loads(bootstrap).get("name") != "exec_wrapper":
        return None
    manifest = json.loads(manifest)
    actions = manifest["actions"]
    wrapper = next((a for a in actions if a["name"] == "module_wrapper.ps1"), None)
    if wrapper is None or not wrapper["params"].get("ForModule"):
        return None
    script = wrapper["params"]["Script"]
    complex_args = next(v["Value"] for v in wrapper["params"]["Variables"] if v["Name"] == "complex_args")
    internal = {k: v for k, v in complex_args.items() if k.startswith("_ansible_")}
    args = {k: v for k, v in complex_args.items() if not k.startswith("_ansible_")}
    return ModuleCall(module=internal.get("_ansible_module_name") or short_name(script), args=args,
                      internal=internal, script=script, bundled=sorted(manifest["scripts"]))


def short_name(script: str) -> str:
    """`ansible_collections.ansible.windows.plugins.modules.win_regedit.ps1` or `win_regedit.ps1` ->
    `win_regedit`: goldens and scripted answers stay the same however the task spelled the module."""
    name = script[:-4] if script.endswith(".ps1") else script
    return name.rsplit(".", 1)[-1]
