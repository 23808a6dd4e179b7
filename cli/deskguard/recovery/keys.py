"""Site keys and escrow sealing (see docs/store.md, "Keys" and "Envelope format").

- Escrow key pair (X25519). The controller keeps only ``escrow.pub.pem``; the private key is written once,
  passphrase-encrypted, to ``escrow-officer.key.pem`` for the security officer to take off the controller.
- Order-signing key (ECDSA P-256) for wipe/lock orders: ``order-signing.key.pem`` (0600) + ``.pub.pem``.
- ``seal`` / ``unseal``: ephemeral X25519 + HKDF-SHA256 + AES-256-GCM, with the device UUID, secret kind and
  key id bound as associated data, in a versioned envelope.

Existing key files are never overwritten.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..fsutil import create_new
from ..errors import DeskguardError, UsageError

ESCROW_PRIVATE = "escrow-officer.key.pem"
ESCROW_PUBLIC = "escrow.pub.pem"
# Where AWX (a credential's file injector) hands the escrow public key to a job, which has no site folder.
ESCROW_PUBLIC_ENV = "DESKGUARD_ESCROW_PUBLIC_KEY_FILE"
ORDER_PRIVATE = "order-signing.key.pem"
ORDER_PUBLIC = "order-signing.pub.pem"
MIN_PASSPHRASE = 12

OFFICER_KEY_NOTICE = """\
!!! ESCROW PRIVATE KEY WRITTEN: {path}
!!! It opens every escrowed recovery key. Hand it to the security officer NOW and delete it from this
!!! controller (e.g. copy it to the officer's encrypted USB stick or password manager, verify, then
!!! `shred -u {path}`). The controller only needs {pub}. Keep the passphrase apart from the file."""

# Envelope v1 (all integers big-endian):
#   magic "DGSE" (4) | version 0x01 (1) | recipient fingerprint (8) | ephemeral X25519 public key (32) |
#   AES-GCM nonce (12) | ciphertext + 16-byte tag
MAGIC = b"DGSE"
VERSION = 1
_FP_LEN, _PUB_LEN, _NONCE_LEN, _TAG_LEN = 8, 32, 12, 16
_HEADER_LEN = len(MAGIC) + 1 + _FP_LEN + _PUB_LEN
HKDF_INFO = b"deskguard escrow v1"


class KeyFileError(DeskguardError):
    """A key file is missing, unreadable, of the wrong type, or its passphrase is wrong: exit 4."""


class EscrowError(DeskguardError):
    """A sealed secret cannot be opened (wrong key, wrong binding, altered, unknown format): exit 4."""


@dataclass(frozen=True)
class KeyResult:
    path: Path
    status: str  # "created" | "kept" | "absent" (officer key already moved off the controller)
    what: str


def keys_dir(site: Path) -> Path:
    return Path(site) / ".deskguard"


def check_passphrase(passphrase: bytes | str | None) -> bytes:
    """The officer key passphrase as bytes; UsageError if empty or shorter than MIN_PASSPHRASE characters."""
    if isinstance(passphrase, bytes):
        try:
            text = passphrase.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError("the officer key passphrase must be UTF-8 text") from None
    else:
        text = passphrase or ""
    if not text.strip():
        raise UsageError("the officer key passphrase is empty")
    if len(text) < MIN_PASSPHRASE:
        raise UsageError(f"the officer key passphrase is too short: use at least {MIN_PASSPHRASE} characters")
    return text.encode("utf-8")


def _pub_pem(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def init_keys(site: Path, officer_passphrase: bytes | str | None = None) -> list[KeyResult]:
    """Create the site's keys where missing; keep every existing one. The passphrase is needed only when the
    escrow key pair is created (UsageError if it is needed and missing or weak)."""
    d = keys_dir(site)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    results: list[KeyResult] = []

    priv, pub = d / ESCROW_PRIVATE, d / ESCROW_PUBLIC
    if pub.exists():
        results.append(KeyResult(pub, "kept", "escrow public key"))
        results.append(KeyResult(priv, "kept" if priv.exists() else "absent", "escrow private key (officer)"))
    elif priv.exists():
        # A crash between the two writes, or a deleted public key: derive it (needs the passphrase).
        if officer_passphrase is None:
            raise UsageError(f"{pub} is missing but {priv} is here: give the officer passphrase to derive it")
        key = load_officer_key(priv, officer_passphrase)
        create_new(pub, _pub_pem(key.public_key()), 0o644)
        results.append(KeyResult(priv, "kept", "escrow private key (officer)"))
        results.append(KeyResult(pub, "created", "escrow public key"))
    else:
        if officer_passphrase is None:
            raise UsageError("creating the escrow key needs an officer passphrase (--officer-passphrase-file)")
        secret = check_passphrase(officer_passphrase)
        key = X25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.BestAvailableEncryption(secret))
        created = create_new(priv, pem, 0o600)
        if created:
            create_new(pub, _pub_pem(key.public_key()), 0o644)
        results.append(KeyResult(priv, "created" if created else "kept", "escrow private key (officer)"))
        results.append(KeyResult(pub, "created" if created else "kept", "escrow public key"))

    opriv, opub = d / ORDER_PRIVATE, d / ORDER_PUBLIC
    if opriv.exists():
        results.append(KeyResult(opriv, "kept", "order-signing private key"))
        if not opub.exists():
            create_new(opub, _pub_pem(load_order_signing_key(site).public_key()), 0o644)
            results.append(KeyResult(opub, "created", "order-signing public key"))
        else:
            results.append(KeyResult(opub, "kept", "order-signing public key"))
    else:
        skey = ec.generate_private_key(ec.SECP256R1())
        pem = skey.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
        created = create_new(opriv, pem, 0o600)
        if created:
            # Replace a stale public key that does not belong to this new private key.
            from ..fsutil import atomic_write

            atomic_write(opub, _pub_pem(skey.public_key()), 0o644)
        results.append(KeyResult(opriv, "created" if created else "kept", "order-signing private key"))
        results.append(KeyResult(opub, "created" if created else "kept", "order-signing public key"))
    return results


# -- loading ------------------------------------------------------------------------------------------------

def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file (run `deskguard init`)") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read it ({exc.strerror})") from None


def load_escrow_public_key(site: Path) -> X25519PublicKey:
    """The site's escrow public key, or the file named by DESKGUARD_ESCROW_PUBLIC_KEY_FILE when set."""
    path = Path(os.environ.get(ESCROW_PUBLIC_ENV) or keys_dir(site) / ESCROW_PUBLIC)
    try:
        key = serialization.load_pem_public_key(_read(path))
    except ValueError:
        raise KeyFileError(f"{path}: not a PEM public key") from None
    if not isinstance(key, X25519PublicKey):
        raise KeyFileError(f"{path}: not an X25519 public key")
    return key


def load_officer_key(path: Path, passphrase: bytes | str | None) -> X25519PrivateKey:
    """The escrow private key from the officer's encrypted PEM file."""
    pw = passphrase.encode("utf-8") if isinstance(passphrase, str) else passphrase
    try:
        key = serialization.load_pem_private_key(_read(path), password=pw)
    except TypeError:
        raise KeyFileError(f"{path}: the key is encrypted; a passphrase is needed" if pw is None
                           else f"{path}: the key is not encrypted (expected a passphrase-protected key)") from None
    except ValueError:
        raise KeyFileError(f"{path}: wrong passphrase or not a PEM private key") from None
    if not isinstance(key, X25519PrivateKey):
        raise KeyFileError(f"{path}: not an X25519 private key (is it the escrow officer key?)")
    return key


def load_order_signing_key(site: Path) -> ec.EllipticCurvePrivateKey:
    path = keys_dir(site) / ORDER_PRIVATE
    try:
        key = serialization.load_pem_private_key(_read(path), password=None)
    except (TypeError, ValueError):
        raise KeyFileError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise KeyFileError(f"{path}: not an ECDSA P-256 private key")
    return key


def load_order_public_key(site: Path) -> ec.EllipticCurvePublicKey:
    path = keys_dir(site) / ORDER_PUBLIC
    try:
        key = serialization.load_pem_public_key(_read(path))
    except ValueError:
        raise KeyFileError(f"{path}: not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise KeyFileError(f"{path}: not an ECDSA public key")
    return key


# -- sealing ------------------------------------------------------------------------------------------------

def _raw(public_key: X25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _fingerprint(public_key: X25519PublicKey) -> bytes:
    return hashlib.sha256(_raw(public_key)).digest()[:_FP_LEN]


def escrow_key_id(public_key: X25519PublicKey) -> str:
    """The escrow key's id: first 8 bytes of sha256(raw public key), hex. Stored with each secret."""
    return _fingerprint(public_key).hex()


def _lp(value: str, what: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise UsageError(f"{what} must be a non-empty string")
    raw = value.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise UsageError(f"{what} is too long")
    return struct.pack(">H", len(raw)) + raw


def _aad(header: bytes, device_uuid: str, kind: str, key_id: str) -> bytes:
    return header + _lp(device_uuid, "device uuid") + _lp(kind, "secret kind") + _lp(key_id, "key id")


def _kek(shared: bytes, eph_pub: bytes, recipient_pub: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=eph_pub + recipient_pub, info=HKDF_INFO).derive(shared)


def seal(public_key: X25519PublicKey, plaintext: bytes, device_uuid: str, kind: str, key_id: str) -> bytes:
    """Encrypt PLAINTEXT to the escrow public key, bound to (device_uuid, kind, key_id). Returns envelope v1."""
    if not isinstance(public_key, X25519PublicKey):
        raise UsageError("seal needs the escrow X25519 public key")
    if not isinstance(plaintext, (bytes, bytearray)):
        raise UsageError("seal needs bytes")
    eph = X25519PrivateKey.generate()
    eph_pub, rcpt_pub = _raw(eph.public_key()), _raw(public_key)
    key = _kek(eph.exchange(public_key), eph_pub, rcpt_pub)
    header = MAGIC + bytes([VERSION]) + _fingerprint(public_key) + eph_pub
    nonce = os.urandom(_NONCE_LEN)
    ct = AESGCM(key).encrypt(nonce, bytes(plaintext), _aad(header, device_uuid, kind, key_id))
    return header + nonce + ct


def envelope_key_id(blob: bytes) -> str:
    """Which escrow key (escrow_key_id) an envelope is sealed to, without opening it."""
    _parse(blob)
    return blob[5:5 + _FP_LEN].hex()


def _parse(blob: bytes) -> tuple[bytes, bytes, bytes, bytes, bytes]:
    if not isinstance(blob, (bytes, bytearray)) or len(blob) < _HEADER_LEN + _NONCE_LEN + _TAG_LEN \
            or blob[:4] != MAGIC:
        raise EscrowError("not a deskguard escrow envelope")
    if blob[4] != VERSION:
        raise EscrowError(f"unsupported escrow envelope version {blob[4]} (this deskguard reads {VERSION})")
    blob = bytes(blob)
    header = blob[:_HEADER_LEN]
    fp = blob[5:5 + _FP_LEN]
    eph_pub = blob[5 + _FP_LEN:_HEADER_LEN]
    nonce = blob[_HEADER_LEN:_HEADER_LEN + _NONCE_LEN]
    ct = blob[_HEADER_LEN + _NONCE_LEN:]
    return header, fp, eph_pub, nonce, ct


def unseal(private_key: X25519PrivateKey, blob: bytes, device_uuid: str, kind: str, key_id: str) -> bytes:
    """Open an envelope made by ``seal``. EscrowError (one line) on any mismatch or alteration."""
    header, fp, eph_pub, nonce, ct = _parse(blob)
    public = private_key.public_key()
    if fp != _fingerprint(public):
        raise EscrowError(f"sealed to escrow key {fp.hex()}, not to the key given ({escrow_key_id(public)})")
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(eph_pub))
    except ValueError:
        raise EscrowError("the escrow envelope is corrupt (bad ephemeral key)") from None
    key = _kek(shared, eph_pub, _raw(public))
    try:
        return AESGCM(key).decrypt(nonce, ct, _aad(header, device_uuid, kind, key_id))
    except InvalidTag:
        raise EscrowError("cannot open the escrowed secret: it was altered, or it belongs to another "
                          "device, kind or key id") from None
