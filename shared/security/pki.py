"""A federation's own certificate authority, the certificates it issues and revokes, and the
broker's ACL made from them (files on disk).

`init_ca` makes the CA once; `issue` gives an identity (the broker, the cloud, an edge, an
operator, a data producer) a key and a certificate whose common name is its MQTT username: the
broker's TLS listener takes the certificate's CN as the username (`use_identity_as_username`),
so the ACL names it. `revoke` lists an identity's certificate in the CRL and takes it out of
the ACL. Every change rewrites `acl` (and `revoke` also `crl.pem`) so both are always current;
the broker reads them again on SIGHUP (`fedstream.broker.reload_broker`).

Keys are ECDSA P-256 (what every TLS stack here speaks); private keys are written 0600. Files
are written whole or not at all (`shared/files.py`), under a lock on the directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedstream.shared.errors import ConfigError, Reason, StoreError
from fedstream.shared.files import write_atomic
from fedstream.shared.protocol.topics import check_name
from fedstream.shared.security import revocation
from fedstream.shared.security._certs import new_ca, new_leaf, now_utc
from fedstream.shared.security.acl import render_acl
from fedstream.shared.security.identity import IDENTITY_RE, Identity, Role, check_identity
from fedstream.shared.security.revocation import crl_path

__all__ = ["IDENTITY_RE", "Identity", "Issued", "Role", "acl_path", "ca_paths", "crl_path",
           "federation_of", "identities", "init_ca", "issue", "revoke", "write_acl"]

PKI_FILE, ACL_FILE, LOCK_FILE = "pki.json", "acl", ".pki.lock"


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


def acl_path(root: Path) -> Path:
    """The broker's ACL for the identities in `root` (Mosquitto's `acl_file`)."""
    return root / ACL_FILE


def init_ca(root: Path, federation: str) -> Path:
    """Make the federation's CA in `root` unless it is there (idempotent); its certificate.

    Also records the federation's name (`pki.json`), and writes an empty CRL and ACL where
    there are none yet: Mosquitto refuses to start without its `crlfile` and `acl_file`.

    Raises:
        ConfigError: BAD_CONFIG for a federation name that is not a plain name, or a CA in
            `root` made for another federation.
        StoreError: STORE_FAILED when the files cannot be written.
    """
    check_name("federation", federation)
    key_path, cert_path = ca_paths(root)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root):
        if not (key_path.exists() and cert_path.exists()):
            ca_key_pem, ca_cert_pem = new_ca(federation)
            _write(key_path, ca_key_pem, private=True)
            _write(cert_path, ca_cert_pem)
        recorded = root / PKI_FILE
        # A CA made before its federation was recorded still names it in its CN.
        found = federation_of(root) if recorded.exists() else _named_by_ca(root)
        if found != federation:
            raise ConfigError(Reason.BAD_CONFIG, f"{root}: the CA here is federation "
                                                 f"{found!r}'s, not {federation!r}")
        if not recorded.exists():
            _write(recorded, (json.dumps({"federation": federation}) + "\n").encode())
        if not crl_path(root).exists():
            ca_key, ca_cert = _load_ca(root)
            revocation.write_crl(root, ca_key, ca_cert, now_utc())
        if not acl_path(root).exists():
            _write_acl(root)
    return cert_path


def federation_of(root: Path) -> str:
    """The federation the CA in `root` was made for.

    Raises:
        ConfigError: BAD_CONFIG when `root` records none (no CA, or one made before the name
            was recorded) or the record is malformed.
    """
    path = root / PKI_FILE
    try:
        federation = json.loads(path.read_text())["federation"]
    except FileNotFoundError:
        raise ConfigError(Reason.BAD_CONFIG, f"{root}: no federation recorded ({PKI_FILE}); "
                                             f"run `fedstream pki init --dir {root} "
                                             "--federation NAME`") from None
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ConfigError(Reason.BAD_CONFIG, f"{path}: unreadable ({err!r})") from err
    if not isinstance(federation, str):
        raise ConfigError(Reason.BAD_CONFIG, f"{path}: federation is not a string")
    return check_name("federation", federation)


def issue(root: Path, name: str, role: Role, *, hosts: tuple[str, ...] = ()) -> Issued:
    """A key and a certificate for identity `name`, signed by the CA in `root` (idempotent:
    an identity issued before keeps its files); the ACL is rewritten to include it.

    Args:
        root: Holds the CA (see `init_ca`); the identity's files go to `root/<name>.{key,crt}`.
        name: The identity, also the certificate's CN and so the MQTT username.
        role: Recorded in the certificate (OU) for the ACL and for audits.
        hosts: For the broker: the names and addresses its certificate is valid for.

    Raises:
        ConfigError: BAD_CONFIG for a name that is not a plain name, a name that was revoked
            (a revoked identity is never enabled again), or no CA in `root`.
        StoreError: STORE_FAILED when the files cannot be written.
    """
    check_identity(name)
    key_path, cert_path = root / f"{name}.key", root / f"{name}.crt"
    ca_cert_path = ca_paths(root)[1]
    with _locked(root):
        ca_key, ca_cert = _load_ca(root)
        if name in revocation.revocations(root):
            raise ConfigError(Reason.BAD_CONFIG, f"identity {name!r} was revoked; choose a "
                                                 "new name")
        if not (key_path.exists() and cert_path.exists()):
            key_pem, cert_pem = new_leaf(ca_key, ca_cert, name, role, hosts)
            _write(key_path, key_pem, private=True)
            _write(cert_path, cert_pem)
        _write_acl(root)
    return Issued(name=name, role=role, key=key_path, cert=cert_path, ca=ca_cert_path)


def identities(root: Path) -> list[Identity]:
    """Every identity the CA in `root` issued a certificate to (not the CA), sorted by name.

    Raises:
        ConfigError: BAD_CONFIG for a certificate that is unreadable, was not issued by this
            CA, or names another identity than its file or no known role.
    """
    ca_cert = _load_ca(root)[1]
    revoked = revocation.revocations(root)
    found = []
    for path in sorted(root.glob("*.crt")):
        if path.name == ca_paths(root)[1].name:
            continue
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            cert.verify_directly_issued_by(ca_cert)
            cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
            role = Role(str(cert.subject.get_attributes_for_oid(
                NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value))
        except (OSError, ValueError, TypeError, IndexError, InvalidSignature) as err:
            raise ConfigError(Reason.BAD_CONFIG, f"{path}: not an identity certificate of "
                                                 f"this CA ({err!r})") from err
        if cn != path.stem:
            raise ConfigError(Reason.BAD_CONFIG, f"{path}: certificate names {cn!r}")
        found.append(Identity(name=path.stem, role=role, revoked=path.stem in revoked,
                              serial=cert.serial_number))
    return found


def revoke(root: Path, name: str) -> bool:
    """Revoke identity `name` for good: its serial joins the CRL, its lines leave the ACL.

    Idempotent; a repeat also rewrites the CRL and the ACL, healing a revocation that was
    recorded but whose files were not written. The broker applies both on its next reload.

    Returns:
        True if `name` is newly revoked, False if it was revoked already.

    Raises:
        ConfigError: UNKNOWN_NAME for an identity this CA never issued (listing those it
            did); BAD_CONFIG for the broker's own certificate (the broker does not check it
            against the CRL: make a new CA instead) or no CA in `root`.
        StoreError: STORE_FAILED when the files cannot be written.
    """
    check_identity(name)
    with _locked(root):
        ca_key, ca_cert = _load_ca(root)
        known = {i.name: i for i in identities(root)}
        if name not in known:
            raise ConfigError(Reason.UNKNOWN_NAME, f"no identity {name!r} was issued in "
                                                   f"{root}; known: {', '.join(known)}")
        if known[name].role is Role.BROKER:
            raise ConfigError(Reason.BAD_CONFIG, f"{name!r} is the broker's certificate, which "
                                                 "the broker does not check against its CRL; "
                                                 "make a new CA instead")
        now = now_utc()
        # The record of truth first: a crash after it leaves a revocation a repeat completes.
        added = revocation.record(root, revocation.Revocation(
            name=name, serial=known[name].serial, at=now))
        revocation.write_crl(root, ca_key, ca_cert, now)
        _write_acl(root)
    return added


def write_acl(root: Path) -> Path:
    """Write the broker's ACL for the identities in `root` (see `acl.render_acl`); its path.

    Raises:
        ConfigError: BAD_CONFIG when `root` records no federation or holds a bad certificate.
        StoreError: STORE_FAILED when the file cannot be written.
    """
    with _locked(root):
        return _write_acl(root)


def _write_acl(root: Path) -> Path:
    path = acl_path(root)
    # Mosquitto runs as the user who started it; 0644 lets a broker run by another user read it.
    _write(path, render_acl(federation_of(root), identities(root)).encode())
    return path


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One writer at a time: an `issue` racing a `revoke` could otherwise write an ACL that
    predates the revocation."""
    if not root.is_dir():
        raise ConfigError(Reason.BAD_CONFIG, f"{root}: no CA here; run `fedstream pki init`")
    try:
        fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as err:
        raise StoreError(Reason.STORE_FAILED, f"{root}: cannot lock ({err})") from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _named_by_ca(root: Path) -> str:
    cn = _load_ca(root)[1].subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return str(cn).removeprefix("fedstream ").removesuffix(" CA")


def _load_ca(root: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key_path, cert_path = ca_paths(root)
    if not (key_path.exists() and cert_path.exists()):
        raise ConfigError(Reason.BAD_CONFIG, f"{root}: no CA here; run `fedstream pki init`")
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(Reason.BAD_CONFIG, f"{key_path}: not an EC key")
    return key, x509.load_pem_x509_certificate(cert_path.read_bytes())


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Whole or absent; a private key 0600 from its first byte (StoreError on failure)."""
    write_atomic(path, data, mode=0o600 if private else 0o644)

