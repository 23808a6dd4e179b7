"""The enrolment part of a site's policy (playbooks/vars/site_argument_specs.yml), checked before use."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..site import policyfile

MAX_RATE = 6000


@dataclass(frozen=True)
class EnrolmentSettings:
    requires_approval: bool = False
    rate_per_minute: int = 60
    management_user: str = "deskguard"


def load(site: Path) -> EnrolmentSettings:
    values = policyfile.load(site, "enrolment_")
    return from_policy(values)


def from_policy(values: dict) -> EnrolmentSettings:
    approval = values.get("enrolment_requires_approval", False)
    if not isinstance(approval, bool):
        raise UsageError(f"policy enrolment_requires_approval: {str(approval)[:20]!r} is not true or false")
    rate = values.get("enrolment_rate_per_minute", 60)
    if isinstance(rate, bool) or not isinstance(rate, int) or not 1 <= rate <= MAX_RATE:
        raise UsageError(f"policy enrolment_rate_per_minute: {str(rate)[:20]!r} is not a whole number from 1 to "
                         f"{MAX_RATE}")
    user = values.get("enrolment_management_user", "deskguard")
    if not isinstance(user, str) or not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user):
        raise UsageError(f"policy enrolment_management_user: {str(user)[:40]!r} is not a Linux user name "
                         "(lower-case letters, digits, _ and -)")
    return EnrolmentSettings(approval, rate, user)
