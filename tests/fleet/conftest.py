"""The `lab down` test tears the whole lab down: it runs after every other lab test of the session."""

from __future__ import annotations


def pytest_collection_modifyitems(config, items):
    down = [item for item in items if item.path.name == "test_lab_down.py"]
    if down:
        items[:] = [item for item in items if item.path.name != "test_lab_down.py"] + down
