"""The demo test runs last in the container tier: it starts the lab from nothing (as a new user's first
`deskguard demo` does), so it brings down the lab the other container tests share."""

from __future__ import annotations


def pytest_collection_modifyitems(config, items):
    demo = [item for item in items if item.path.name == "test_demo.py"]
    if demo:
        items[:] = [item for item in items if item.path.name != "test_demo.py"] + demo
