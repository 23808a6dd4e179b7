"""execution-environment.yml (ansible-builder v3) makes a real build context, and what it installs is what the
kit is tested with: no container runtime is needed for `ansible-builder create` (the image is not built here)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from deskguard.versions import COLLECTIONS, collection_versions

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
# pyproject runtime dependencies the EE does not take from ee/requirements.txt, and why.
NOT_IN_EE = {"ansible-core": "dependencies.ansible_core", "ansible-runner": "dependencies.ansible_runner",
             "ansible": "the collections come from ee/requirements.yml", "qemu.qmp": "the lab only"}


def _ee_requirements() -> list[Requirement]:
    lines = (REPO / "ee" / "requirements.txt").read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


def test_ansible_builder_create_makes_the_build_context(tmp_path):
    ctx = tmp_path / "context"
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-builder"), "create", "-f",
                           "execution-environment.yml", "-c", str(ctx), "--output-filename", "Containerfile"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    containerfile = (ctx / "Containerfile").read_text()
    assert "ansible-core>=2.19,<2.20" in containerfile
    assert "ansible-galaxy collection install" in containerfile
    assert "pip install --no-cache-dir --no-deps /tmp/deskguard-src" in containerfile
    build = ctx / "_build"
    assert (build / "deskguard" / "pyproject.toml").is_file()
    assert (build / "deskguard" / "cli" / "deskguard" / "store" / "core.py").is_file()
    assert (build / "deskguard" / "cli" / "deskguard" / "store" / "migrations" / "versions").is_dir()
    assert (build / "requirements.txt").read_text() == (REPO / "ee" / "requirements.txt").read_text()
    assert (build / "requirements.yml").read_text() == (REPO / "ee" / "requirements.yml").read_text()
    assert (build / "bindep.txt").is_file()


def test_ee_python_requirements_follow_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = {Requirement(r).name.lower(): Requirement(r) for r in project["dependencies"]}
    runtime.update({Requirement(r).name.lower(): Requirement(r) for r in project["optional-dependencies"]["postgres"]})
    ee = {r.name.lower(): r for r in _ee_requirements()}
    expected = {name for name in runtime if name not in NOT_IN_EE}
    assert set(ee) == expected, (set(ee) ^ expected)
    for name, req in ee.items():
        assert req.specifier == runtime[name].specifier, name
    builder = yaml.safe_load((REPO / "execution-environment.yml").read_text())
    assert builder["version"] == 3
    for key, name in (("ansible_core", "ansible-core"), ("ansible_runner", "ansible-runner")):
        assert Requirement(builder["dependencies"][key]["package_pip"]).specifier == runtime[name].specifier, key


def test_the_tested_environment_satisfies_the_ee_pins():
    """The versions in this venv (where every test runs) are inside the EE's ranges."""
    for req in _ee_requirements():
        assert req.specifier.contains(importlib.metadata.version(req.name), prereleases=True), req
    wanted = {c["name"]: c["version"] for c in
              yaml.safe_load((REPO / "ee" / "requirements.yml").read_text())["collections"]}
    assert set(wanted) == set(COLLECTIONS)
    for name, version in collection_versions().items():
        assert SpecifierSet(wanted[name]).contains(version), (name, version, wanted[name])
