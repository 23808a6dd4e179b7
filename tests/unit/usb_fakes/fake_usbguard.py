"""Stand-in for `usbguard` in unit tests: the "daemon" state is a folder named by $FAKE_USB_STATE.

`list-rules` prints the rules the fake daemon loaded at its last restart (numbered, like the real one);
`generate-policy` prints $FAKE_USB_STATE/generated.
"""
import os
import sys
from pathlib import Path

state = Path(os.environ["FAKE_USB_STATE"])
cmd = sys.argv[1] if len(sys.argv) > 1 else ""
if cmd == "--version":
    print("usbguard 1.1.2 (fake)")
elif cmd == "list-rules":
    running = state / "running"
    if (state / "active").read_text().strip() != "active" or not running.exists():
        sys.exit("IPC connection failure")
    rules = [line for line in running.read_text().splitlines() if line.strip() and not line.startswith("#")]
    for n, rule in enumerate(rules, 1):
        print(f"{n}: {rule}")
elif cmd == "generate-policy":
    print((state / "generated").read_text(), end="")
else:
    sys.exit(f"fake usbguard: unknown command {cmd}")
