"""`deskguard init`, through the real entry point (subprocess)."""

from __future__ import annotations

import os

from pathlib import Path

import clirun
import pytest

pytestmark = pytest.mark.unit

PASS = "correct horse battery staple\n"


def deskguard(*args, site=None, stdin=None, env_site=None):
    env = {k: v for k, v in os.environ.items() if k not in ("DESKGUARD_DB_URL", "DESKGUARD_SITE")}
    if env_site:
        env["DESKGUARD_SITE"] = str(env_site)
    return clirun.deskguard(*args, *(["--site", site] if site else []), timeout=180, env=env, input=stdin)


def one_line_error(proc, code):
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("deskguard: "), proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def pwfile(tmp_path):
    p = tmp_path / "officer-pass"
    p.write_text(PASS)
    return p


def test_init_creates_then_keeps_everything(tmp_path, pwfile):
    site = tmp_path / "site"
    first = deskguard("init", "--officer-passphrase-file", str(pwfile), site=site)
    assert first.returncode == 0, first.stderr
    d = site / ".deskguard"
    for name in ("deskguard.db", "escrow-officer.key.pem", "escrow.pub.pem", "order-signing.key.pem",
                 "order-signing.pub.pem"):
        assert (d / name).is_file() and f"created  {d / name}" in first.stdout
    assert "ESCROW PRIVATE KEY WRITTEN" in first.stderr and "security officer" in first.stderr
    assert d.stat().st_mode & 0o777 == 0o700
    for name in ("escrow-officer.key.pem", "order-signing.key.pem", "deskguard.db"):
        assert (d / name).stat().st_mode & 0o777 == 0o600, name
    policy = site / "inventory" / "group_vars" / "all" / "policy.yml"
    # The example policy is the kit's own, every control on with its documented defaults.
    kit_policy = Path(__file__).resolve().parents[2] / "inventory" / "group_vars" / "all" / "policy.yml"
    assert policy.read_text() == kit_policy.read_text() and "firewall_management_sources:" in policy.read_text()
    assert "deskguard_policy_version: 1" in policy.read_text()
    assert (site / "inventory" / "hosts.yml").is_file()

    keys_before = {p.name: p.read_bytes() for p in d.glob("*.pem")}
    # Second run: no passphrase needed (the escrow key exists), nothing recreated.
    second = deskguard("init", site=site)
    assert second.returncode == 0, second.stderr
    assert "\ncreated " not in "\n" + second.stdout and "(0 created" in second.stdout
    assert "ESCROW" not in second.stderr
    assert {p.name: p.read_bytes() for p in d.glob("*.pem")} == keys_before
    # Even given a different passphrase, keys are kept.
    other = tmp_path / "other"
    other.write_text("a different long passphrase")
    third = deskguard("init", "--officer-passphrase-file", str(other), site=site)
    assert third.returncode == 0 and {p.name: p.read_bytes() for p in d.glob("*.pem")} == keys_before


def test_officer_key_is_encrypted_with_the_given_passphrase(tmp_path, pwfile):
    from cryptography.hazmat.primitives import serialization

    assert deskguard("init", "--officer-passphrase-file", str(pwfile), site=tmp_path).returncode == 0
    pem = (tmp_path / ".deskguard" / "escrow-officer.key.pem").read_bytes()
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(pem, password=None)
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(pem, password=b"wrong passphrase!")
    # The trailing newline of the file is not part of the passphrase.
    serialization.load_pem_private_key(pem, password=PASS.rstrip("\n").encode())


def test_existing_policy_and_hosts_are_kept(tmp_path, pwfile):
    policy = tmp_path / "inventory" / "group_vars" / "all" / "policy.yml"
    policy.parent.mkdir(parents=True)
    policy.write_text("deskguard_policy_version: 7\n# the real one\n")
    hosts = tmp_path / "inventory" / "hosts.yml"
    hosts.write_text("# mine\nall: {}\n")
    proc = deskguard("init", "--officer-passphrase-file", str(pwfile), env_site=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"kept     {policy}" in proc.stdout
    assert policy.read_text() == "deskguard_policy_version: 7\n# the real one\n"
    assert hosts.read_text() == "# mine\nall: {}\n"


@pytest.mark.parametrize("content", ["", "\n", "short\n", "elevenchars"])
def test_short_or_empty_passphrase_is_refused_before_anything_is_made(tmp_path, content):
    pw = tmp_path / "pw"
    pw.write_text(content)
    site = tmp_path / "site"
    one_line_error(deskguard("init", "--officer-passphrase-file", str(pw), site=site), 2)
    assert not (site / ".deskguard").exists()


def test_no_passphrase_and_no_terminal_is_a_usage_error(tmp_path):
    one_line_error(deskguard("init", site=tmp_path, stdin=""), 2)
    assert not (tmp_path / ".deskguard").exists()


def test_missing_passphrase_file_is_a_usage_error(tmp_path):
    one_line_error(deskguard("init", "--officer-passphrase-file", str(tmp_path / "nope"), site=tmp_path), 2)


def test_init_is_audited(tmp_path, pwfile):
    assert deskguard("init", "--officer-passphrase-file", str(pwfile), site=tmp_path).returncode == 0
    assert deskguard("init", site=tmp_path).returncode == 0
    proc = deskguard("audit", "list", "--json", site=tmp_path)
    import json

    entries = json.loads(proc.stdout)
    assert [e["action"] for e in entries] == ["site.init"]  # the no-op re-run records nothing
