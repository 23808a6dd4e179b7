"""`deskguard comply`: run comply.yml, read the recorded run back, compare it with the previous one, and
(with --fix) repair the failing controls on the failing hosts, then check again and say what the second run
found: fixed only what now passes, every control still failing listed."""

from __future__ import annotations

import re
import tempfile
import uuid
from pathlib import Path

from ..errors import DeskguardError
from .catalog import CONTROLS

# A policy line that sets check-in first (in YAML or JSON); a commented-out one does not.
CHECKIN_FIRST_SET = re.compile(r"""^[^#\n]*["']?deskguard_comply_evidence["']?\s*:\s*["']?checkin_first""", re.M)


def run_once(site: Path, limit: str | None, progress=None, force_live=()):
    """(playbook result, or None when no laptop had to be contacted; recorded run; previous run).
    ``progress(n)`` builds the display of a play over n hosts. Laptops whose policy says check-in first are
    judged from their fresh check-ins before the play, which contacts only the others (force_live: always)."""
    from ..runner import run_playbook
    from ..site import inventory
    from ..store import Store
    from ..store.models import utcnow
    from . import checkin_first, runs

    inventory.require_hosts(site)
    check_policy(site)
    run_id, started = str(uuid.uuid4()), utcnow()
    envvars = {"DESKGUARD_RUN_ID": run_id, "DESKGUARD_RUN_SOURCE": "cli"}
    parts = (checkin_first.split(site, limit, inventory.DEFAULT_GROUP, set(force_live))
             if force_live or _may_judge_from_checkins(site) else None)
    with tempfile.TemporaryDirectory(prefix="deskguard-comply-") as tmp:
        result = None
        if parts is None or not parts.judged:
            if parts is not None:   # every host was weighed here: none is taken from a check-in by the play
                envvars["DESKGUARD_COMPLY_EVIDENCE"] = "live"
            result = run_playbook(site, "comply.yml", [inventory.hosts_file(site)], limit=limit, envvars=envvars,
                                  progress=progress(len(parts.live) if parts else _count(site, limit))
                                  if progress else None)
        elif parts.live:
            judged, live = Path(tmp) / "prejudged.json", Path(tmp) / "live-hosts"
            checkin_first.write_prejudged(judged, parts.judged)
            live.write_text("".join(f"{h}\n" for h in parts.live))
            # The play contacts the rest (live: its plugin must not take a check-in again) and records them
            # with the judged hosts, as one run.
            result = run_playbook(site, "comply.yml", [inventory.hosts_file(site)], limit=f"@{live}",
                                  envvars={**envvars, checkin_first.PREJUDGED_ENV: str(judged),
                                           "DESKGUARD_COMPLY_EVIDENCE": "live"},
                                  progress=progress(len(parts.live)) if progress else None)
        else:
            with Store.open(site) as store:
                runs.record(store, run_id, started, "cli", parts.judged)
    with Store.open(site) as store:
        recorded = runs.load(store, run_id)
        if recorded is None:
            if result is not None and result.interrupted:
                raise DeskguardError("interrupted: no run was recorded", exit_code=result.exit_code)
            why = next((n for n in result.notices if "NOT recorded" in n), None) if result else None
            raise DeskguardError(why or f"the compliance run was not recorded ({_why_not(result)}); nothing to report")
        return result, recorded, runs.previous(store, recorded)


def _may_judge_from_checkins(site: Path) -> bool:
    """Whether an inventory file sets check-in first: only then is every host's policy read here (~0.7 ms a
    host). A policy that reaches it otherwise (a template) is still honoured, host by host, by the play."""
    from ..site import inventory

    return any(CHECKIN_FIRST_SET.search(path.read_text(errors="replace"))
               for path in inventory.inventory_dir(site).rglob("*") if path.suffix in (".yml", ".yaml", ".json")
               and path.is_file())


def _count(site: Path, limit: str | None) -> int:
    from ..site import inventory

    return len(inventory.play_hosts(site, limit))


def checkpoint_audit(site: Path) -> str | None:
    """After a run (the nightly one included): sign the audit chain's head into the checkpoint file
    (deskguard.store.auditcheckpoint). None if written, else why not (the run's report stands either way)."""
    from ..errors import DeskguardError
    from ..store import Store, auditcheckpoint

    try:
        with Store.open(site) as store:
            auditcheckpoint.record(site, store)
    except (DeskguardError, OSError) as exc:
        return f"audit checkpoint not written: {exc}"
    return None


def _why_not(result) -> str:
    """What the run itself said (no message may have been shown: -q, or no host answered at all)."""
    if result is None:
        return "no play ran: every host was judged from its check-in"
    said = [f"{host}: {m}" for host, h in sorted(result.hosts.items()) for m in h.messages[:1]] + result.notices
    return said[0][:300] if said else f"ansible-playbook ended {result.status}, exit {result.rc}, with no host result"


def check_policy(site: Path) -> None:
    """Before anything runs: the site has a policy and it passes deskguard.site.policyfile.check (one clear line
    otherwise, not Ansible's inventory traceback and an unrecorded run)."""
    from ..site import policyfile
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
    """Run onboard.yml with only the failing controls' roles, one host group per distinct role set.
    ``progress(n)`` builds the display of a run over n hosts."""
    from ..site import inventory
    from ..runner import run_playbook

    by_roles: dict[tuple, list[str]] = {}
    for host, roles in targets.items():
        by_roles.setdefault(tuple(roles), []).append(host)
    results = []
    for roles, hosts in by_roles.items():
        limit = ",".join(hosts)
        results.append(run_playbook(site, "onboard.yml", [inventory.hosts_file(site)], limit=limit,
                                    extravars={"deskguard_hosts": limit},
                                    tags=",".join(roles), progress=progress(len(hosts)) if progress else None))
    return results


def fix_outcome(before, after, targets: dict[str, list[str]], plays, skipped: list[str]) -> dict:
    """What --fix achieved, judged by the run made after the repair (a fresh posture of every host):
    {fixed: {host: [control]}, still_failing: {host: {control: first reason}}, never_onboarded: [host],
    notes: {host: ["CONTROL: what the repair did or why it failed"]}}. still_failing covers every onboarded
    host, also the controls --fix cannot repair (NET-*). A repaired host that could not be collected again is
    still failing ("HOST"): nothing proves the repair."""
    fixed, still, notes = {}, {}, {}
    onboarded = {host for host, h in after.hosts.items() if h.get("device_uuid")}
    for host in sorted(onboarded | set(targets)):
        was = (before.hosts.get(host) or {"results": {}})["results"]
        now = after.hosts.get(host) or {"state": "not in the run", "message": None, "results": {}}
        if now["state"] != "ok":
            still[host] = {"HOST": f"{now['state']}: {now.get('message') or 'not collected after the repair'}"}
            continue
        fixed_here = sorted(cid for cid, r in now["results"].items()
                            if r["status"] == "pass" and was.get(cid, {}).get("status") in ("fail", "error"))
        failing = {cid: (r["evidence"] or [r["status"]])[0] for cid, r in sorted(now["results"].items())
                   if r["status"] in ("fail", "error")}
        if fixed_here:
            fixed[host] = fixed_here
        if failing:
            still[host] = failing
    for play in plays:
        for host, outcome in play.hosts.items():
            said = [f"{cid}: {f}" for cid, found in sorted(outcome.findings.items()) for f in found]
            said += [f"repair failed: {m}" for m in outcome.messages]
            if said:
                notes.setdefault(host, []).extend(said)
    return {"fixed": fixed, "still_failing": still, "never_onboarded": skipped, "notes": notes}
