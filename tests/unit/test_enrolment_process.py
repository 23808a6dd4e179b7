"""`deskguard enrolment process` decides whom to onboard and how it reports, with the onboarding and the gateway
push stood in (the real ones over a real tunnel: tests/container/test_enrolment_container.py)."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from test_enrolment_serve import make_site

from deskguard.errors import EXIT_HOST_FAILED, EXIT_OK, EXIT_UNREACHABLE
from deskguard.onboarding.preflight import Unreachable
from deskguard.runner import PlaybookResult
from deskguard.site import module_utils
from deskguard.store import EnrolmentRequest, Store

pytestmark = pytest.mark.unit
P = module_utils("deskguard_protocol")


def enrol(site, hostname, *, approval=False, operator="tanaka"):
    with Store.open(site) as store:
        _row, token = store.create_enrolment_token(uses=1, lifetime=dt.timedelta(days=1), operator=operator)
        store.enrol_device(EnrolmentRequest(
            token=token, hostname=hostname, serial=None, operator=None, os="debian", os_version="13",
            agent_public_key=P.public_key_pem(P.generate_private_key()).decode(),
            wg_public_key=base64.b64encode(hostname.encode().ljust(32, b"x")).decode(), ssh_user="deskguard",
            pool="10.77.0.0/24", reserved=("10.77.0.1",), requires_approval=approval))


class Fakes:
    def __init__(self, outcomes):
        self.outcomes, self.onboarded, self.pushed = outcomes, [], 0

    def onboard(self, site, req, progress=None):
        self.onboarded.append((req.hostname, req.address, req.ssh_user, req.operator, req.os))
        self.passphrase_files = getattr(self, "passphrase_files", []) + [req.luks_passphrase_file]
        what = self.outcomes.get(req.hostname, EXIT_OK)
        if isinstance(what, Exception):
            raise what
        if what == EXIT_OK:
            with Store.open(site) as store:
                store.set_device_state(req.hostname, "onboarded")
        return PlaybookResult("onboard.yml", what, "successful" if what == EXIT_OK else "failed", 1.0, {}), {}

    def push(self, site, progress=None):
        self.pushed += 1
        return PlaybookResult("vpn_gateway.yml", 0, "successful", 1.0, {})


def test_only_enrolled_laptops_are_onboarded_over_their_vpn_address_and_a_rerun_takes_what_is_left(tmp_path):
    from deskguard.enrolment.process import process
    from deskguard.site import inventory

    site = make_site(tmp_path)
    inventory.add_host(site, "gw-1", {"ansible_host": "192.0.2.10"}, group="vpn_gateways")
    enrol(site, "home-1")
    enrol(site, "home-2")
    enrol(site, "home-3", approval=True)
    enrol(site, "home-4", operator=None)
    fakes = Fakes({"home-2": Unreachable("10.77.0.3:22 did not answer within 10 s")})
    out = process(site, onboard=fakes.onboard, push_gateways=fakes.push)
    assert fakes.pushed == 1 and out.gateways == "pushed" and out.pending == ["home-3"]
    assert fakes.onboarded == [("home-1", "10.77.0.2", "deskguard", "tanaka", "debian"),
                               ("home-2", "10.77.0.3", "deskguard", "tanaka", "debian")]
    states = {p.hostname: (p.state, p.exit_code) for p in out.laptops}
    assert states == {"home-1": ("onboarded", EXIT_OK), "home-2": ("unreachable", EXIT_UNREACHABLE),
                      "home-4": ("skipped", EXIT_HOST_FAILED)}
    assert out.exit_code == EXIT_UNREACHABLE
    assert "no operator account name" in next(p for p in out.laptops if p.hostname == "home-4").messages[0]

    # Next run (the timer): home-1 is done, home-2 is tried again and now answers; home-3 still waits.
    fakes.outcomes = {}
    fakes.onboarded.clear()
    out = process(site, onboard=fakes.onboard, push_gateways=fakes.push)
    assert [h for h, *_ in fakes.onboarded] == ["home-2"] and out.pending == ["home-3"]
    assert out.exit_code == EXIT_HOST_FAILED          # home-4 still lacks an operator
    with Store.open(site) as store:
        assert store.require_device("home-2").state == "onboarded"
        store.approve_device("home-3")
    fakes.onboarded.clear()
    (tmp_path / "install.pass").write_text("the installer passphrase\n")
    process(site, onboard=fakes.onboard, push_gateways=fakes.push, luks_passphrase_file=tmp_path / "install.pass")
    assert [h for h, *_ in fakes.onboarded] == ["home-3"]
    assert fakes.passphrase_files[-1] == tmp_path / "install.pass"   # escrow gets it, as onboard's option does


def test_nothing_to_do_pushes_nothing_and_exits_0(tmp_path):
    from deskguard.enrolment.process import process

    site = make_site(tmp_path)
    enrol(site, "home-9", approval=True)
    fakes = Fakes({})
    out = process(site, onboard=fakes.onboard, push_gateways=fakes.push)
    assert (out.exit_code, out.laptops, out.pending, fakes.pushed) == (EXIT_OK, [], ["home-9"], 0)


def test_the_command_says_who_waits(tmp_path):
    from test_enrolment_cli import deskguard

    site = make_site(tmp_path)
    enrol(site, "home-9", approval=True)
    proc = deskguard("enrolment", "process", site=site)
    assert proc.returncode == 0, proc.stderr
    assert "no enrolled laptop waits for onboarding; 1 wait for `deskguard devices approve`: home-9" in proc.stdout
