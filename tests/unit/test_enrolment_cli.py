"""`deskguard enrolment create|list|revoke` and `deskguard devices approve` through the real entry point."""

from __future__ import annotations

import json

import pytest
from sitetools import deskguard

pytestmark = pytest.mark.unit


@pytest.fixture
def site(site):
    from deskguard.site.inventory import ensure_hosts_file
    from deskguard.store import Store

    ensure_hosts_file(site)
    Store.open(site, create=True).close()
    return site


def test_create_shows_the_token_once_list_never_and_revoke_closes_it(site):
    made = deskguard("enrolment", "create", "--count", "3", "--expires", "2d", "--operator", "tanaka",
                     "--hostname-pattern", "tokyo-*", site=site)
    assert made.returncode == 0, made.stderr
    head, token = made.stdout.splitlines()
    assert token.startswith("dgenrol-") and "3 use(s)" in head and "tokyo-*" in head
    assert "only time the token is shown" in made.stderr
    token_id = head.split()[2].rstrip(":")

    listed = deskguard("enrolment", "list", "--json", site=site)
    [row] = json.loads(listed.stdout)
    assert row["id"] == token_id and row["state"] == "active" and row["uses_allowed"] == 3
    assert token not in listed.stdout and token[8:] not in listed.stdout
    assert token not in deskguard("enrolment", "list", site=site).stdout
    assert token not in deskguard("audit", "log", "--format", "json", site=site).stdout

    gone = deskguard("enrolment", "revoke", token_id, "--reason", "box lost", site=site)
    assert gone.returncode == 0 and "revoked after 0 of 3" in gone.stdout
    assert "already revoked" in deskguard("enrolment", "revoke", token_id, site=site).stdout
    assert "no token that can still enrol" in deskguard("enrolment", "list", site=site).stdout
    [row] = json.loads(deskguard("enrolment", "list", "--all", "--json", site=site).stdout)
    assert row["state"] == "revoked" and row["revoked_reason"] == "box lost"


@pytest.mark.parametrize("args", [["create", "--expires", "soon"], ["create", "--count", "0"],
                                  ["create", "--hostname-pattern", "a b"], ["revoke", "no-such-token"]])
def test_bad_input_is_one_line_and_exit_2(site, args):
    proc = deskguard("enrolment", *args, site=site)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("deskguard: ") and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "dgenrol-" not in proc.stdout


def test_approve_moves_a_pending_laptop_only(site):
    import datetime as dt

    from deskguard.site import module_utils
    from deskguard.store import EnrolmentRequest, Store

    proto = module_utils("deskguard_protocol")
    with Store.open(site) as store:
        _row, token = store.create_enrolment_token(uses=1, lifetime=dt.timedelta(days=1))
        store.enrol_device(EnrolmentRequest(
            token=token, hostname="tokyo-001", serial=None, operator=None, os="debian", os_version=None,
            agent_public_key=proto.public_key_pem(proto.generate_private_key()).decode(),
            wg_public_key="B" * 43 + "=", ssh_user="deskguard", pool="10.77.0.0/24", reserved=("10.77.0.1",),
            requires_approval=True))
        store.register_device("lt-2", "debian", "10.0.0.2", 22, "dgadmin", None)
    assert "pending" in deskguard("devices", "list", site=site).stdout
    ok = deskguard("devices", "approve", "tokyo-001", site=site)
    assert ok.returncode == 0 and "approved" in ok.stdout
    assert "approved already" in deskguard("devices", "approve", "tokyo-001", site=site).stdout
    refused = deskguard("devices", "approve", "lt-2", site=site)
    assert refused.returncode == 2 and "not waiting for approval" in refused.stderr
    assert deskguard("devices", "approve", "nobody", site=site).returncode == 2
