"""Stand-in for `systemctl` on usbguard.service: state in $FAKE_USB_STATE; `restart` makes the fake daemon
load $FAKE_USB_RULES, or fails when the file $FAKE_USB_STATE/fail-restart exists. Calls are logged."""
import os
import shutil
import sys
from pathlib import Path

state = Path(os.environ["FAKE_USB_STATE"])
with open(state / "calls", "a") as fh:
    fh.write(" ".join(sys.argv[1:]) + "\n")
cmd = sys.argv[1]
if cmd == "is-enabled":
    print((state / "enabled").read_text().strip())
elif cmd == "is-active":
    print((state / "active").read_text().strip())
elif cmd in ("unmask", "daemon-reload"):
    pass
elif cmd == "enable":
    (state / "enabled").write_text("enabled")
elif cmd == "disable":
    (state / "enabled").write_text("disabled")
elif cmd == "stop":
    (state / "active").write_text("inactive")
elif cmd == "restart":
    if (state / "fail-restart").exists():
        (state / "active").write_text("failed")
        sys.exit("Job for usbguard.service failed")
    shutil.copy(os.environ["FAKE_USB_RULES"], state / "running")
    (state / "active").write_text("active")
else:
    sys.exit(f"fake systemctl: unknown command {cmd}")
