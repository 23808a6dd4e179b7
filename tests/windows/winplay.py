"""Run a playbook with Ansible's own winrm connection against a loopback responder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def run_playbook(playbook: str, responder, extra_vars: dict | None = None, check: bool = False,
                 timeout: int = 300) -> subprocess.CompletedProcess:
    """`ansible-playbook tests/windows/playbooks/PLAYBOOK` with the kit's ansible.cfg, against `responder`."""
    variables = {"ansible_port": responder.port, **(extra_vars or {})}
    cmd = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(HERE / "inventory.yml"),
           str(HERE / "playbooks" / playbook), "-e", json.dumps(variables)]
    if check:
        cmd.append("--check")
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_RETRY_FILES_ENABLED="0")
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
