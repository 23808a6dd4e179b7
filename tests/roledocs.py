"""Generate docs/role-variables.md from every role's meta/argument_specs.yml, so the variable tables never
drift from what the roles validate. tests/unit/test_role_docs.py fails when the page is out of date.

    .venv/bin/python tests/roledocs.py          # rewrite docs/role-variables.md
    .venv/bin/python tests/roledocs.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "role-variables.md"
HEADER = """# Role variables

Generated from each role's `meta/argument_specs.yml` and the site's own keys
(`playbooks/vars/site_argument_specs.yml`) by `tests/roledocs.py`; do not edit by hand (a unit test fails when
this page and the specs differ). A key found nowhere on this page (and not an `ansible_*` connection variable)
is refused by every command before anything runs (`docs/policy.md`). Set these in the policy
(`inventory/group_vars/all/policy.yml`) or per laptop in `inventory/host_vars/HOST.yml`; `docs/policy.md`
explains the policy and `docs/roles.md` what each role does.
"""


def _cell(value) -> str:
    text = " ".join(str(value).split())
    return text.replace("|", "\\|")


def _default(spec: dict) -> str:
    if "default" not in spec:
        return "*required*" if spec.get("required") else ""
    value = spec["default"]
    shown = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    shown = shown.removesuffix("\n...").removesuffix("...").strip()
    return f"`{_cell(shown)}`" if shown else "`''`"


def _type(spec: dict) -> str:
    kind = spec.get("type", "str")
    if kind == "list" and spec.get("elements"):
        kind = f"list of {spec['elements']}"
    if spec.get("choices"):
        kind += ": " + ", ".join(f"`{c}`" for c in spec["choices"])
    return _cell(kind)


def _description(spec: dict) -> str:
    desc = spec.get("description", "")
    return _cell(" ".join(desc) if isinstance(desc, list) else desc)


def render(repo: Path = REPO) -> str:
    out = [HEADER.rstrip("\n")]
    site_spec = repo / "playbooks" / "vars" / "site_argument_specs.yml"
    for specs_file in [*sorted((repo / "roles").glob("*/meta/argument_specs.yml")), site_spec]:
        if not specs_file.exists():
            continue
        role = specs_file.parents[1].name if specs_file != site_spec else "site"
        specs = yaml.safe_load(specs_file.read_text())["argument_specs"]
        for entry, spec in specs.items():
            title = role if entry == "main" else f"{role} ({entry})"
            out.append(f"\n## {title}\n")
            if spec.get("short_description"):
                out.append(_cell(spec["short_description"]) + "\n")
            out.append("| variable | type | default | description |\n|---|---|---|---|")
            for name, opt in sorted(spec.get("options", {}).items()):
                out.append(f"| `{name}` | {_type(opt)} | {_default(opt)} | {_description(opt)} |")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"{PAGE.relative_to(REPO)} is out of date: run `.venv/bin/python tests/roledocs.py`")
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
