"""docs/role-variables.md is generated from the roles' meta/argument_specs.yml and must match them."""

from __future__ import annotations

import pytest
import roledocs
import yaml

pytestmark = pytest.mark.unit


def test_role_variable_page_matches_the_argument_specs():
    assert roledocs.PAGE.read_text() == roledocs.render(), (
        "docs/role-variables.md is out of date: run `.venv/bin/python tests/roledocs.py`")


def test_every_public_variable_of_every_role_is_on_the_page():
    page = roledocs.PAGE.read_text()
    for specs_file in sorted((roledocs.REPO / "roles").glob("*/meta/argument_specs.yml")):
        role = specs_file.parents[1].name
        assert f"\n## {role}\n" in page
        for name in yaml.safe_load(specs_file.read_text())["argument_specs"]["main"]["options"]:
            assert f"| `{name}` |" in page, name


def test_the_page_drifts_when_a_spec_changes(tmp_path):
    """The check can fail: a changed description changes the rendered page."""
    roles = tmp_path / "roles" / "demo" / "meta"
    roles.mkdir(parents=True)
    spec = {"argument_specs": {"main": {"short_description": "Demo", "options": {
        "demo_minutes": {"type": "int", "default": 5, "description": "Idle minutes | before lock."}}}}}
    (roles / "argument_specs.yml").write_text(yaml.safe_dump(spec))
    first = roledocs.render(tmp_path)
    assert "| `demo_minutes` | int | `5` | Idle minutes \\| before lock. |" in first
    spec["argument_specs"]["main"]["options"]["demo_minutes"]["description"] = "Idle minutes."
    (roles / "argument_specs.yml").write_text(yaml.safe_dump(spec))
    assert roledocs.render(tmp_path) != first
