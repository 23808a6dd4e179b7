"""The kit's Ansible content as AWX / AAP users hold theirs: ansible-lint's production profile and yamllint
clean (config in .ansible-lint and .yamllint), and every custom module documented so that ansible-doc renders
its DOCUMENTATION, EXAMPLES and RETURN."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODULES = sorted({p.stem for p in (REPO / "plugins" / "modules").iterdir() if p.suffix in (".py", ".ps1")})
OPTION_KEYS = {"description", "type", "default", "required", "choices", "elements", "aliases", "no_log",
               "options", "suboptions", "version_added"}
RETURN_KEYS = {"description", "type", "returned", "sample", "elements", "contains", "version_added"}


def _tool(*args, timeout=600):
    env = {**os.environ, "NO_COLOR": "1", "ANSIBLE_NOCOLOR": "1", "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    return subprocess.run([*args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def test_ansible_lint_production_profile_is_clean():
    proc = _tool(str(BIN / "ansible-lint"), "--profile", "production", "-f", "pep8", "--nocolor")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Profile 'production' was required, and it passed" in proc.stderr


def test_yamllint_is_clean():
    proc = _tool(str(BIN / "yamllint"), "-s", "-f", "parsable", ".")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_every_module_renders_with_ansible_doc():
    assert len(MODULES) >= 10
    text = _tool(str(BIN / "ansible-doc"), "-M", "plugins/modules", *MODULES)
    assert text.returncode == 0 and "ERROR" not in text.stderr, text.stderr
    for name in MODULES:
        assert f"> MODULE {name}" in text.stdout, name
    docs = json.loads(_tool(str(BIN / "ansible-doc"), "-M", "plugins/modules", "--json", *MODULES).stdout)
    missing = {name: [part for part in ("doc", "examples", "return") if not docs[name].get(part)]
               for name in MODULES}
    assert not {k: v for k, v in missing.items() if v}, missing


@pytest.mark.parametrize("name", MODULES)
def test_module_docs_keep_every_description_whole(name):
    """A comma in an unquoted flow-mapping description (`{description: a, b, type: str}`) silently cuts it and
    adds a bogus key; ansible-doc renders that without complaint, so the keys are checked here."""
    path = REPO / "plugins" / "modules" / f"{name}.py"
    consts = {node.targets[0].id: node.value.value for node in ast.parse(path.read_text()).body
              if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
              and node.targets[0].id in ("DOCUMENTATION", "EXAMPLES", "RETURN")}
    assert set(consts) == {"DOCUMENTATION", "EXAMPLES", "RETURN"}, sorted(consts)
    yaml.safe_load(consts["EXAMPLES"])
    problems = []

    def walk(entries, allowed, where, children):
        for key, spec in (entries or {}).items():
            if not isinstance(spec, dict) or set(spec) - allowed or not isinstance(spec.get("description"), (str, list)):
                problems.append(f"{where}.{key}: {spec!r}"[:200])
                continue
            for child in children:
                walk(spec.get(child), allowed, f"{where}.{key}", children)

    walk(yaml.safe_load(consts["DOCUMENTATION"]).get("options"), OPTION_KEYS, "options", ("options", "suboptions"))
    walk(yaml.safe_load(consts["RETURN"]), RETURN_KEYS, "return", ("contains",))
    assert not problems, problems
