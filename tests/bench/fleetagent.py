"""The lab's fleet hosts as laptops onboarded with the check-in agent, for the nightly-run bench (`comply.py
--agent`): each has a device id in the bench's store and in its host variables, the policy turns the agent
on, and the agent's code is at /usr/lib/deskguard-agent as its install step leaves it (the role's files and
the bytecode deskguard_bytecode writes), so the nightly run reads the posture through `deskguard-agent
posture` as on an onboarded laptop.

A fleet host shares this machine's /usr, so the code is a read-only overlay layer over /usr/lib mounted in
each host's own mount namespace (the one its sshd runs in): nothing of this machine changes, and the mount
goes with the host (the layer's folder, /var/tmp/deskguard-bench-agent-*, stays until removed). What a fleet
host lacks (the agent's configuration, its timer) fails AGT-001; the bench measures cost, not verdicts.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
LIB = "/usr/lib"


def build_layer(root: Path) -> Path:
    """root/lib/deskguard-agent with the agent's code and launcher and their bytecode; returns root/lib."""
    from deskguard.site import module_utils

    code = root / "lib" / "deskguard-agent"
    code.mkdir(parents=True)
    names = yaml.safe_load((REPO / "roles/endpoint_agent/vars/main.yml").read_text())["__endpoint_agent_modules"]
    for name in names:
        shutil.copy(REPO / "plugins" / "module_utils" / f"{name}.py", code)
    shutil.copy(REPO / "roles/endpoint_agent/files/deskguard-agent", code)
    (code / "deskguard-agent").chmod(0o755)
    written, why_not = module_utils("deskguard_bytecode").write(str(code))   # the fleet's /usr/bin/python3
    if why_not:
        raise SystemExit(f"bench: the agent's bytecode was not written: {why_not}")
    root.chmod(0o755)
    return root / "lib"


def mount_layer(names: list[str], layer: Path) -> None:
    """The layer over /usr/lib in each host's mount namespace. An earlier bench's layer is detached first
    (lazily: the host's sshd and its sessions keep files of it open)."""
    from deskguard.lab.state import LabState

    hosts = LabState.load().hosts
    for name in names:
        pid = hosts[name].pid
        ns = ["nsenter", f"--mount=/proc/{pid}/ns/mnt", "--"]
        mounts = Path(f"/proc/{pid}/mountinfo").read_text()
        if any(line.split()[4] == LIB and " - overlay " in line for line in mounts.splitlines()):
            subprocess.run([*ns, "umount", "--lazy", LIB], check=True)
        subprocess.run([*ns, "mount", "-t", "overlay", "overlay", "-o", f"ro,lowerdir={layer}:{LIB}", LIB], check=True)


def onboard(site: Path, names: list[str]) -> Path:
    """A device per host in the site's store; an inventory file giving each host its device id."""
    from deskguard.lab.state import LabState
    from deskguard.store import Store

    hosts = LabState.load().hosts
    with Store.open(site) as store, store.transaction():
        uuids = {n: store.register_device(n, "debian", hosts[n].address, 22, "root", None).uuid for n in names}
    path = site / "bench-agent-inventory.yml"
    path.write_text(yaml.safe_dump({"all": {"hosts": {n: {"deskguard_device_uuid": u} for n, u in uuids.items()}}}))
    return path


def install(site: Path, names: list[str], root: Path) -> tuple[Path, list[str]]:
    """(the inventory file to add, the extra variables) for runs over NAMES as onboarded agent laptops."""
    mount_layer(names, build_layer(root))
    return onboard(site, names), ["endpoint_agent_enabled=true"]
