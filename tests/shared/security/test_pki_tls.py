"""The federation's CA and certificates, and Mosquitto's TLS listener that requires them:
a real broker on loopback, real TLS handshakes."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from fedstream.broker import BrokerParams, BrokerTls, Mosquitto
from fedstream.shared.errors import ConfigError, Reason, TransportError
from fedstream.shared.protocol.connection import ClientTls, Connection
from fedstream.shared.protocol.mqtt import MqttClient
from fedstream.shared.security.pki import Role, init_ca, issue

pytestmark = pytest.mark.mosquitto


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA with the broker's certificate (for 127.0.0.1) and edge e1's."""
    root = tmp_path_factory.mktemp("pki")
    init_ca(root, "lab")
    issue(root, "broker", Role.BROKER, hosts=("127.0.0.1", "localhost"))
    issue(root, "e1", Role.EDGE)
    return root


@pytest.fixture(scope="module")
def secured(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A Mosquitto with its plain loopback listener and a TLS listener requiring certs."""
    tls = BrokerTls(ca=pki / "ca.crt", cert=pki / "broker.crt", key=pki / "broker.key")
    with Mosquitto(BrokerParams(data_dir=tmp_path_factory.mktemp("tls-broker"),
                                tls=tls)) as running:
        yield running


def _client(broker: Mosquitto, tls: ClientTls | None, name: str) -> MqttClient:
    port = broker.tls_port if tls is not None else broker.port
    return MqttClient(client_id=name, conn=Connection(host="127.0.0.1", port=port, tls=tls,
                                                      connect_timeout_s=3.0))


def test_ca_and_identities_are_made_once_with_private_keys_kept_private(pki: Path) -> None:
    """The CA and each identity are written once (a second call keeps them); keys are 0600;
    an identity's certificate names it as CN and its role as OU, signed by the CA."""
    # Prepare
    before = (pki / "e1.crt").read_bytes()

    # Execute
    again = issue(pki, "e1", Role.EDGE)
    cert = x509.load_pem_x509_certificate(again.cert.read_bytes())

    # Assert
    assert again.cert.read_bytes() == before
    assert stat.S_IMODE((pki / "e1.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((pki / "ca.key").stat().st_mode) == 0o600
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "e1"
    assert cert.subject.get_attributes_for_oid(
        x509.NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "edge"
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)


@pytest.mark.parametrize("name", ["e/1", "e+", "#", "", "x" * 65])
def test_an_identity_that_cannot_be_a_username_is_refused(pki: Path, name: str) -> None:
    """A name with a topic separator or wildcard (CVE-2017-7650), empty or too long."""
    # Prepare / Execute
    with pytest.raises(ConfigError) as info:
        issue(pki, name, Role.EDGE)

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG


def test_issuing_without_a_ca_says_how_to_make_one(tmp_path: Path) -> None:
    """No CA in the directory: a clear error naming `fedstream pki init`."""
    # Prepare / Execute
    with pytest.raises(ConfigError, match="pki init"):
        issue(tmp_path, "e1", Role.EDGE)


def test_an_enrolled_certificate_connects_over_tls(pki: Path, secured: Mosquitto) -> None:
    """An edge with its certificate from the federation CA holds a TLS session."""
    # Prepare
    client = _client(secured, ClientTls(ca=pki / "ca.crt", cert=pki / "e1.crt",
                                        key=pki / "e1.key"), "e1")

    # Execute
    client.connect()

    # Assert
    assert client.connected
    client.close()


def test_a_client_without_a_certificate_or_from_another_ca_is_refused(
        pki: Path, secured: Mosquitto, tmp_path: Path) -> None:
    """No client certificate, or one from another CA: the TLS listener refuses the session;
    the plain listener on loopback still takes anonymous development clients."""
    # Prepare
    init_ca(tmp_path, "rogue")
    rogue = issue(tmp_path, "e1", Role.EDGE)
    wrong_ca = _client(secured, ClientTls(ca=pki / "ca.crt", cert=rogue.cert, key=rogue.key),
                       "rogue")
    no_cert = MqttClient(client_id="anon", conn=Connection(host="127.0.0.1",
                                                           port=secured.tls_port,
                                                           connect_timeout_s=3.0))
    plain = _client(secured, None, "dev")

    # Execute
    with pytest.raises(TransportError) as refused:
        wrong_ca.connect()
    with pytest.raises(TransportError) as anonymous:
        no_cert.connect()
    plain.connect()

    # Assert
    assert refused.value.reason in (Reason.BROKER_REFUSED, Reason.BROKER_UNREACHABLE)
    assert anonymous.value.reason in (Reason.BROKER_REFUSED, Reason.BROKER_UNREACHABLE)
    assert plain.connected
    plain.close()


def test_a_server_certificate_from_another_ca_is_refused_at_once(
        pki: Path, secured: Mosquitto, tmp_path: Path) -> None:
    """A client that trusts only its own federation's CA refuses a broker whose certificate
    another CA signed (a man in the middle), as broker_refused, without retrying."""
    # Prepare
    init_ca(tmp_path, "other")
    client = _client(secured, ClientTls(ca=tmp_path / "ca.crt", cert=pki / "e1.crt",
                                        key=pki / "e1.key"), "e1-mitm")

    # Execute
    with pytest.raises(TransportError) as info:
        client.connect()

    # Assert
    assert info.value.reason is Reason.BROKER_REFUSED
    assert "certificate verify failed" in info.value.detail


def test_missing_tls_files_are_a_config_error(tmp_path: Path) -> None:
    """A client naming TLS files that do not exist fails when it is made, not later."""
    # Prepare
    tls = ClientTls(ca=tmp_path / "ca.crt", cert=tmp_path / "e.crt", key=tmp_path / "e.key")

    # Execute
    with pytest.raises(ConfigError) as info:
        MqttClient(client_id="x", conn=Connection(host="127.0.0.1", port=1, tls=tls))

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG
