"""Escrow sealing and the site's key files (deskguard.recovery.keys)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from deskguard.recovery import keys
from deskguard.errors import UsageError

pytestmark = pytest.mark.unit

PASS = "correct horse battery staple"
UUID = "6f1c1b7e-3c55-4d0e-9b59-0c0f1f1a2b3c"


@pytest.fixture(scope="module")
def pair():
    k = X25519PrivateKey.generate()
    return k, k.public_key()


def test_round_trip(pair):
    priv, pub = pair
    blob = keys.seal(pub, b"1234-5678-9012", UUID, "luks-recovery", "slot1")
    assert blob[:5] == b"DGSE\x01" and b"1234-5678" not in blob
    assert keys.unseal(priv, blob, UUID, "luks-recovery", "slot1") == b"1234-5678-9012"
    assert keys.envelope_key_id(blob) == keys.escrow_key_id(pub)
    # Ephemeral key and nonce: sealing twice never gives the same bytes.
    assert keys.seal(pub, b"x", UUID, "k", "i") != keys.seal(pub, b"x", UUID, "k", "i")
    assert keys.unseal(priv, keys.seal(pub, b"", UUID, "k", "i"), UUID, "k", "i") == b""


@pytest.mark.parametrize("aad", [("other-uuid", "luks-recovery", "slot1"), (UUID, "bitlocker-recovery", "slot1"),
                                 (UUID, "luks-recovery", "slot2"), (UUID + "x", "luks-recovery", "slot1")])
def test_wrong_associated_data_fails(pair, aad):
    priv, pub = pair
    blob = keys.seal(pub, b"secret", UUID, "luks-recovery", "slot1")
    with pytest.raises(keys.EscrowError, match="altered, or it belongs to another"):
        keys.unseal(priv, blob, *aad)


def test_aad_fields_are_not_ambiguous(pair):
    priv, pub = pair
    blob = keys.seal(pub, b"secret", "ab", "c", "d")
    with pytest.raises(keys.EscrowError):
        keys.unseal(priv, blob, "a", "bc", "d")


@pytest.mark.parametrize("pos", [0, 4, 6, 20, 50, 60, -1, -17])
def test_tampered_envelope_fails(pair, pos):
    priv, pub = pair
    blob = bytearray(keys.seal(pub, b"secret value", UUID, "luks-recovery", "slot1"))
    blob[pos] ^= 0x01
    with pytest.raises(keys.EscrowError):
        keys.unseal(priv, bytes(blob), UUID, "luks-recovery", "slot1")


def test_truncated_or_foreign_blob_fails(pair):
    priv, pub = pair
    blob = keys.seal(pub, b"secret", UUID, "k", "i")
    for bad in (blob[:40], b"", b"not an envelope at all, but long enough to parse" * 2):
        with pytest.raises(keys.EscrowError):
            keys.unseal(priv, bad, UUID, "k", "i")


def test_wrong_key_fails(pair):
    _priv, pub = pair
    blob = keys.seal(pub, b"secret", UUID, "k", "i")
    with pytest.raises(keys.EscrowError, match="sealed to escrow key"):
        keys.unseal(X25519PrivateKey.generate(), blob, UUID, "k", "i")


def test_init_keys_creates_once_and_keeps(tmp_path):
    first = {r.path.name: r.status for r in keys.init_keys(tmp_path, PASS)}
    assert set(first.values()) == {"created"}
    d = tmp_path / ".deskguard"
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    second = {r.path.name: r.status for r in keys.init_keys(tmp_path, "another long passphrase")}
    assert set(second.values()) == {"kept"}
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    for name in (keys.ESCROW_PRIVATE, keys.ORDER_PRIVATE):
        assert (d / name).stat().st_mode & 0o777 == 0o600
    assert d.stat().st_mode & 0o777 == 0o700


def test_officer_key_is_encrypted_and_matches_public_key(tmp_path):
    from cryptography.hazmat.primitives import serialization

    keys.init_keys(tmp_path, PASS)
    path = tmp_path / ".deskguard" / keys.ESCROW_PRIVATE
    assert b"ENCRYPTED PRIVATE KEY" in path.read_bytes()
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(path.read_bytes(), password=None)
    with pytest.raises(keys.KeyFileError, match="passphrase is needed"):
        keys.load_officer_key(path, None)
    with pytest.raises(keys.KeyFileError, match="wrong passphrase"):
        keys.load_officer_key(path, "wrong passphrase!!")
    priv = keys.load_officer_key(path, PASS)
    pub = keys.load_escrow_public_key(tmp_path)
    blob = keys.seal(pub, b"recovery", UUID, "luks-recovery", "s")
    assert keys.unseal(priv, blob, UUID, "luks-recovery", "s") == b"recovery"


def test_order_signing_key_is_p256_and_signs(tmp_path):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    keys.init_keys(tmp_path, PASS)
    k = keys.load_order_signing_key(tmp_path)
    sig = k.sign(b"order", ec.ECDSA(hashes.SHA256()))
    keys.load_order_public_key(tmp_path).verify(sig, b"order", ec.ECDSA(hashes.SHA256()))


def test_officer_key_moved_away_is_not_recreated(tmp_path):
    keys.init_keys(tmp_path, PASS)
    d = tmp_path / ".deskguard"
    pub = (d / keys.ESCROW_PUBLIC).read_bytes()
    (d / keys.ESCROW_PRIVATE).unlink()  # what the officer is told to do
    res = {r.path.name: r.status for r in keys.init_keys(tmp_path)}
    assert res[keys.ESCROW_PRIVATE] == "absent" and not (d / keys.ESCROW_PRIVATE).exists()
    assert (d / keys.ESCROW_PUBLIC).read_bytes() == pub


@pytest.mark.parametrize("pw", [None, "", "   ", "short", "elevenchars"])
def test_weak_or_missing_passphrase_is_refused(tmp_path, pw):
    with pytest.raises(UsageError):
        keys.init_keys(tmp_path, pw)
    assert not (tmp_path / ".deskguard" / keys.ESCROW_PRIVATE).exists()


def test_escrow_public_key_from_the_environment_for_awx(tmp_path, monkeypatch):
    """An AWX job has no site folder: a credential injects the public key's file and names it."""
    keys.init_keys(tmp_path / "site", PASS)
    injected = tmp_path / "awx-credential.pem"
    injected.write_bytes((tmp_path / "site" / ".deskguard" / keys.ESCROW_PUBLIC).read_bytes())
    monkeypatch.setenv(keys.ESCROW_PUBLIC_ENV, str(injected))
    empty_site = tmp_path / "project-checkout"
    officer = keys.load_officer_key(tmp_path / "site" / ".deskguard" / keys.ESCROW_PRIVATE, PASS)
    blob = keys.seal(keys.load_escrow_public_key(empty_site), b"secret", UUID, "luks-recovery", "slot1")
    assert keys.unseal(officer, blob, UUID, "luks-recovery", "slot1") == b"secret"
    monkeypatch.setenv(keys.ESCROW_PUBLIC_ENV, str(tmp_path / "missing.pem"))
    with pytest.raises(keys.KeyFileError, match="missing.pem: no such key file"):
        keys.load_escrow_public_key(empty_site)
