"""Real X.509 certificates for the HTTPS responder (cryptography), so that pywinrm's certificate validation
really runs: a site CA, a server certificate it signs (valid or expired), and a self-signed one."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

LOOPBACK = ipaddress.ip_address("127.0.0.1")


@dataclass
class Issued:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(folder: Path, stem: str, cert: x509.Certificate, key) -> Issued:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{stem}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    return Issued(folder / f"{stem}.pem", folder / f"{stem}.key")


def _builder(subject: str, issuer: str, public_key, days_from: int, days_to: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now + dt.timedelta(days=days_from)).not_valid_after(now + dt.timedelta(days=days_to)))


def _key(use_rsa: bool):
    # RSA where the client cannot read EC keys (Mono's managed X509Chain: tests/windows/monohttp.py).
    return rsa.generate_private_key(65537, 2048) if use_rsa else ec.generate_private_key(ec.SECP256R1())


def make_ca(folder: Path, cn: str = "deskguard test site CA", use_rsa: bool = False) -> tuple[Issued, object]:
    """(files, private key) of a CA: what an admin would give as --winrm-ca-bundle."""
    key = _key(use_rsa)
    cert = (_builder(cn, cn, key.public_key(), -1, 365)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return _write(folder, "ca", cert, key), key


def issue(folder: Path, ca: Issued, ca_key, stem: str = "server", expired: bool = False,
          use_rsa: bool = False, addresses: tuple[str, ...] = ()) -> Issued:
    """A WinRM listener certificate for 127.0.0.1 (and `addresses`) signed by `ca`; `expired` ended yesterday."""
    key = _key(use_rsa)
    issuer = x509.load_pem_x509_certificate(ca.cert.read_bytes()).subject.rfc4514_string().split("=", 1)[1]
    days = (-30, -1) if expired else (-1, 30)
    # The Authority Key Identifier: Python 3.13 (Debian 13's) verifies strictly (VERIFY_X509_STRICT) and refuses
    # a certificate without it ("Missing Authority Key Identifier", found by the enrolment lab test).
    cert = (_builder("win-loopback", issuer, key.public_key(), *days)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(LOOPBACK)] + [
                x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return _write(folder, stem, cert, key)


def self_signed(folder: Path, use_rsa: bool = False) -> Issued:
    """What `New-SelfSignedCertificate` gives a laptop by default: signed by itself, trusted by nobody."""
    key = _key(use_rsa)
    cert = (_builder("win-loopback", "win-loopback", key.public_key(), -1, 30)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(LOOPBACK)]), critical=False)
            .sign(key, hashes.SHA256()))
    return _write(folder, "selfsigned", cert, key)
