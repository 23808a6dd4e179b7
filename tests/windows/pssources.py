"""Every piece of PowerShell the kit ships or sends, as (label, text) pairs for the syntax gate:
script files in plugins/, roles/ and cli/ (the WinRM preflight, also as sent), inline scripts in task files (found by parsing the YAML, not by grep),
and `*.ps1.j2` templates rendered with representative variables.
"""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
import yaml

REPO = Path(__file__).resolve().parents[2]

# Modules whose argument is PowerShell, and which argument. win_shell's free form is `_raw_params` once
# Ansible parses it; written as a string it is the module's value itself.
INLINE = {
    "ansible.windows.win_powershell": "script",
    "win_powershell": "script",
    "ansible.windows.win_shell": "cmd",
    "win_shell": "cmd",
}
# A `{{ expression }}` becomes a variable, valid wherever PowerShell accepts a value or an argument; block
# tags vanish, keeping both branches. Good enough for syntax; templates are rendered for real instead.
_JINJA_EXPR = re.compile(r"\{\{.*?\}\}", re.S)
_JINJA_TAG = re.compile(r"\{%.*?%\}|\{#.*?#\}", re.S)


def script_files(root: Path = REPO) -> list[tuple[str, str]]:
    found = []
    for top in ("plugins", "roles", "cli"):
        for path in sorted((root / top).rglob("*")):
            if path.suffix in (".ps1", ".psm1") and path.is_file():
                found.append((str(path.relative_to(root)), path.read_text(encoding="utf-8-sig")))
    return found


def sent_scripts() -> list[tuple[str, str]]:
    """Scripts the controller sends as transformed text (the preflight without its comment lines)."""
    from deskguard.windows.preflight import script_to_send

    return [("cli/deskguard/windows/ps/preflight.ps1 (as sent)", script_to_send())]


def task_files(root: Path = REPO) -> list[Path]:
    return sorted(set((root / "roles").glob("*/tasks/*.yml")) | set((root / "roles").glob("*/handlers/*.yml"))
                  | set((root / "playbooks").rglob("*.yml")))


def inline_scripts(root: Path = REPO) -> list[tuple[str, str]]:
    found = []
    for path in task_files(root):
        data = yaml.safe_load(path.read_text()) or []
        for i, (name, script) in enumerate(_scripts_in(data)):
            label = f"{path.relative_to(root)} task {name!r}" if name else f"{path.relative_to(root)} #{i}"
            found.append((label, _JINJA_TAG.sub("", _JINJA_EXPR.sub("$deskguardJinja", script))))
    return found


def _scripts_in(node):
    """(task name, script) for every task in a play list, task list or block, however deeply nested."""
    if isinstance(node, list):
        for item in node:
            yield from _scripts_in(item)
    elif isinstance(node, dict):
        for key in ("tasks", "pre_tasks", "post_tasks", "handlers", "block", "rescue", "always"):
            yield from _scripts_in(node.get(key))
        for module, arg in INLINE.items():
            if module in node:
                value = node[module]
                if isinstance(value, dict):
                    value = value.get(arg, value.get("_raw_params"))
                if isinstance(value, str) and (node.get("args") or {}).get("executable", "") in ("", None):
                    yield node.get("name", ""), value


def templates(root: Path = REPO, overrides: dict | None = None) -> list[tuple[str, str]]:
    found = []
    for path in sorted((root / "roles").glob("*/templates/**/*.ps1.j2")):
        role = path.relative_to(root / "roles").parts[0]
        found.append((str(path.relative_to(root)), render(path, role_vars(root / "roles" / role, overrides))))
    return found


def role_vars(role_dir: Path, overrides: dict | None = None) -> dict:
    """The role's defaults and vars, as a play would see them with the policy's defaults (no host facts)."""
    values: dict = {"ansible_managed": "Managed by deskguard", "ansible_facts": {"os_family": "Windows"}}
    for part in ("defaults/main.yml", "vars/main.yml"):
        if (role_dir / part).exists():
            values.update(yaml.safe_load((role_dir / part).read_text()) or {})
    values.update(overrides or {})
    # vars/main.yml values are templates themselves: resolve them a few passes deep, as Ansible would lazily.
    env = _environment()
    for _ in range(3):
        values = {k: _try_render(env, v, values) for k, v in values.items()}
    return values


def _try_render(env, value, values):
    if not (isinstance(value, str) and "{" in value):
        return value
    try:
        return env.from_string(value).render(values)
    except jinja2.TemplateError:
        return value  # a filter plain Jinja lacks (community.general...): only matters if a template uses it


def render(path: Path, values: dict) -> str:
    env = _environment(loader=jinja2.FileSystemLoader(str(path.parent)))
    return env.get_template(path.name).render(values)


def _environment(loader=None) -> jinja2.Environment:
    from ansible.plugins.filter.core import FilterModule

    env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters.update(FilterModule().filters())
    return env
