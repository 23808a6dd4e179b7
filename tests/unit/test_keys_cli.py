"""`deskguard keys show|destroy` and their refusals, through the real entry point (no laptop needed)."""

from __future__ import annotations

import json

import pytest
import sitetools
from sitetools import deskguard

pytestmark = pytest.mark.unit

PASS = "correct horse battery staple"
KEY = "123456-234567-345678-456789-567890-678901-789012-890123"


def one_line_error(proc, code, text):
    sitetools.one_line_error(proc, code, text)
    assert KEY not in proc.stdout + proc.stderr


@pytest.fixture
def site(site):
    """A site with one laptop holding one active escrowed LUKS recovery key (on each store backend)."""
    tmp_path = site
    from deskguard.recovery import keys
    from deskguard.store import Store

    keys.init_keys(tmp_path, PASS)
    with Store.open(tmp_path, create=True) as store:
        dev = store.register_device("lt-1", "debian", "10.0.0.1", 22, "dgadmin", None)
        pub = keys.load_escrow_public_key(tmp_path)
        key_id = "luks:9f2c:2"
        store.add_secret(dev.uuid, "luks-recovery", key_id,
                         keys.seal(pub, KEY.encode(), dev.uuid, "luks-recovery", key_id))
    (tmp_path / "pass").write_text(PASS + "\n")
    (tmp_path / "wrong").write_text("not the passphrase at all\n")
    return tmp_path


def officer(site, pw="pass"):
    return ["--escrow-key", str(site / ".deskguard" / "escrow-officer.key.pem"), "--passphrase-file", str(site / pw)]


def test_show_prints_the_key_after_auditing_it(site):
    proc = deskguard("keys", "show", "lt-1", *officer(site), "--reason", "INC-7 forgot passphrase", "--json",
                     site=site)
    assert proc.returncode == 0, proc.stderr
    (shown,) = json.loads(proc.stdout)
    assert shown["key"] == KEY and shown["key_id"] == "luks:9f2c:2" and shown["state"] == "active"
    audit = json.loads(deskguard("audit", "list", "--json", site=site).stdout)
    last = audit[-1]
    assert last["action"] == "secret.show" and last["detail"]["reason"] == "INC-7 forgot passphrase"
    assert KEY not in json.dumps(audit)


def test_show_with_a_prompted_passphrase(site):
    proc = deskguard("keys", "show", "lt-1", "--escrow-key", str(site / ".deskguard" / "escrow-officer.key.pem"),
                     site=site, stdin=PASS + "\n")
    assert proc.returncode == 0 and KEY in proc.stdout, proc.stderr


def test_wrong_passphrase_is_one_line_and_shows_nothing(site):
    one_line_error(deskguard("keys", "show", "lt-1", *officer(site, "wrong"), site=site), 4, "wrong passphrase")
    audit = json.loads(deskguard("audit", "list", "--json", site=site).stdout)
    assert audit[-1]["action"] != "secret.show"


def test_without_the_officer_key_nothing_decrypts(site):
    proc = deskguard("keys", "show", "lt-1", site=site)
    assert proc.returncode == 2 and "--escrow-key" in proc.stderr and KEY not in proc.stdout


def test_a_tampered_ciphertext_is_refused(site):
    from deskguard.store import Store

    with Store.open(site) as store:
        dev = store.get_device("lt-1")
        with store.transaction() as s:
            (sec,) = store.list_secrets(dev.uuid)
            row = s.get(type(sec), sec.id)
            row.ciphertext = row.ciphertext[:-1] + bytes([row.ciphertext[-1] ^ 1])
    one_line_error(deskguard("keys", "show", "lt-1", *officer(site), site=site), 4, "altered")


def test_a_ciphertext_moved_to_another_slot_is_refused(site):
    from deskguard.store import Store

    with Store.open(site) as store:
        dev = store.get_device("lt-1")
        with store.transaction() as s:
            (sec,) = store.list_secrets(dev.uuid)
            s.get(type(sec), sec.id).key_id = "luks:9f2c:5"   # associated data no longer matches
    one_line_error(deskguard("keys", "show", "lt-1", *officer(site), site=site), 4, "altered")


def test_destroy_needs_the_typed_name_then_erases_and_audits(site):
    proc = deskguard("keys", "destroy", "lt-1", "--reason", "laptop wiped", site=site, stdin="lt-2\n")
    assert proc.returncode == 2 and "does not match" in proc.stderr
    proc = deskguard("keys", "destroy", "lt-1", "--reason", "laptop wiped", "--yes", site=site)
    assert proc.returncode == 2 and "--confirm lt-1" in proc.stderr
    proc = deskguard("keys", "destroy", "lt-1", "--reason", "laptop wiped", "--yes", "--confirm", "lt-1", site=site)
    assert proc.returncode == 0 and "1 escrowed key(s) destroyed" in proc.stdout, proc.stderr
    one_line_error(deskguard("keys", "show", "lt-1", *officer(site), site=site), 2, "no escrowed recovery key")
    actions = [e["action"] for e in json.loads(deskguard("audit", "list", "--json", site=site).stdout)]
    assert "secret.destroy" in actions


def test_rotate_needs_a_host_or_all(site):
    proc = deskguard("keys", "rotate", site=site)
    assert proc.returncode == 2 and "HOST or --all" in proc.stderr
