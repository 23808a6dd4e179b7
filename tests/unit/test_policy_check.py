"""The policy is checked on the controller before anything changes (deskguard.site.policyfile.check): an unknown key
(with a did-you-mean), a wrong type, a value out of the roles' ranges, bad VPN networks, bad YAML, a list instead
of a mapping and a duplicated key are each one line naming the file and line, exit 2, from every command that
reads the policy, and nothing ran: no preflight, no ansible-runner, no file or store change."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from deskguard.site import policyfile, policyspec
from deskguard.site import KIT_ROOT

pytestmark = pytest.mark.unit

HOST = "lap-0042"
# Every command that reads the policy, as an admin types it (with what makes each get as far as the policy).
COMMANDS = {
    "onboard": ["onboard", HOST + "-new", "--os", "debian", "--address", "127.0.0.1", "--user", "tanaka", "--yes"],
    "comply": ["comply"],
    "comply --fix": ["comply", "--fix"],
    "vpn gateway-config": ["vpn", "gateway-config"],
    "vpn push-gateway": ["vpn", "push-gateway"],
    "wipe": ["wipe", HOST, "--reason", "lost on the train", "--yes", "--confirm", HOST, "--no-run"],
}


def set_key(text: str, key: str, value: str) -> str:
    """The example policy with `key`'s line replaced (the key must be there once)."""
    new, count = re.subn(rf"^{key}:.*$", f"{key}: {value}", text, flags=re.M)
    assert count == 1, key
    return new


# (what is wrong, the policy file's new text from the example's, what the one line must say)
BAD_POLICIES = {
    "typo": (lambda t: t.replace("screen_lock_idle_minutes:", "screen_lock_idel_minutes:"),
             r"policy\.yml:\d+: screen_lock_idel_minutes: unknown policy key .*did you mean screen_lock_idle_minutes\?"),
    "minus five minutes": (lambda t: set_key(t, "screen_lock_idle_minutes", "-5"),
                           r"policy\.yml:\d+: screen_lock_idle_minutes must be between 1 and 15 \(got -5\)"),
    "wrong type": (lambda t: set_key(t, "screen_lock_idle_minutes", "five"),
                   r"policy\.yml:\d+: screen_lock_idle_minutes: .*unable to convert to int"),
    "empty pool": (lambda t: set_key(t, "vpn_pool", '""'), r"policy\.yml:\d+: invalid vpn_pool ''"),
    "invalid CIDR": (lambda t: set_key(t, "firewall_management_sources", "[10.8.0.0/33]"),
                     r"policy\.yml:\d+: firewall_management_sources must list .*not a network: 10\.8\.0\.0/33"),
    "bad YAML": (lambda t: t + "usb_control_mode: [block\n",
                 r"cannot read the policy file .*policy\.yml:\d+: "),
    "list, not mapping": (lambda t: "- screen_lock_idle_minutes: 5\n", r"policy\.yml:1: a policy file is a mapping"),
    # Chromium refuses a wildcard inside a host (issue 26): refused for every OS before anything runs.
    "url blocklist a browser refuses": (lambda t: set_key(t, "software_policy_url_blocklist", '["*.games.example"]'),
                                        r"policy\.yml:\d+: software_policy_url_blocklist has entries the browsers "
                                        r"refuse \('\*\.games\.example': a wildcard inside a host name"),
    "duplicate key": (lambda t: t + "screen_lock_idle_minutes: 10\n",
                      r"policy\.yml:\d+: screen_lock_idle_minutes: set twice in this file \(also on line \d+\)"),
    # ENC-004: clevis has no TPM PIN; an unlock method the kit does not know; a PCR that does not exist.
    "TPM and PIN on Debian": (lambda t: t + "disk_encryption_linux_unlock: tpm2_pin\n",
                              r"policy\.yml:\d+: disk_encryption_linux_unlock: tpm2_pin is not offered on Debian: "
                              r"clevis's TPM2 pin has no PIN"),
    "unknown unlock": (lambda t: t + "disk_encryption_linux_unlock: fido2\n",
                       r"policy\.yml:\d+: disk_encryption_linux_unlock: .*must be one of: passphrase, tpm2, tpm2_pin"),
    "PCR 24": (lambda t: t + "disk_encryption_tpm2_pcr_ids: [0, 2, 24]\n",
               r"policy\.yml:\d+: disk_encryption_tpm2_pcr_ids must list PCR numbers 0-23, each once "
               r"\(got \[0, 2, 24\]\)"),
}


@pytest.fixture(scope="module")
def template(make_site):
    """A site with the example policy and one onboarded laptop (in the store and the inventory)."""
    from deskguard.site import inventory
    from deskguard.store import Store

    site = make_site()
    with Store.open(site) as store:
        inventory.register_and_add(site, store, HOST, os="debian", address="127.0.0.1", port=22,
                                   ssh_user="dgadmin", operator="tanaka")
    return site


@pytest.fixture
def site(template, tmp_path, monkeypatch):
    monkeypatch.delenv("DESKGUARD_DB_URL", raising=False)
    monkeypatch.delenv("DESKGUARD_SITE", raising=False)
    root = tmp_path / "site"
    shutil.copytree(template, root, symlinks=True)
    return root


@pytest.fixture
def contacts(monkeypatch):
    """Every way a command could reach a laptop or run Ansible, recorded (and stopped) instead."""
    import ansible_runner

    from deskguard.onboarding import preflight

    calls = []

    def record(what):
        def stop(*args, **kwargs):
            calls.append(what)
            raise AssertionError(f"{what} ran although the policy is bad")
        return stop

    monkeypatch.setattr(ansible_runner, "run", record("ansible-runner"))
    monkeypatch.setattr(preflight, "check_linux", record("preflight"))
    return calls


def snapshot(site: Path) -> dict:
    return {p.relative_to(site): p.read_bytes() for p in sorted(site.rglob("*"))
            if p.is_file() and not p.name.endswith((".lock", "-journal", "-wal", "-shm"))}


def run_cli(args, site, capsys) -> tuple[int, str]:
    from deskguard.cli import main

    with pytest.raises(SystemExit) as done:
        main([*args, "--site", str(site)])
    return done.value.code, capsys.readouterr().err


def policy(site: Path) -> Path:
    return site / "inventory" / "group_vars" / "all" / "policy.yml"


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("problem", BAD_POLICIES)
def test_a_bad_policy_is_one_line_from_every_command_and_nothing_runs(site, contacts, capsys, command, problem):
    change, expected = BAD_POLICIES[problem]
    policy(site).write_text(change(policy(site).read_text()))
    before = snapshot(site)
    code, err = run_cli(COMMANDS[command], site, capsys)
    assert code == 2, err
    assert err.startswith("deskguard: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(expected, err), err
    assert str(policy(site)) in err, err     # the file, named so the admin can open it
    assert contacts == []
    assert snapshot(site) == before


def test_a_typo_in_a_laptops_host_vars_is_named_with_its_file(site, contacts, capsys):
    host_vars = site / "inventory" / "host_vars" / f"{HOST}.yml"
    host_vars.write_text(host_vars.read_text() + "usb_control_mod: read_only\n")
    code, err = run_cli(COMMANDS["comply"], site, capsys)
    assert code == 2 and f"{host_vars}:" in err and "did you mean usb_control_mode?" in err, err
    assert contacts == []


def test_a_laptops_exception_out_of_range_is_refused_with_its_file(site, contacts, capsys):
    host_vars = site / "inventory" / "host_vars" / f"{HOST}.yml"
    host_vars.write_text(host_vars.read_text() + "screen_lock_idle_minutes: 90\n")
    code, err = run_cli(COMMANDS["wipe"], site, capsys)
    assert code == 2 and f"{host_vars}:" in err and "between 1 and 15 (got 90)" in err, err
    assert contacts == []


def test_a_good_policy_gets_past_the_check(site, contacts, capsys):
    """The check can pass: the same command with the example policy reaches Ansible (stopped here)."""
    with pytest.raises(AssertionError, match="ansible-runner ran"):
        from deskguard.cli import main

        main(["keys", "verify", "--site", str(site)])
    assert contacts == ["ansible-runner"]


# -- the shipped policy, the lab's and onboarding's host vars pass -----------------------------------------

def test_the_example_policy_and_onboarded_host_vars_pass(site):
    policyfile.check(site)       # the template's: `deskguard init`'s policy + an onboarded laptop
    policyfile.check(KIT_ROOT)   # the checkout's own


def test_the_lab_inventory_and_its_hosts_pass(site, tmp_path):
    """What `deskguard lab up` writes beside the policy (inventory/lab/), what the lab tests give their hosts,
    and what onboarding records (an interpreter, a Windows laptop's WinRM settings)."""
    from deskguard.site import inventory
    from deskguard.lab import manager, sites
    from deskguard.lab.state import LabHost, LabState

    state = LabState()
    for host in (LabHost("c1", "container", "10.99.0.2", 22, "root", extra={"hostvars": {"ansible_become": "true"}}),
                 LabHost("f1", "fleet", "10.99.0.3", 22, "dg",
                         extra={"hostvars": {"ansible_python_interpreter": "/usr/bin/python3"}})):
        state.hosts[host.name] = host
    lab = site / "inventory" / "lab"
    (lab / "group_vars").mkdir(parents=True)
    manager.write_inventory(state, lab)
    inventory.add_host(site, "f1", sites.unmanaged_hostvars(state.hosts["f1"]))
    inventory.add_host(site, "win-1", {"ansible_connection": "winrm", "ansible_winrm_transport": "ntlm",
                                       "ansible_python_interpreter": "/usr/bin/python3",
                                       "deskguard_operator": "tanaka", "deskguard_os": "windows",
                                       "deskguard_device_uuid": "0b5f", "deskguard_comply_timeout_seconds": 5})
    win = site / "inventory" / "host_vars" / "win-1.yml"   # the WinRM password, as onboarding vaults it
    win.write_text(win.read_text() + "ansible_password: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6162636465\n")
    sites.set_management_networks(site, ["10.99.0.0/24"])
    policyfile.check(site)


def test_every_role_variable_and_no_other_name_is_accepted():
    for spec in sorted((KIT_ROOT / "roles").glob("*/meta/argument_specs.yml")):
        import yaml

        for name in yaml.safe_load(spec.read_text())["argument_specs"]["main"]["options"]:
            assert policyspec.unknown(name) is None, name
    assert policyspec.unknown("ansible_host") is None
    assert "did you mean deskguard_waivers?" in policyspec.unknown("deskguard_waiver")
    assert policyspec.unknown("__usb_control_approved") is not None   # a role's private variable


def test_the_schema_is_the_argument_specs(tmp_path):
    """Adding a variable to a role's meta/argument_specs.yml is all it takes for the policy to accept it (with
    its type); nothing else lists the names."""
    import yaml

    kit = tmp_path / "kit"
    (kit / "roles" / "demo" / "meta").mkdir(parents=True)
    (kit / "playbooks" / "vars").mkdir(parents=True)
    shutil.copy(KIT_ROOT / "playbooks" / "vars" / "site_argument_specs.yml", kit / "playbooks" / "vars")
    spec = {"argument_specs": {"main": {"options": {"demo_minutes": {"type": "int", "default": 5}}}}}
    (kit / "roles" / "demo" / "meta" / "argument_specs.yml").write_text(yaml.safe_dump(spec))
    assert policyspec.unknown("demo_minutes", kit) is None
    assert "did you mean demo_minutes?" in policyspec.unknown("demo_minute", kit)
    assert policyspec.type_problem("demo_minutes", "5", kit) is None          # converted, as the play does
    assert "int" in policyspec.type_problem("demo_minutes", "five", kit)
    assert policyspec.unknown("screen_lock_idle_minutes", kit) is not None    # not in this kit's specs


def test_the_range_checks_are_the_roles_own_asserts():
    """The controller evaluates the very asserts the roles run first (one source for every range)."""
    names = {a["name"] for a in policyspec.role_asserts()}
    assert "LCK-001 | AUDIT | Idle minutes are within 1..15" in names
    assert "POLICY | AUDIT | The policy format is one this kit understands" in names
    base = policyfile.read(KIT_ROOT / "inventory" / "group_vars" / "all" / "policy.yml")
    assert policyspec.range_problems(base) == []
    messages = [m for _t, m in policyspec.range_problems({**base, "auto_update_window_minutes": 5})]
    assert messages == ["auto_update_window_start must be HH:MM (got 06:00) and auto_update_window_minutes "
                        "between 15 and 720 (got 5)"]
