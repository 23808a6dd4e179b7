"""The secure WinRM settings are what the kit really hands over, on both paths: pywinrm in the preflight, and
Ansible's winrm connection reading the host_vars that onboarding wrote (through Ansible's own inventory,
vault and connection code). Both are observed at the same boundary, pywinrm's Protocol.open_shell, so the
comparison is of the Transport objects pywinrm actually built, not of our own dictionaries."""

from __future__ import annotations

from pathlib import Path

import pytest
import winrm.protocol
from certs import issue, make_ca
from deskguard.onboarding import onboard as onboarding
from deskguard.windows import vault
from deskguard.windows.preflight import WindowsFacts, check_windows
from deskguard.runner import PlaybookResult
from responder import Responder

pytestmark = pytest.mark.windows
PASSWORD = "Corr3ct-Horse!"


class Stop(Exception):
    """Raised where a shell would open: the settings are recorded, nothing goes over the wire."""


@pytest.fixture
def seen(monkeypatch):
    records = []

    def open_shell(self, *args, **kwargs):
        t = self.transport
        records.append({"endpoint": t.endpoint, "auth": t.auth_method, "validation": t.server_cert_validation,
                        "ca": t.ca_trust_path, "encryption": t.message_encryption, "user": t.username,
                        "password": t.password, "read_timeout": self.read_timeout_sec,
                        "operation_timeout": self.operation_timeout_sec})
        raise Stop()

    monkeypatch.setattr(winrm.protocol.Protocol, "open_shell", open_shell)
    return records


@pytest.fixture
def https_responder(tmp_path):
    ca, key = make_ca(tmp_path / "ca")
    with Responder(ssl_context=issue(tmp_path / "srv", ca, key).server_context()) as r:
        yield r, ca.cert


def request(port, ca, transport="ntlm"):
    return onboarding.OnboardRequest("win-0042", "windows", "127.0.0.1", "tanaka", port=port,
                                     winrm_user="LAP-0042\\dgadmin", winrm_password=PASSWORD,
                                     winrm_transport=transport, winrm_ca_bundle=ca)


def onboard_with_the_play_stubbed(site, req, monkeypatch):
    """The real onboarding (store, inventory, vault), with the preflight answered and no playbook run: what
    is under test is the host_vars it writes."""
    facts = WindowsFacts("LAP-0042", "LAP-0042\\dgadmin", "Professional", "Windows 10 Pro", "22631", "23H2",
                         "5.1.22621.2506")
    monkeypatch.setattr("deskguard.windows.preflight.check_windows", lambda target, password: facts)
    monkeypatch.setattr("deskguard.runner.run_playbook",
                        lambda *a, **k: PlaybookResult("onboard.yml", 0, "successful", 0.0, {}))
    onboarding.onboard(site, req)


def ansible_hostvars(site, hostname, monkeypatch) -> dict:
    """Variables of HOST as ansible-playbook sees them, with the vault id the runner passes."""
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.vault import VaultSecret, VaultSecretsContext
    from ansible.vars.manager import VariableManager

    vault_id, path = vault.runner_env(site)["ANSIBLE_VAULT_IDENTITY_LIST"].split("@", 1)
    secrets = [(vault_id, VaultSecret(Path(path).read_bytes().strip()))]
    # ansible-playbook sets this process-wide context once (ansible/cli/__init__.py); undone after the test.
    monkeypatch.setattr(VaultSecretsContext, "_current", VaultSecretsContext(secrets))
    loader = DataLoader()
    loader.set_vault_secrets(secrets)
    inventory = InventoryManager(loader=loader, sources=[str(site / "inventory" / "hosts.yml")])
    return VariableManager(loader=loader, inventory=inventory).get_vars(host=inventory.get_host(hostname))


def ansible_connects_with(hostvars: dict) -> None:
    """ansible-core's winrm connection plugin, given the host's connection variables as the task executor
    gives them (ansible_winrm_* as its `_extras`), opening its connection."""
    from ansible.playbook.play_context import PlayContext
    from ansible.plugins.loader import connection_loader

    keys = ("ansible_host", "ansible_port", "ansible_user", "ansible_password")
    options = {k: (str(hostvars[k]) if k == "ansible_password" else hostvars[k]) for k in keys}
    extras = {k: v for k, v in hostvars.items() if k.startswith("ansible_winrm_")}
    conn = connection_loader.get("winrm", PlayContext())
    conn.set_options(var_options={**options, **extras, "_extras": extras})
    conn._build_winrm_kwargs()
    with pytest.raises(Exception, match="Stop|ntlm"):
        conn._winrm_connect()


def both_paths(site, req, seen, monkeypatch, drift=None) -> tuple[dict, dict]:
    """(preflight's Transport, Ansible's Transport) for one request; `drift` may alter onboarding's target."""
    with pytest.raises(Stop):
        check_windows(onboarding.winrm_target(req), PASSWORD)
    if drift:
        monkeypatch.setattr(onboarding, "winrm_target", drift(onboarding.winrm_target))
    onboard_with_the_play_stubbed(site, req, monkeypatch)
    ansible_connects_with(ansible_hostvars(site, "win-0042", monkeypatch))
    return tuple(seen)


def test_preflight_and_ansible_build_the_same_secure_transport(make_site, https_responder, seen, monkeypatch):
    r, ca = https_responder
    preflight, ansible = both_paths(make_site(), request(r.port, ca), seen, monkeypatch)
    expected = {"endpoint": f"https://127.0.0.1:{r.port}/wsman", "auth": "ntlm", "validation": "validate",
                "ca": str(ca.resolve()), "encryption": "always", "user": "LAP-0042\\dgadmin",
                "password": PASSWORD, "read_timeout": 30, "operation_timeout": 20}
    assert preflight == expected
    assert ansible == expected


def test_the_password_is_only_ciphertext_in_host_vars_and_nowhere_in_the_store(make_site, https_responder, seen,
                                                                              monkeypatch):
    site = make_site()
    r, ca = https_responder
    onboard_with_the_play_stubbed(site, request(r.port, ca), monkeypatch)
    text = (site / "inventory" / "host_vars" / "win-0042.yml").read_text()
    assert "ansible_password: !vault |" in text and "$ANSIBLE_VAULT;1.2;AES256;deskguard" in text
    assert PASSWORD not in text
    for path in (site / ".deskguard").rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
    assert oct((vault.password_file(site)).stat().st_mode & 0o777) == "0o600"


def test_the_comparison_can_fail(make_site, https_responder, seen, monkeypatch):
    # If onboarding wrote host_vars that drifted from the preflight (here: validation off), the test above
    # would see it: the Transport Ansible builds differs.
    def drift(real):
        def target(req):
            t = real(req)
            t.settings = lambda: {**type(t).settings(t), "server_cert_validation": "ignore"}
            return t
        return target

    r, ca = https_responder
    preflight, ansible = both_paths(make_site(), request(r.port, ca), seen, monkeypatch, drift)
    assert preflight["validation"] == "validate" and ansible["validation"] == "ignore"
