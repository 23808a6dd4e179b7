"""The enrolment test runs next to last in the container tier: it leaves its laptops changed beyond what the
other tests expect (a "home router" firewall, the enrolment package, a tunnel into its own pool), so only the
demo test follows it, and that one starts the lab from nothing (as a new user's first `deskguard demo` does),
bringing down the lab the other container tests share."""

from __future__ import annotations

LAST = ("test_enrolment_container.py", "test_demo.py")


def pytest_collection_modifyitems(config, items):
    tail = [item for name in LAST for item in items if item.path.name == name]
    if tail:
        items[:] = [item for item in items if item.path.name not in LAST] + tail
