"""A small synchronous QMP client for the lab's laptop VMs, on top of `qemu.qmp` (imported lazily).

Every failure becomes one LabError line naming the VM; callers never see asyncio or socket errors.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import LabError

DEFAULT_TIMEOUT = 30.0


def _connect_error_text(name: str, sock: Path, exc: BaseException) -> str:
    return (f"{name}'s QMP socket {sock} does not answer ({exc.__class__.__name__}): the VM is not running; "
            f"run `deskguard lab up --laptops 1`")


@contextmanager
def monitor(sock: Path, name: str, timeout: float = DEFAULT_TIMEOUT):
    """Connected QMP monitor for the VM `name` (capabilities negotiated); closed on exit."""
    sock = Path(sock)
    if not sock.exists():
        raise LabError(f"{name}'s QMP socket {sock} is missing: the VM is not running; "
                       f"run `deskguard lab up --laptops 1`")
    from qemu.qmp.legacy import QEMUMonitorProtocol

    mon = QEMUMonitorProtocol(str(sock), nickname=name)
    mon.settimeout(timeout)
    try:
        mon._sync(mon._qmp.connect(str(sock)), timeout)  # connect() itself has no timeout
    except Exception as exc:  # ConnectError, TimeoutError, OSError
        try:
            mon.close()
        except Exception:
            pass
        raise LabError(_connect_error_text(name, sock, exc)) from None
    try:
        yield Monitor(mon, name)
    finally:
        try:
            mon.close()
        except Exception:
            pass


class Monitor:
    def __init__(self, mon, name: str):
        self._mon = mon
        self.name = name

    def cmd(self, command: str, **args):
        """Run a QMP command; a QMP error or a lost connection becomes a LabError."""
        from qemu.qmp import ExecuteError

        try:
            return self._mon.cmd(command, **args)
        except ExecuteError as exc:
            desc = getattr(getattr(exc, "error", None), "error", None)
            raise LabError(f"{self.name}: QMP {command} failed: {getattr(desc, 'desc', None) or exc}") from None
        except (TimeoutError, OSError, EOFError) as exc:
            raise LabError(f"{self.name}: QMP {command} got no answer ({exc.__class__.__name__})") from None
        except Exception as exc:  # qemu.qmp's connection-state errors
            raise LabError(f"{self.name}: QMP {command} failed ({exc.__class__.__name__}: {exc})") from None

    def status(self) -> str:
        return self.cmd("query-status")["status"]

    def wait_status(self, wanted: set[str], timeout: float, alive=None) -> str:
        """Poll query-status until the run state is one of `wanted`."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if st in wanted:
                return st
            if alive is not None and not alive():
                raise LabError(f"{self.name}: qemu exited while in state {st!r}")
            if time.monotonic() > deadline:
                raise LabError(f"{self.name}: still {st!r} after {timeout:.0f} s (wanted {sorted(wanted)})")
            time.sleep(0.1)

    def peripherals(self) -> dict[str, str]:
        """Devices added with an id (-device id=… or device_add): id → QOM type (e.g. usb-storage)."""
        out = {}
        for prop in self.cmd("qom-list", path="/machine/peripheral"):
            t = prop.get("type", "")
            if t.startswith("child<") and t.endswith(">"):
                out[prop["name"]] = t[len("child<"):-1]
        return out

    def block_nodes(self) -> set[str]:
        return {n.get("node-name") for n in self.cmd("query-named-block-nodes", flat=True)}

    def quit(self) -> None:
        """Ask qemu to exit; the connection dropping right after is the expected answer."""
        try:
            self._mon.cmd("quit")
        except Exception:
            pass
