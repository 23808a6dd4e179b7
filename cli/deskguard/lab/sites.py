"""Sites that manage lab hosts: the demo's, and the lab tests' (tests/sitetools.py).

A site made by `deskguard init` has the example policy, whose management network (10.8.0.0/16) is a real
company's; lab hosts see the controller's SSH from the lab bridge and from qemu's user network instead, and the
firewall role must keep exactly those in."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import UsageError

# Lab only: host keys are not pinned, because every lab host is rebuilt often.
LAB_SSH_ARGS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"


def policy_file(site: Path) -> Path:
    return Path(site) / "inventory" / "group_vars" / "all" / "policy.yml"


def set_policy_lines(site: Path, values: dict, purpose: str, appended: dict | None = None,
                     note: str = "") -> None:
    """Set each key of `values` on its one line of the site policy, keeping every other line (and its comments) as
    `deskguard init` wrote it, and append `appended` under the comment `note`; then read the file back as Ansible
    will. A policy without exactly one line for a key is refused (one line naming `purpose`, nothing written)."""
    from ..fsutil import atomic_write
    from ..site.policyfile import read

    path = policy_file(site)
    text = path.read_text()
    for key, value in values.items():
        line = re.compile(rf"^{key}:.*$", re.M)
        if len(line.findall(text)) != 1:
            raise UsageError(f"{path}: expected one {key} line to {purpose}")
        text = line.sub(lambda _m, key=key, value=value: f"{key}: {json.dumps(value)}", text)
    if appended:
        text += (f"# {note}\n"
                 + "".join(f"{k}: {json.dumps(v)}\n" for k, v in appended.items()))
    atomic_write(path, text)
    got = read(path)
    wrong = [k for k, v in {**values, **(appended or {})}.items() if got.get(k) != v]
    if wrong:
        raise UsageError(f"{path}: {', '.join(wrong)} did not read back as written")


def set_management_networks(site: Path, networks) -> None:
    """Point the site policy's firewall_management_sources at `networks`."""
    set_policy_lines(site, {"firewall_management_sources": list(networks)}, "set the lab's networks")


def unmanaged_hostvars(host) -> dict:
    """How a site reaches a lab host it never onboarded (a fleet host): the lab key, no host-key pinning, and no
    device id, so the nightly run only reads it and `comply --fix` leaves it alone."""
    from .image import lab_key

    return {"ansible_host": host.address, "ansible_port": host.port, "ansible_user": host.user,
            "ansible_ssh_private_key_file": str(lab_key()), "ansible_ssh_common_args": LAB_SSH_ARGS,
            **host.extra.get("hostvars", {})}


# Lab only: plain HTTP on the lab bridge, and the first check-in within seconds of the agent's installation
# (the timer's boot delay has long passed on a running laptop, so it fires as soon as it is enabled; the
# jitter, 300 s by default to spread a fleet, would make the demo wait for it).
LAB_AGENT_EXTRA = {"endpoint_agent_allow_http": True, "endpoint_agent_jitter_seconds": 5}


def enable_agent(site: Path, server_url: str) -> None:
    """Turn the check-in agent on in the site policy, with `deskguard serve` at `server_url` for orders,
    acknowledgements and check-ins; every other line kept. Refuses a policy without the agent's lines."""
    set_policy_lines(site, {"endpoint_agent_enabled": True, "endpoint_agent_orders_url": f"{server_url}/orders",
                            "endpoint_agent_server_url": server_url},
                     "turn the lab's check-in agent on", appended=LAB_AGENT_EXTRA,
                     note="Lab only (`deskguard demo`): plain HTTP on the lab bridge; the first check-in soon after "
                          "installation.")
