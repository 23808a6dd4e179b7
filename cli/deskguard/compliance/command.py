"""`deskguard comply`: run comply.yml, read the recorded run back, compare it with the previous one, and
(with --fix) repair the failing controls on the failing hosts, then check again."""

from __future__ import annotations

import uuid
from pathlib import Path

from ..errors import DeskguardError
from .catalog import CONTROLS


def run_once(site: Path, limit: str | None, progress=None):
    """(playbook result, recorded run, previous run)."""
    from .. import inventory
    from ..runner import run_playbook
    from ..store import Store
    from . import runs

    inventory.require_hosts(site)
    check_policy(site)
    run_id = str(uuid.uuid4())
    result = run_playbook(site, "comply.yml", [inventory.hosts_file(site)], limit=limit,
                          envvars={"DESKGUARD_RUN_ID": run_id, "DESKGUARD_RUN_SOURCE": "cli"}, progress=progress)
    with Store.open(site) as store:
        recorded = runs.load(store, run_id)
        if recorded is None:
            if result.interrupted:
                raise DeskguardError("interrupted: no run was recorded", exit_code=result.exit_code)
            why = next((n for n in result.notices if "NOT recorded" in n), None)
            raise DeskguardError(why or "the compliance run was not recorded (see the messages above); nothing to report")
        return result, recorded, runs.previous(store, recorded)


def check_policy(site: Path) -> None:
    """Before anything runs: the site has a policy and it passes deskguard.policyfile.check (one clear line
    otherwise, not Ansible's inventory traceback and an unrecorded run)."""
    from .. import policyfile
    from ..errors import UsageError

    folder = site / "inventory" / "group_vars" / "all"
    if not (folder.is_dir() and any(folder.glob("*.y*ml"))):
        raise UsageError(f"no policy in {folder} (`deskguard init` writes the example policy.yml)")
    policyfile.check(site)


def fix_targets(run) -> dict[str, list[str]]:
    """host -> the roles (tags) whose controls failed there (not waived, not errors of collection). Only
    onboarded hosts (with a device id): a host that never went through onboarding's preflight (sudo, lockout
    guard, escrow before any key change) is not changed by a repair; `never_onboarded` names those."""
    targets = {host: sorted({CONTROLS[cid].role for cid in _fixable_failures(h)}) for host, h in run.hosts.items()
               if h.get("device_uuid")}
    return {host: roles for host, roles in sorted(targets.items()) if roles}


def never_onboarded(run) -> list[str]:
    """Hosts that fail a control --fix could repair, but which --fix leaves alone: they have no device id."""
    return sorted(host for host, h in run.hosts.items() if not h.get("device_uuid") and _fixable_failures(h))


def _fixable_failures(h: dict) -> list[str]:
    """The controls that failed on a host and that re-applying their role can repair."""
    return [cid for cid, r in h["results"].items() if r["status"] == "fail" and cid in CONTROLS
            and CONTROLS[cid].fixable]


def fix(site: Path, targets: dict[str, list[str]], progress=None):
    """Run onboard.yml with only the failing controls' roles, one host group per distinct role set."""
    from .. import inventory
    from ..runner import run_playbook

    by_roles: dict[tuple, list[str]] = {}
    for host, roles in targets.items():
        by_roles.setdefault(tuple(roles), []).append(host)
    results = []
    for roles, hosts in by_roles.items():
        limit = ",".join(hosts)
        results.append(run_playbook(site, "onboard.yml", [inventory.hosts_file(site)], limit=limit,
                                    extravars={"deskguard_hosts": limit},
                                    tags=",".join(roles), progress=progress))
    return results
