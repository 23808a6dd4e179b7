"""A freedesktop notification server that only records: owns org.freedesktop.Notifications on the session bus
given in DBUS_SESSION_BUS_ADDRESS and writes each Notify call as one JSON line to the file named in argv[1]
(app_name, summary, body, urgency, expire_timeout). Run as a process by tests/unit/test_operator_notify.py."""

from __future__ import annotations

import asyncio
import json
import sys

from dbus_next.aio import MessageBus
from dbus_next.service import ServiceInterface, method


class Notifications(ServiceInterface):
    def __init__(self, out):
        super().__init__("org.freedesktop.Notifications")
        self.out, self.count = out, 0

    @method()
    def Notify(self, app_name: "s", replaces_id: "u", app_icon: "s", summary: "s", body: "s",  # noqa: F821
               actions: "as", hints: "a{sv}", expire_timeout: "i") -> "u":  # noqa: F821, F722
        self.count += 1
        urgency = hints["urgency"].value if "urgency" in hints else None
        with open(self.out, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"app_name": app_name, "summary": summary, "body": body, "urgency": urgency,
                                 "expire_timeout": expire_timeout, "icon": app_icon}, ensure_ascii=False) + "\n")
        return self.count

    @method()
    def GetCapabilities(self) -> "as":  # noqa: F722
        return ["body"]

    @method()
    def GetServerInformation(self) -> "ssss":  # noqa: F821
        return ["deskguard-test-capture", "deskguard", "1", "1.2"]


async def main(out):
    bus = await MessageBus().connect()
    bus.export("/org/freedesktop/Notifications", Notifications(out))
    await bus.request_name("org.freedesktop.Notifications")
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
