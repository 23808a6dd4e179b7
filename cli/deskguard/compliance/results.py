"""What every judge of the nightly run returns and raises: one Result per control, PolicyError for a policy the
kit cannot use. Its own module so that the judges (accounts.py, network.py, software.py, windows.py, policy.py)
and evaluate.py, which collects their JUDGES, do not import each other."""

from __future__ import annotations

from dataclasses import dataclass, field

# warn: "pass with a warning": the control is met, but the evidence names something to look at (a keyslot
# with a weak PBKDF). Compliant and scored as passed, but never shown as a bare pass beside a finding.
# not_checked: the control applies but the kit could not read what enforces it here (LCK-001 on a desktop other
# than GNOME, or none found): never a pass; left out of the score like not_applicable, and a mandatory
# control not checked keeps the host from being compliant.
STATUSES = ("pass", "warn", "fail", "error", "waived", "not_applicable", "not_checked")
PASSING = ("pass", "warn")
# How a status reads to a person (terminal tables); JSON, CSV and JUnit keep the tokens above.
STATUS_WORDS = {"pass": "pass", "warn": "pass with a warning", "fail": "fail", "error": "error",
                "waived": "waived", "not_applicable": "not applicable", "not_checked": "not checked"}


@dataclass
class Result:
    id: str
    status: str
    observed: object = None
    expected: object = None
    evidence: list[str] = field(default_factory=list)
    title: str = ""
    severity: str = ""
    remediation: str = ""

    def to_dict(self) -> dict:
        # Not dataclasses.asdict: its deep copy of `observed` was a third of judging a check-in (nothing
        # mutates a result's values once judged; tests/bench/comply_checkins.py).
        return {**self.__dict__, "evidence": list(self.evidence)}


def settle(r: Result) -> Result:
    """A pass whose evidence names a finding is a pass with a warning (one rule for every judge)."""
    if r.status == "pass" and r.evidence:
        r.status = "warn"
    return r


class PolicyError(ValueError):
    """The policy's compliance part is unusable (a waiver without reason/expiry, an unknown control)."""


def _check(result_id: str, observed: dict, expected: dict, problems: list[str]) -> Result:
    return Result(result_id, "fail" if problems else "pass", observed, expected, problems)
