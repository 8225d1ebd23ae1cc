"""Who an identity is: its name (the MQTT username), its role, whether it was revoked."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from fedstream.shared.errors import ConfigError, Reason

# Mosquitto refuses '+' and '#' in usernames (CVE-2017-7650) and an ACL names a user's topics
# one level each: an identity is a plain name.
# \A and \Z, not ^ and $: `$` also matches before a final newline, and an ACL is line-based.
IDENTITY_RE = re.compile(r"\A[A-Za-z0-9_.-]{1,64}\Z")


class Role(StrEnum):
    """What an identity is for; the ACL gives each role its topics."""

    BROKER = "broker"
    CLOUD = "cloud"
    EDGE = "edge"
    OPERATOR = "operator"
    PRODUCER = "producer"


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """One identity the federation's CA issued a certificate to.

    Args:
        name: The certificate's CN, which the broker takes as the MQTT username.
        role: The certificate's OU.
        revoked: True once `pki.revoke` listed its certificate in the CRL: it may do nothing.
        serial: The certificate's serial number (what the CRL lists).
    """

    name: str
    role: Role
    revoked: bool
    serial: int

    def __post_init__(self) -> None:
        check_identity(self.name)


def check_identity(name: str) -> str:
    """`name` if it can be an identity (an MQTT username and one topic level).

    Raises:
        ConfigError: BAD_CONFIG naming what an identity may hold.
    """
    if not IDENTITY_RE.fullmatch(name):
        raise ConfigError(Reason.BAD_CONFIG, f"identity {name!r} must be 1-64 letters, digits, "
                                             "'_', '.' or '-' (an MQTT username, one topic "
                                             "level)")
    return name


def common_name(cert: Path) -> str:
    """The identity a certificate file names (its CN: the MQTT username under TLS).

    Raises:
        ConfigError: BAD_CONFIG for a file that is not a PEM certificate with a CN.
    """
    try:
        names = x509.load_pem_x509_certificate(cert.read_bytes()).subject \
            .get_attributes_for_oid(NameOID.COMMON_NAME)
    except (OSError, ValueError) as err:
        raise ConfigError(Reason.BAD_CONFIG, f"{cert}: not a readable certificate: {err}") \
            from err
    if not names:
        raise ConfigError(Reason.BAD_CONFIG, f"{cert}: the certificate names no CN")
    return check_identity(str(names[0].value))
