"""The accounts policy, checked on the controller before anything changes (ACC-001..005).

`refusals` lists what would cost IT the management channel or harden nobody: the play stops on any of them
before the first change (onboard.yml's pre-tasks and the role's first task). `warnings` lists password and
lockout values weaker than the kit's minimums: applied as asked, but said out loud.
"""

from __future__ import annotations

# The kit's minimums (below them a policy is warned, not refused: the company may have a reason).
MINIMUMS = {"accounts_password_minlen": 12, "accounts_password_minclass": 3, "accounts_password_remember": 5}
MAX_LOCKOUT_DENY = 10
MIN_UNLOCK_SECONDS = 300


def operator_name(policy: dict) -> str:
    return str(policy.get("accounts_operator") or policy.get("deskguard_operator") or "").strip()


def management_name(policy: dict) -> str:
    return str(policy.get("accounts_management_user") or policy.get("ansible_user") or "").strip()


def refusals(policy: dict) -> list[str]:
    operator, manager = operator_name(policy), management_name(policy)
    standard = [str(u) for u in policy.get("accounts_standard_users") or []]
    allow_users = [str(u) for u in policy.get("accounts_ssh_allow_users") or []]
    out = []
    if not operator:
        out.append("no operator account: onboard with --user NAME (deskguard_operator) or set accounts_operator")
    if not manager:
        out.append("no management account: set ansible_user (or accounts_management_user)")
    elif manager == "root":
        out.append("the management account is root, but root login is turned off (PermitRootLogin no): "
                   "manage the laptop through a dedicated account with sudo")
    if operator and operator == manager:
        out.append(f"the operator {operator!r} is also the management account: the operator loses sudo, "
                   "so IT would lose it too; manage through a dedicated account")
    if manager and manager in standard:
        out.append(f"accounts_standard_users lists the management account {manager!r}: it would lose sudo")
    if manager and allow_users and manager not in allow_users:
        out.append(f"accounts_ssh_allow_users {allow_users} leaves out the management account {manager!r}: "
                   "sshd would refuse IT")
    for name in allow_users:
        if name == operator or name in standard:
            out.append(f"accounts_ssh_allow_users lets the standard user {name!r} in over SSH; "
                       "only the management account belongs there")
    return out


def warnings(policy: dict) -> list[str]:
    out = []
    for key, minimum in MINIMUMS.items():
        value = policy.get(key)
        if value is not None and int(value) < minimum:
            out.append(f"{key} is {value}, below the kit's minimum of {minimum}")
    deny = policy.get("accounts_lockout_deny")
    if deny is not None and not 0 < int(deny) <= MAX_LOCKOUT_DENY:
        out.append(f"accounts_lockout_deny is {deny}: accounts should lock after 1..{MAX_LOCKOUT_DENY} failures")
    unlock = policy.get("accounts_lockout_unlock_seconds")
    if unlock is not None and 0 < int(unlock) < MIN_UNLOCK_SECONDS:
        out.append(f"accounts_lockout_unlock_seconds is {unlock}, below {MIN_UNLOCK_SECONDS} s: guessing "
                   "passwords stays cheap")
    return out
