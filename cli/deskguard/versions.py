"""What `deskguard --version` reports: the kit, ansible-core, and the collections the kit's content uses,
read from installed metadata (no Ansible import, so it stays fast)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import platform
from pathlib import Path

# The collections our roles and playbooks call (ansible-lint checks they resolve).
COLLECTIONS = ("ansible.posix", "ansible.windows", "community.crypto", "community.general", "community.windows")


def _dist(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def collection_versions() -> dict[str, str]:
    spec = importlib.util.find_spec("ansible_collections")
    roots = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    found = {}
    for name in COLLECTIONS:
        found[name] = "not installed"
        for root in roots:
            manifest = root.joinpath(*name.split("."), "MANIFEST.json")
            if manifest.is_file():
                found[name] = json.loads(manifest.read_text())["collection_info"]["version"]
                break
    return found


def report() -> dict:
    return {"deskguard": _dist("deskguard"), "ansible-core": _dist("ansible-core"), "ansible": _dist("ansible"),
            "ansible-runner": _dist("ansible-runner"), "python": platform.python_version(),
            "collections": collection_versions()}


def text() -> str:
    r = report()
    lines = [f"deskguard {r['deskguard']}",
             f"  ansible-core {r['ansible-core']} (ansible {r['ansible']}, ansible-runner {r['ansible-runner']})",
             f"  python {r['python']}"]
    lines += [f"  {name} {version}" for name, version in r["collections"].items()]
    return "\n".join(lines)
