"""A federation's own certificate authority, and the certificates it issues (files on disk).

`init_ca` makes the CA once; `issue` gives an identity (the broker, the cloud, an edge, an
operator) a key and a certificate whose common name is its MQTT username: the broker's TLS
listener takes the certificate's CN as the username (`use_identity_as_username`), so an ACL
can name it. Keys are ECDSA P-256 (what every TLS stack here speaks); private keys are written
0600. Files are written whole or not at all (`shared/files.py`).
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.files import write_atomic

# Mosquitto refuses '+' and '#' in usernames (CVE-2017-7650) and an ACL's %u fills one topic
# level: an identity is a plain name.
IDENTITY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
CA_DAYS, LEAF_DAYS = 3650, 825


class Role(StrEnum):
    """What an identity is for; the ACL gives each role its topics."""

    BROKER = "broker"
    CLOUD = "cloud"
    EDGE = "edge"
    OPERATOR = "operator"
    PRODUCER = "producer"


@dataclass(frozen=True, slots=True)
class Issued:
    """Where an identity's files are."""

    name: str
    role: Role
    key: Path
    cert: Path
    ca: Path


def ca_paths(root: Path) -> tuple[Path, Path]:
    """The CA's key and certificate under `root`."""
    return root / "ca.key", root / "ca.crt"


def init_ca(root: Path, federation: str) -> Path:
    """Make the federation's CA in `root` unless it is there (idempotent); its certificate.

    Raises:
        ConfigError: BAD_CONFIG for a federation name that is not a plain name.
        StoreError: STORE_FAILED when the files cannot be written.
    """
    _check_name(federation)
    key_path, cert_path = ca_paths(root)
    if key_path.exists() and cert_path.exists():
        return cert_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedstream"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"fedstream {federation} CA")])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write(key_path, _key_pem(key), private=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


def issue(root: Path, name: str, role: Role, *, hosts: tuple[str, ...] = ()) -> Issued:
    """A key and a certificate for identity `name`, signed by the CA in `root` (idempotent:
    an identity issued before keeps its files).

    Args:
        root: Holds the CA (see `init_ca`); the identity's files go to `root/<name>.{key,crt}`.
        name: The identity, also the certificate's CN and so the MQTT username.
        role: Recorded in the certificate (OU) for the ACL and for audits.
        hosts: For the broker: the names and addresses its certificate is valid for.

    Raises:
        ConfigError: BAD_CONFIG for a name that is not a plain name, or no CA in `root`.
        StoreError: STORE_FAILED when the files cannot be written.
    """
    _check_name(name)
    key_path, cert_path = root / f"{name}.key", root / f"{name}.crt"
    ca_key_path, ca_cert_path = ca_paths(root)
    if not (ca_key_path.exists() and ca_cert_path.exists()):
        raise ConfigError(Reason.BAD_CONFIG, f"{root}: no CA here; run `fedstream pki init`")
    if key_path.exists() and cert_path.exists():
        return Issued(name=name, role=role, key=key_path, cert=cert_path, ca=ca_cert_path)
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigError(Reason.BAD_CONFIG, f"{ca_key_path}: not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    usage = (ExtendedKeyUsageOID.SERVER_AUTH if role is Role.BROKER
             else ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([
                   x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedstream"),
                   x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, str(role)),
                   x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now)
               .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [_san(h) for h in hosts]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write(key_path, _key_pem(key), private=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return Issued(name=name, role=role, key=key_path, cert=cert_path, ca=ca_cert_path)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _check_name(name: str) -> None:
    if not IDENTITY_RE.match(name):
        raise ConfigError(Reason.BAD_CONFIG, f"identity {name!r} must be 1-64 letters, digits, "
                                             "'_', '.' or '-' (an MQTT username, one topic "
                                             "level)")


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Whole or absent; a private key 0600 from its first byte (StoreError on failure)."""
    write_atomic(path, data, mode=0o600 if private else 0o644)


def _now() -> datetime.datetime:
    # A minute back, so a peer whose clock is slightly behind still accepts a fresh cert.
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
