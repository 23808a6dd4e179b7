"""Check-in-first nightly run (policy `deskguard_comply_evidence: checkin_first`, docs/compliance.md).

At 10,000 home laptops, most of them off at night, contacting each over SSH first does not scale. A laptop
whose policy says check-in first and whose agent's signed check-in is fresh enough is judged here, in the
controller's process, from that check-in, with the same judge the play uses (deskguard.compliance.judge) and
the same host policy Ansible would give it (its inventory variables, templated); only the other laptops are
left for the play. The judged hosts reach the run's record through a file the callback plugin merges
(``PREJUDGED_ENV``), so the run is still one run, recorded in one transaction."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DeskguardError, UsageError
from . import evidence
from . import policy as dgpolicy
from .evaluate import host_summary
from .judge import judge
from .results import PolicyError
from .runs import HostRecord

PREJUDGED_ENV = "DESKGUARD_PREJUDGED"
POWERSHELL_CONNECTIONS = ("winrm", "psrp")


@dataclass
class Split:
    judged: dict[str, HostRecord] = field(default_factory=dict)   # host -> judged from its fresh check-in
    live: list[str] = field(default_factory=list)                 # hosts the play must contact


def split(site: Path, limit: str | None, group: str, force_live=(), now: dt.datetime | None = None) -> Split:
    """The hosts of GROUP (limited by LIMIT) judged from fresh check-ins, and the rest. force_live: hosts
    always left to the play (after `--fix`, the repair must be seen live, not in the check-in before it)."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    from ..site import inventory
    from ..store import Store

    loader = DataLoader()
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        inv = InventoryManager(loader=loader, sources=[str(inventory.hosts_file(site))])
        try:
            inv.subset(limit)
            hosts = inv.get_hosts(group)
        except Exception as exc:  # AnsibleError: a limit file that cannot be read, a bad regex
            raise UsageError(f"--limit {limit}: {' '.join(str(exc).split())[:200]}") from None
    variables = VariableManager(loader=loader, inventory=inv)
    out, candidates = Split(), {}
    for host in hosts:
        hostvars = variables.get_vars(host=host, include_hostvars=False)
        uuid = hostvars.get("deskguard_device_uuid")
        try:
            policy = dgpolicy.host_policy(hostvars, Templar(loader=loader, variables=hostvars).template)
        except Exception:  # noqa: BLE001  a policy that does not template: the play says why, for this host
            policy = None
        if policy and uuid and host.name not in force_live and evidence.checkin_first(policy):
            candidates[host.name] = (uuid, policy, hostvars)
        else:
            out.live.append(host.name)
    if not candidates:
        return out
    with Store.open(site) as store, store.reading_ahead(uuid for uuid, _, _ in candidates.values()):
        found = evidence.latest_checkins(store, {uuid: policy for uuid, policy, _ in candidates.values()}, now)
        for name, (uuid, policy, hostvars) in candidates.items():
            checkin = found.get(uuid)
            record = _judged(store, name, uuid, policy, hostvars, checkin) if checkin and not checkin.stale else None
            if record is None:
                out.live.append(name)
            else:
                out.judged[name] = record
    out.live.sort()
    return out


def _judged(store, name: str, uuid: str, policy: dict, hostvars: dict, checkin) -> HostRecord | None:
    """The host's record from its check-in; None when its policy or escrow records cannot be used: the play
    then fails the host with the reason, as for any host."""
    windows_host = (hostvars.get("ansible_connection") in POWERSHELL_CONNECTIONS
                    or hostvars.get("ansible_shell_type") == "powershell")
    try:
        dgpolicy.posture_params(policy)   # what the play checks before collecting: the same refusals
        results = judge(store, name, uuid, policy, {"posture": checkin.posture, "errors": checkin.errors},
                        windows_host)
    except (PolicyError, DeskguardError):
        return None
    return HostRecord("ok", [r.to_dict() for r in results], host_summary(results),
                      message=checkin.describe(contacted=False), device_uuid=uuid, source="checkin",
                      evidence_at=checkin.collected_at)


def write_prejudged(path: Path, judged: dict[str, HostRecord]) -> None:
    """For the callback plugin, which records them with the play's hosts (runs are not secret: 0600 anyway)."""
    rows = {name: {**vars(h), "evidence_at": h.evidence_at.isoformat() if h.evidence_at else None}
            for name, h in judged.items()}
    path.touch(mode=0o600)
    path.write_text(json.dumps(rows))


def read_prejudged(path: str | None) -> dict[str, HostRecord]:
    if not path:
        return {}
    rows = json.loads(Path(path).read_text())
    return {name: HostRecord(**{**row, "evidence_at": dt.datetime.fromisoformat(row["evidence_at"])
                                if row.get("evidence_at") else None}) for name, row in rows.items()}
