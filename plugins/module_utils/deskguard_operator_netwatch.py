"""`deskguard-network-check` (root): the laptop's own network check for the operator, run at every network
change (NetworkManager's dispatcher, networkd-dispatcher: both start deskguard-network-check.service) — the
same observation (deskguard_network.gather, with the targets the network_posture role left) judged by the same
NET-001..003 judges as the nightly run (deskguard_network_judges, with the policy the role left beside the
targets), and the same words as `deskguard netcheck --lang` (deskguard_operator_network).

What it keeps for the operator's session is only the words' keys: /var/lib/deskguard-status/network.json (0644:
the messages and their parameters, the control statuses; no address, driver, BSSID or evidence). Then it wakes
every running deskguard-notify (SIGUSR1, only a process that catches it, so none is ended by a signal it is
not ready for), which says it in the operator's language within the quiet hours and the
per-kind limit (deskguard_operator_notify). At login the session's deskguard-notify reads the same file: the
verdict of the last network change. Pure Python 3.9+ stdlib; docs/operators.md.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

try:  # inside a module (Ansiballz) the kit's module_utils live under ansible.module_utils
    from ansible.module_utils import deskguard_network, deskguard_network_judges
    from ansible.module_utils import deskguard_operator_network as operator_network
    from ansible.module_utils import deskguard_operator_status as operator_status
except ImportError:  # unit tests, the controller and the agent import them as plain modules
    import deskguard_network
    import deskguard_network_judges
    import deskguard_operator_network as operator_network
    import deskguard_operator_status as operator_status

NETWORK_FILE = "network.json"
WAKE = signal.SIGUSR1
NOTIFIER = "deskguard-notify"
_GATHER_KEYS = ("targets", "vpn_interface", "time_limit", "probe_timeout", "samples", "sample_timeout")


def policy_of(cfg):
    """The judges' policy from what the network_posture role left (network-posture.json)."""
    policy = {k: v for k, v in (cfg.get("policy") or {}).items() if k in deskguard_network_judges.POLICY_KEYS}
    policy.setdefault("network_posture_call_system", cfg.get("targets") or [])
    return policy


def verdict(network, policy, now):
    """What the operator's session needs: the statuses and the words' keys, nothing else."""
    controls = deskguard_network_judges.judge_all(network, policy)
    return {"checked_at": int(now), "trouble": any(c["status"] == "fail" for c in controls),
            "controls": {c["id"]: c["status"] for c in controls},
            "messages": [[message, params] for message, params in operator_network.messages(controls)]}


def check(root="/", status_dir=operator_status.STATUS_DIR, now=None, gather=deskguard_network.gather):
    cfg = deskguard_network.read_config(root)
    network = gather(root=root, **{k: cfg[k] for k in _GATHER_KEYS if k in cfg})
    data = verdict(network, policy_of(cfg), time.time() if now is None else now)
    operator_status.save(data, status_dir, NETWORK_FILE)
    return data


def catches_wake(status_text):
    """Does /proc/PID/status say the process catches the wake signal? (SigCgt, not SigBlk: while a process waits
    in sigtimedwait the kernel shows the signals it waits for as unblocked.)"""
    for line in status_text.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (int(WAKE) - 1) & 1)
    return False


def wake_notifiers(proc="/proc", kill=os.kill):
    """SIGUSR1 to every waiting deskguard-notify loop (not a --once run); returns their pids."""
    woken = []
    for pid in filter(str.isdigit, os.listdir(proc)):
        try:
            with open(os.path.join(proc, pid, "cmdline"), "rb") as fh:
                argv = fh.read().decode(errors="replace").split("\0")
            if not any(os.path.basename(a) == NOTIFIER for a in argv[:2]) or "--once" in argv:
                continue
            with open(os.path.join(proc, pid, "status")) as fh:
                if not catches_wake(fh.read()):
                    continue
            kill(int(pid), WAKE)
            woken.append(int(pid))
        except (OSError, ValueError):
            continue   # gone meanwhile, or not ours to read
    return woken


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] not in ([], ["--reason"]) or len(argv) not in (0, 2):
        print("usage: deskguard-network-check [--reason TEXT]", file=sys.stderr)
        return 2
    reason = argv[1] if argv else "manual"
    data = check()
    woken = wake_notifiers()
    line = "network check (%s): %s; %d notifier(s) woken" % (
        " ".join(reason.split())[:80], " ".join("%s %s" % kv for kv in sorted(data["controls"].items())), len(woken))
    print(line)
    try:
        subprocess.run(["logger", "-t", "deskguard-agent", "--", line], timeout=10, capture_output=True)
    except (OSError, subprocess.SubprocessError):
        pass
    return 0
