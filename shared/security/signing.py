"""Ed25519 keys and signatures over fedstream's objects (the `cryptography` package).

An edge signs its updates and the cloud its manifests, over the canonical statements of
`shared/protocol/statements.py`; the signature rides in the object, so it holds across every
broker hop. A private key is a PKCS#8 PEM file written 0600 once and kept (an identity's key
never changes under it); a public key travels as its 32 raw bytes or a PEM file.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedstream.shared.errors import ConfigError, Reason, SecurityError
from fedstream.shared.files import write_atomic

PUBLIC_KEY_BYTES = 32


class Signer:
    """Signs statements with one private key.

    Args:
        key: The Ed25519 private key.
    """

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public = public_bytes(key.public_key())

    def sign(self, statement: bytes) -> bytes:
        """The 64-byte signature of `statement`."""
        return self._key.sign(statement)


class Verifier:
    """Checks signatures made by one public key.

    Args:
        public: The key's 32 raw bytes.

    Raises:
        ConfigError: BAD_CONFIG for bytes that are not an Ed25519 public key.
    """

    def __init__(self, public: bytes) -> None:
        if len(public) != PUBLIC_KEY_BYTES:
            raise ConfigError(Reason.BAD_CONFIG, f"an Ed25519 public key is "
                                                 f"{PUBLIC_KEY_BYTES} bytes, not {len(public)}")
        self._key = Ed25519PublicKey.from_public_bytes(public)
        self.public = public

    def check(self, signature: bytes, statement: bytes, *, what: str) -> None:
        """Return if `signature` is this key's over `statement`.

        Raises:
            SecurityError: UNSIGNED for an empty signature, BAD_SIGNATURE for any other that
                does not verify (`what` names the object in the detail).
        """
        if not signature:
            raise SecurityError(Reason.UNSIGNED, f"{what} carries no signature")
        try:
            self._key.verify(signature, statement)
        except InvalidSignature:
            raise SecurityError(Reason.BAD_SIGNATURE,
                                f"{what}: the signature is not the enrolled key's over "
                                "its content") from None


def public_bytes(key: Ed25519PublicKey) -> bytes:
    """A public key's 32 raw bytes."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def make_key(path: Path) -> Signer:
    """The signing key at `path`, made (and its public half written beside it as
    `<path>.pub`) if there is none yet: idempotent.

    Raises:
        ConfigError: BAD_CONFIG for a file there that is not an Ed25519 private key.
        StoreError: STORE_FAILED when the files cannot be written.
    """
    if path.exists():
        return load_signer(path)
    key = Ed25519PrivateKey.generate()
    write_atomic(path, key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()), mode=0o600)
    write_atomic(public_path(path), key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        mode=0o644)
    return Signer(key)


def public_path(key_path: Path) -> Path:
    """Where `make_key` writes the public half of the key at `key_path`."""
    return key_path.with_name(key_path.name + ".pub")


def load_signer(path: Path) -> Signer:
    """The Ed25519 private key in PEM file `path`.

    Raises:
        ConfigError: CONFIG_NOT_FOUND for a missing file, BAD_CONFIG for one that is not an
            unencrypted Ed25519 private key.
    """
    try:
        key: object = serialization.load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None  # not PEM, encrypted, or a key type this build cannot read
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(Reason.BAD_CONFIG, f"{path}: not an Ed25519 private key")
    return Signer(key)


def load_verifier(path: Path) -> Verifier:
    """The Ed25519 public key in PEM file `path` (what an edge pins: the cloud's key).

    Raises:
        ConfigError: CONFIG_NOT_FOUND for a missing file, BAD_CONFIG for one that is not an
            Ed25519 public key.
    """
    try:
        key: object = serialization.load_pem_public_key(_read(path))
    except (ValueError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(Reason.BAD_CONFIG, f"{path}: not an Ed25519 public key")
    return Verifier(public_bytes(key))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(Reason.CONFIG_NOT_FOUND, f"{path}: no such key file") from None
    except OSError as err:
        raise ConfigError(Reason.BAD_CONFIG, f"{path}: {err}") from err
