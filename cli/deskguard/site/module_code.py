"""The kit's module_utils as code that travels to a laptop: which files a module_utils file pulls in, and
their digests. The agent's deployment (tests/unit/test_agent_code_closure.py) and the nightly run's check of
the agent's installed collector (deskguard.compliance.collector) both rest on it."""

from __future__ import annotations

import ast
import functools
import re

from . import KIT_ROOT, module_utils

MODULE_UTILS = KIT_ROOT / "plugins" / "module_utils"
KIT_NAME = re.compile(r"deskguard_\w+")


def imported(name: str) -> set[str]:
    """The kit's module_utils that NAME imports anywhere in its text (top level, in a function, in a
    try/except), whichever form: `import deskguard_x`, `from ansible.module_utils import deskguard_x`,
    `from ansible.module_utils.deskguard_x import y`."""
    tree = ast.parse((MODULE_UTILS / f"{name}.py").read_bytes(), filename=f"{name}.py")
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            dotted = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            dotted = [node.module or ""] + [alias.name for alias in node.names]
        else:
            continue
        for text in dotted:
            found.update(part for part in text.split(".") if KIT_NAME.fullmatch(part))
    return {n for n in found if (MODULE_UTILS / f"{n}.py").exists()} - {name}


def closure(name: str) -> set[str]:
    """NAME and every kit module_utils it reaches through imports."""
    seen, todo = {name}, [name]
    while todo:
        for dep in imported(todo.pop()) - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


@functools.cache
def digests(name: str) -> dict[str, str]:
    """The digest of each file of NAME's closure, by the laptop's own definition (deskguard_agent_posture)."""
    digest = module_utils("deskguard_agent_posture").file_digest
    return {n: digest((MODULE_UTILS / f"{n}.py").read_bytes()) for n in sorted(closure(name))}
