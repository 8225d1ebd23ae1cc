"""Tests for revocation in shared/security/pki.py and revocation.py: the federation record,
the identities, the revocation record, the CRL and the ACL kept current (files only)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.security.pki import (
    Identity,
    Role,
    acl_path,
    crl_path,
    federation_of,
    identities,
    init_ca,
    issue,
    revoke,
    write_acl,
)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A CA for federation lab with a broker, a cloud and two edges."""
    root = tmp_path / "pki"
    init_ca(root, "lab")
    issue(root, "broker", Role.BROKER, hosts=("127.0.0.1",))
    issue(root, "cloud", Role.CLOUD)
    issue(root, "e2", Role.EDGE)
    issue(root, "e1", Role.EDGE)
    return root


def _crl(root: Path) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(crl_path(root).read_bytes())


def _ca_key(root: Path) -> ec.EllipticCurvePublicKey:
    key = x509.load_pem_x509_certificate((root / "ca.crt").read_bytes()).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def _serial(root: Path, name: str) -> int:
    return x509.load_pem_x509_certificate((root / f"{name}.crt").read_bytes()).serial_number


def test_a_new_ca_records_its_federation_with_an_empty_crl_and_acl(tmp_path: Path) -> None:
    """`init_ca` records the federation and writes a CRL the CA signed, listing nothing, and
    an ACL without users (Mosquitto refuses to start without either)."""
    # Execute
    init_ca(tmp_path, "lab")
    crl = _crl(tmp_path)
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())

    # Assert
    assert federation_of(tmp_path) == "lab"
    assert len(crl) == 0
    assert crl.is_signature_valid(_ca_key(tmp_path))
    assert crl.next_update_utc == ca.not_valid_after_utc
    assert "user " not in acl_path(tmp_path).read_text()
    assert stat.S_IMODE(acl_path(tmp_path).stat().st_mode) == 0o644


def test_a_ca_is_not_taken_over_by_another_federation(tmp_path: Path) -> None:
    """`init_ca` on a directory holding another federation's CA is refused, not mixed."""
    # Prepare
    init_ca(tmp_path, "lab")

    # Execute
    with pytest.raises(ConfigError, match="'lab'") as info:
        init_ca(tmp_path, "plant")

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG


def test_a_ca_made_before_the_record_is_completed_from_its_common_name(tmp_path: Path) -> None:
    """A directory from before the federation was recorded (no pki.json, CRL or ACL) gets
    them from `init_ca` with the federation its CA names; another name is refused."""
    # Prepare
    init_ca(tmp_path, "lab")
    for name in ("pki.json", "crl.pem", "acl"):
        (tmp_path / name).unlink()

    # Execute
    with pytest.raises(ConfigError):
        init_ca(tmp_path, "plant")
    init_ca(tmp_path, "lab")

    # Assert
    assert federation_of(tmp_path) == "lab"
    assert crl_path(tmp_path).exists() and acl_path(tmp_path).exists()


def test_a_directory_without_a_record_says_how_to_make_one(tmp_path: Path) -> None:
    """No pki.json: a clear BAD_CONFIG naming `fedstream pki init`."""
    # Prepare / Execute
    with pytest.raises(ConfigError, match="pki init") as info:
        federation_of(tmp_path)

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG


def test_identities_are_every_certificate_but_the_cas_with_role_and_serial(pki: Path) -> None:
    """Sorted by name, the role read from each certificate's OU, none revoked yet."""
    # Execute
    got = identities(pki)

    # Assert
    assert got == [
        Identity(name="broker", role=Role.BROKER, revoked=False, serial=_serial(pki, "broker")),
        Identity(name="cloud", role=Role.CLOUD, revoked=False, serial=_serial(pki, "cloud")),
        Identity(name="e1", role=Role.EDGE, revoked=False, serial=_serial(pki, "e1")),
        Identity(name="e2", role=Role.EDGE, revoked=False, serial=_serial(pki, "e2"))]


def test_issuing_keeps_the_acl_current(pki: Path) -> None:
    """Each issued identity is in the ACL as soon as `issue` returns."""
    # Execute
    issue(pki, "ops", Role.OPERATOR)

    # Assert
    text = acl_path(pki).read_text()
    assert [line for line in text.splitlines() if line.startswith("user ")] == [
        "user cloud", "user e1", "user e2", "user ops"]


def test_revoking_lists_the_serial_in_the_crl_and_drops_the_acl_block(pki: Path) -> None:
    """`revoke` is True the first time and False after; the CRL lists exactly the revoked
    serial, signed by the CA; the ACL no longer names it; the identity reads revoked."""
    # Prepare
    serial = _serial(pki, "e1")

    # Execute
    first = revoke(pki, "e1")
    again = revoke(pki, "e1")

    # Assert
    assert (first, again) == (True, False)
    crl = _crl(pki)
    assert [r.serial_number for r in crl] == [serial]
    assert crl.is_signature_valid(_ca_key(pki))
    assert "e1" not in acl_path(pki).read_text()
    assert "user e2" in acl_path(pki).read_text()
    assert {i.name: i.revoked for i in identities(pki)} == {
        "broker": False, "cloud": False, "e1": True, "e2": False}
    assert json.loads((pki / "revoked.json").read_text())["revoked"][0]["name"] == "e1"


def test_a_repeated_revocation_heals_a_crl_and_acl_not_written(pki: Path) -> None:
    """A revocation recorded but whose CRL and ACL are stale (a crash in between) is
    completed by revoking again, and rewriting the ACL never brings the identity back."""
    # Prepare
    stale_acl, stale_crl = acl_path(pki).read_bytes(), crl_path(pki).read_bytes()
    revoke(pki, "e1")
    acl_path(pki).write_bytes(stale_acl)
    crl_path(pki).write_bytes(stale_crl)

    # Execute
    again = revoke(pki, "e1")
    write_acl(pki)

    # Assert
    assert again is False
    assert [r.serial_number for r in _crl(pki)] == [_serial(pki, "e1")]
    assert "e1" not in acl_path(pki).read_text()


def test_a_revoked_name_is_never_issued_again(pki: Path) -> None:
    """Issuing a revoked name is refused (its old files stay revoked), with what to do."""
    # Prepare
    revoke(pki, "e1")

    # Execute
    with pytest.raises(ConfigError, match="revoked; choose a new name") as info:
        issue(pki, "e1", Role.EDGE)

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG
    assert "e1" not in acl_path(pki).read_text()


def test_revoking_an_identity_never_issued_lists_the_known_ones(pki: Path) -> None:
    """UNKNOWN_NAME, naming the identities there are; nothing is recorded."""
    # Prepare / Execute
    with pytest.raises(ConfigError, match="known: broker, cloud, e1, e2") as info:
        revoke(pki, "e9")

    # Assert
    assert info.value.reason is Reason.UNKNOWN_NAME
    assert not (pki / "revoked.json").exists()


def test_the_brokers_certificate_is_not_revoked(pki: Path) -> None:
    """Mosquitto does not check its own certificate against its CRL: refused, not pretended."""
    # Prepare / Execute
    with pytest.raises(ConfigError, match="new CA") as info:
        revoke(pki, "broker")

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG


def test_a_foreign_certificate_in_the_directory_is_reported(pki: Path, tmp_path: Path) -> None:
    """A certificate another CA signed, dropped into the directory, is BAD_CONFIG naming it
    rather than an identity in the ACL."""
    # Prepare
    other = tmp_path / "other"
    init_ca(other, "other")
    issue(other, "intruder", Role.CLOUD)
    (pki / "intruder.crt").write_bytes((other / "intruder.crt").read_bytes())

    # Execute
    with pytest.raises(ConfigError, match=r"intruder\.crt") as info:
        write_acl(pki)

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG
