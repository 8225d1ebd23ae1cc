"""X.509 building for `pki.py`: the CA's self-signed certificate and an identity's
certificate, made in memory as PEM (the caller writes them)."""

from __future__ import annotations

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedstream.shared.security.identity import Role

CA_DAYS, LEAF_DAYS = 3650, 825


def new_ca(federation: str) -> tuple[bytes, bytes]:
    """A new CA key and its self-signed certificate (may sign certificates and CRLs), as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedstream"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"fedstream {federation} CA")])
    now = now_utc()
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
    return _key_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def new_leaf(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, name: str,
             role: Role, hosts: tuple[str, ...]) -> tuple[bytes, bytes]:
    """A new key and its certificate for identity `name` (CN `name`, OU `role`), as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = now_utc()
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
    return _key_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def now_utc() -> datetime.datetime:
    """Now, a minute back: a peer whose clock is slightly behind still accepts a fresh
    certificate or CRL."""
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
