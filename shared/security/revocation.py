"""Revoked identities: the record of which were revoked (`revoked.json`, the record of truth) and
the certificate revocation list the broker checks client certificates against (`crl.pem`,
signed by the federation's CA and rewritten whole from the record)."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.files import write_atomic
from fedstream.shared.security.identity import check_identity

REVOKED_FILE, CRL_FILE = "revoked.json", "crl.pem"
_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Revocation:
    """One revoked identity: its name, the serial of its certificate and when."""

    name: str
    serial: int
    at: datetime.datetime


def crl_path(root: Path) -> Path:
    """The CRL of the CA in `root` (Mosquitto's `crlfile`)."""
    return root / CRL_FILE


def revocations(root: Path) -> dict[str, Revocation]:
    """The identities revoked in `root`, by name (none when nothing was ever revoked).

    Raises:
        ConfigError: BAD_CONFIG when the record is unreadable or malformed.
    """
    path = root / REVOKED_FILE
    try:
        raw = json.loads(path.read_text())
        entries = raw["revoked"] if raw.get("v") == _VERSION else None
        if not isinstance(entries, list):
            raise TypeError("no list of revoked identities")
        found = [Revocation(name=check_identity(e["name"]), serial=int(e["serial"], 16),
                            at=datetime.datetime.fromisoformat(e["at"])) for e in entries]
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise ConfigError(Reason.BAD_CONFIG, f"{path}: unreadable revocation record "
                                             f"({err!r}); restore it from a backup") from err
    return {r.name: r for r in found}


def record(root: Path, revocation: Revocation) -> bool:
    """Add `revocation` to the record in `root`; False if its name was revoked already.

    Raises:
        ConfigError: BAD_CONFIG when the record is unreadable.
        StoreError: STORE_FAILED when it cannot be written.
    """
    known = revocations(root)
    if revocation.name in known:
        return False
    known[revocation.name] = revocation
    # Serials are up to 159 bits: hex strings, which JSON tools other than Python keep exact.
    entries = [{"name": r.name, "serial": format(r.serial, "x"), "at": r.at.isoformat()}
               for r in sorted(known.values(), key=lambda r: r.name)]
    write_atomic(root / REVOKED_FILE,
                 (json.dumps({"v": _VERSION, "revoked": entries}, indent=1) + "\n").encode())
    return True


def write_crl(root: Path, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
              now: datetime.datetime) -> Path:
    """Sign and write the CRL listing every revoked serial in `root` (empty when none).

    Its next update is the CA's own expiry: OpenSSL refuses every client once a CRL is past
    its next update, and ours is only ever replaced, by the next revocation.

    Raises:
        ConfigError: BAD_CONFIG when the record is unreadable.
        StoreError: STORE_FAILED when the CRL cannot be written.
    """
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(now).next_update(ca_cert.not_valid_after_utc)
               # CRL numbers must grow: milliseconds since the epoch do, one CRL at a time.
               .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    for revoked in revocations(root).values():
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(revoked.serial)
            .revocation_date(revoked.at).build())
    path = crl_path(root)
    write_atomic(path, builder.sign(ca_key, hashes.SHA256())
                 .public_bytes(serialization.Encoding.PEM))
    return path
