"""Ed25519 keys on disk and the signatures over update and manifest statements."""

from __future__ import annotations

import dataclasses
import hashlib
import stat
from pathlib import Path

import pytest

from fedstream.shared.errors import ConfigError, Reason, SecurityError
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.messages import BlobHeader, Manifest, TensorSpec, UpdateMeta
from fedstream.shared.protocol.statements import manifest_statement, update_statement
from fedstream.shared.security.signing import (
    load_signer,
    load_verifier,
    make_key,
    public_path,
)

HEADER = BlobHeader(blob_id="u1", size=16, sha256=hashlib.sha256(b"x").digest(), count=1,
                    chunk_size=16, codec="f32", spec=(TensorSpec(name="w", shape=(2, 2)),))
META = UpdateMeta(edge_id="e1", round_id="r1", base_version=3, samples=120, loss=0.25, seq=7)


def _statement(meta: UpdateMeta = META, header: BlobHeader = HEADER, *,
               federation: str = "lab", model: str = "m") -> bytes:
    return update_statement(federation=federation, model=model, meta=meta, header=header)


def test_a_key_is_made_once_private_half_0600_public_half_beside_it(tmp_path: Path) -> None:
    """`make_key` writes the key 0600 and `<key>.pub`; a second call keeps the same key."""
    # Prepare
    path = tmp_path / "e1.sign.key"

    # Execute
    first = make_key(path)
    again = make_key(path)

    # Assert
    assert again.public == first.public == load_verifier(public_path(path)).public
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_signer(path).public == first.public


def test_a_signature_verifies_and_any_changed_claim_breaks_it(tmp_path: Path) -> None:
    """The signer's statement verifies; the same signature over a statement with one
    field changed (round, base, samples, sequence, sha256, codec, federation, model) is
    bad_signature."""
    # Prepare
    signer = make_key(tmp_path / "k")
    verifier = load_verifier(public_path(tmp_path / "k"))
    sig = signer.sign(_statement())
    changed = [
        _statement(dataclasses.replace(META, round_id="r2")),
        _statement(dataclasses.replace(META, base_version=4)),
        _statement(dataclasses.replace(META, samples=10**9)),
        _statement(dataclasses.replace(META, seq=8)),
        _statement(header=dataclasses.replace(HEADER, sha256=bytes(32))),
        _statement(header=dataclasses.replace(HEADER, codec="f16")),
        _statement(federation="other"),
        _statement(model="other"),
    ]

    # Execute
    verifier.check(sig, _statement(), what="update u1")
    refused = []
    for statement in changed:
        with pytest.raises(SecurityError) as info:
            verifier.check(sig, statement, what="update u1")
        refused.append(info.value.reason)

    # Assert
    assert refused == [Reason.BAD_SIGNATURE] * len(changed)


def test_no_signature_is_unsigned_and_another_key_is_bad(tmp_path: Path) -> None:
    """An empty signature is `unsigned`; one by another key `bad_signature`."""
    # Prepare
    make_key(tmp_path / "a")
    verifier = load_verifier(public_path(tmp_path / "a"))
    other = make_key(tmp_path / "b").sign(_statement())

    # Execute
    with pytest.raises(SecurityError) as none:
        verifier.check(b"", _statement(), what="update u1")
    with pytest.raises(SecurityError) as wrong:
        verifier.check(other, _statement(), what="update u1")

    # Assert
    assert none.value.reason is Reason.UNSIGNED
    assert wrong.value.reason is Reason.BAD_SIGNATURE


def test_the_update_id_is_not_signed_so_a_renamed_copy_verifies() -> None:
    """The statement leaves the update id out: a replay under a fresh id is the sequence
    number's to refuse (cloud/keyring.py), not the signature's."""
    # Prepare / Execute
    renamed = _statement(header=dataclasses.replace(HEADER, blob_id="u2"))

    # Assert
    assert renamed == _statement()


def test_a_manifest_statement_is_apart_from_an_update_statement() -> None:
    """Purpose strings differ, so no update signature can pass as a manifest's; the
    manifest's metrics are not signed, its architecture is."""
    # Prepare
    arch = Architecture.mlp((4, 2))
    manifest = Manifest(model="m", version=3, parent=2, header=HEADER, arch=arch,
                        metrics={"accuracy": 0.5})

    # Execute
    base = manifest_statement(federation="lab", manifest=manifest)
    other_metrics = manifest_statement(
        federation="lab", manifest=dataclasses.replace(manifest, metrics={"accuracy": 0.9}))
    other_arch = manifest_statement(
        federation="lab", manifest=dataclasses.replace(manifest,
                                                       arch=Architecture.mlp((4, 3, 2))))

    # Assert
    assert base == other_metrics
    assert base != other_arch
    assert base != _statement()


def test_canonical_bytes_do_not_depend_on_map_order() -> None:
    """Maps built in any order, at any depth, encode the same."""
    # Prepare / Execute
    one = wire.canonical({"b": 1, "a": {"y": [1, 2], "x": (3,)}})
    two = wire.canonical({"a": {"x": [3], "y": [1, 2]}, "b": 1})

    # Assert
    assert one == two


@pytest.mark.parametrize("content", [b"", b"not a key\n", b"-----BEGIN PRIVATE KEY-----\nxx\n"
                                     b"-----END PRIVATE KEY-----\n"])
def test_a_file_that_is_not_a_key_is_a_clear_config_error(tmp_path: Path,
                                                         content: bytes) -> None:
    """Garbage, empty or a broken PEM: bad_config naming the file, for either half."""
    # Prepare
    path = tmp_path / "broken"
    path.write_bytes(content)

    # Execute
    with pytest.raises(ConfigError) as private:
        load_signer(path)
    with pytest.raises(ConfigError) as public:
        load_verifier(path)

    # Assert
    assert private.value.reason is public.value.reason is Reason.BAD_CONFIG
    assert str(path) in private.value.detail


def test_a_missing_key_file_is_config_not_found(tmp_path: Path) -> None:
    """A path with no file: config_not_found."""
    # Prepare / Execute
    with pytest.raises(ConfigError) as info:
        load_verifier(tmp_path / "cloud.sign.key.pub")

    # Assert
    assert info.value.reason is Reason.CONFIG_NOT_FOUND
