"""What a policy may say: the roles' meta/argument_specs.yml plus the site's own keys
(playbooks/vars/site_argument_specs.yml), nothing hand-written here. Names and types are checked with
Ansible's own ArgumentSpecValidator (a value converts exactly as the play's validation converts it); ranges
are the roles' own first AUDIT asserts (roles/<role>/tasks/main.yml), evaluated on the controller with
Ansible's templating, so the CLI and the play refuse the same values with the same message.
"""

from __future__ import annotations

import difflib
import functools
import re
from pathlib import Path

import yaml

from . import KIT_ROOT

SITE_SPEC = Path("playbooks") / "vars" / "site_argument_specs.yml"
# Ansible's connection and behaviour variables (ansible_host, ansible_user, ansible_python_interpreter, ...):
# Ansible owns their names, and onboarding and the lab write them into host_vars.
ANSIBLE_PREFIX = "ansible_"


def _yaml(path: Path):
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@functools.cache
def options(kit: Path = KIT_ROOT) -> dict[str, dict]:
    """Every variable a policy file may set -> its argument spec (type, elements, choices, ...)."""
    merged: dict[str, dict] = {}
    for path in [*sorted((kit / "roles").glob("*/meta/argument_specs.yml")), kit / SITE_SPEC]:
        merged.update(_yaml(path)["argument_specs"]["main"]["options"])
    return merged


def unknown(key: str, kit: Path = KIT_ROOT) -> str | None:
    """Why ``key`` is refused (with the nearest known name), or None if a policy may set it."""
    known = options(kit)
    if key in known or (isinstance(key, str) and key.startswith(ANSIBLE_PREFIX)):
        return None
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.75)
    hint = f"; did you mean {close[0]}?" if close else " (see docs/role-variables.md)"
    return f"unknown policy key {str(key)[:60]!r}{hint}"


def type_problem(key: str, value, kit: Path = KIT_ROOT) -> str | None:
    """The argument-spec error for one known key's value, as the play's validate_argument_spec reports it."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    spec = options(kit).get(key)
    if spec is None or _templated(value):
        return None   # ansible_* is Ansible's to check; a template is only known once the play renders it
    plain = {"str": str, "int": int, "bool": bool}.get(spec.get("type", "str"))
    if plain and "choices" not in spec and type(value) is plain:
        return None   # already the type, nothing to convert (what the validator would say, without its cost)
    result = ArgumentSpecValidator({key: spec}).validate({key: value})
    return " ".join(" ".join(result.error_messages).split())[:300] or None


def _templated(value) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(_templated(v) for v in value.values())
    if isinstance(value, list):
        return any(_templated(v) for v in value)
    return False


@functools.cache
def role_asserts(kit: Path = KIT_ROOT) -> list[dict]:
    """The leading AUDIT asserts of the onboarding play's pre_tasks and of each role (what they check before
    the first change), with the role's own variables: [{name, that, when, fail_msg, vars}]."""
    sources = [(_yaml(kit / "playbooks" / "onboard.yml")[0]["pre_tasks"], {})]
    for tasks_file in sorted((kit / "roles").glob("*/tasks/main.yml")):
        vars_file = tasks_file.parents[1] / "vars" / "main.yml"
        sources.append((_yaml(tasks_file) or [], (_yaml(vars_file) or {}) if vars_file.exists() else {}))
    out = []
    for tasks, role_vars in sources:
        for task in tasks:
            check = task.get("ansible.builtin.assert") or task.get("assert")
            if check is None or "| AUDIT |" not in task.get("name", ""):
                break
            that = check["that"] if isinstance(check["that"], list) else [check["that"]]
            when = task.get("when", [])
            out.append({"name": task["name"], "that": that, "when": when if isinstance(when, list) else [when],
                        "fail_msg": check.get("fail_msg") or f"{task['name']} failed", "vars": role_vars})
    return out


@functools.cache
def role_defaults(kit: Path = KIT_ROOT) -> dict:
    merged = {}
    for path in sorted((kit / "roles").glob("*/defaults/main.yml")):
        merged.update(_yaml(path) or {})
    return merged


def range_problems(policy: dict, kit: Path = KIT_ROOT) -> list[tuple[str, str]]:
    """(the assert's text, its message) for every role assert that ``policy`` (over the role defaults) fails.
    An assert that cannot be evaluated here (it needs a laptop fact) is left to the play."""
    from ansible.errors import AnsibleError, AnsibleUndefinedVariable
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    _add_filters(str(kit / "plugins" / "filter"))
    problems = []
    for check in role_asserts(kit):
        # The role's own variables are templates, as Ansible treats a role's vars/main.yml.
        own = {k: trust_as_template(v) if isinstance(v, str) else v for k, v in check["vars"].items()}
        templar = Templar(loader=DataLoader(), variables={**role_defaults(kit), **own, **policy})
        try:
            if not all(templar.evaluate_conditional(trust_as_template(str(w))) for w in check["when"]):
                continue
            if all(templar.evaluate_conditional(trust_as_template(str(t))) for t in check["that"]):
                continue
            message = templar.template(trust_as_template(str(check["fail_msg"])))
        except AnsibleUndefinedVariable:
            continue   # it needs what only the play has (a fact of the laptop): the play checks it
        except AnsibleError as exc:   # a kit filter refusing a value (the USB approved list)
            message = re.sub(r"^The filter plugin '[^']*' failed: ", "", getattr(exc, "message", None) or str(exc))
        problems.append((" ".join(check["that"] + [str(v) for v in check["vars"].values()]),
                         " ".join(str(message).split())))
    return problems


@functools.cache
def _add_filters(folder: str) -> None:
    """The kit's filter plugins (the USB list's check, the firewall's networks), once per process."""
    from ansible.plugins.loader import filter_loader

    filter_loader.add_directory(folder)


@functools.cache
def range_names(kit: Path = KIT_ROOT) -> frozenset[str]:
    """Every name the range checks read: a file that sets none of them (a laptop's connection variables, its
    device id) cannot change their verdict, and is not evaluated again."""
    texts = [" ".join(map(str, [*a["that"], *a["when"], a["fail_msg"], *a["vars"].values()]))
             for a in role_asserts(kit)]
    return frozenset(re.findall(r"\b[a-z_][a-z0-9_]*\b", " ".join(texts)))
