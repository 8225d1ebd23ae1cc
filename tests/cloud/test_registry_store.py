"""Files on disk: atomic writes and the update spool (spool.py), model versions (ModelFiles)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from fedstream.cloud.registry_store import ModelFiles
from fedstream.cloud.spool import Spool, write_atomic
from fedstream.shared.errors import Reason, StoreError
from fedstream.shared.protocol.messages import TensorSpec

# Not in alphabetical order: safetensors sorts names, so load must follow the spec instead.
SPEC = (TensorSpec(name="z.weight", shape=(2, 2)), TensorSpec(name="a.bias", shape=(3,)))
# -0.0, a subnormal and 0.1 (inexact in float32) catch any lossy or reordering path.
WEIGHTS = [torch.tensor([[1.5, -0.0], [0.1, -2.0]]), torch.tensor([1e-45, 3.0, -0.25])]


def _bits(tensors: list[torch.Tensor]) -> list[tuple[tuple[int, ...], str, bytes]]:
    return [(tuple(t.shape), str(t.dtype), t.numpy().tobytes()) for t in tensors]


# -- write_atomic and Spool ----------------------------------------------------------------

def test_spool_round_trips_a_blob(tmp_path: Path) -> None:
    """A blob put in the spool (here as a memoryview) reads back byte for byte from its path."""
    # Prepare
    spool = Spool(tmp_path / "spool")

    # Execute
    rel = spool.put("r1", "u1", memoryview(b"\x00\x01\xfe\xff"))

    # Assert
    assert rel == "r1/u1.blob"
    assert spool.get(rel) == b"\x00\x01\xfe\xff"


def test_spool_get_of_a_missing_blob_is_store_failed(tmp_path: Path) -> None:
    """Reading a blob that was never stored raises store_failed."""
    # Prepare
    spool = Spool(tmp_path / "spool")

    # Execute
    with pytest.raises(StoreError) as caught:
        spool.get("r1/none.blob")

    # Assert
    assert caught.value.reason is Reason.STORE_FAILED


def test_overwrite_replaces_the_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    """Writing a path twice leaves only that file, holding the second content."""
    # Prepare
    path = tmp_path / "out" / "x.bin"
    write_atomic(path, b"old")

    # Execute
    write_atomic(path, b"new!")

    # Assert
    assert path.read_bytes() == b"new!"
    assert [p.name for p in path.parent.iterdir()] == ["x.bin"]


def test_failed_write_is_store_failed_and_keeps_the_old_file(tmp_path: Path) -> None:
    """When the temp file cannot be created (a directory sits on its name) the old file stays."""
    # Prepare
    path = tmp_path / "x.bin"
    write_atomic(path, b"old")
    (tmp_path / ".x.bin.tmp").mkdir()

    # Execute
    with pytest.raises(StoreError) as caught:
        write_atomic(path, b"new")

    # Assert
    assert caught.value.reason is Reason.STORE_FAILED
    assert path.read_bytes() == b"old"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_write_into_a_read_only_directory_is_store_failed(tmp_path: Path) -> None:
    """A directory without write permission refuses the write and keeps the old file."""
    # Prepare
    path = tmp_path / "ro" / "x.bin"
    write_atomic(path, b"old")
    path.parent.chmod(0o500)

    # Execute
    try:
        with pytest.raises(StoreError) as caught:
            write_atomic(path, b"new")
    finally:
        path.parent.chmod(0o700)

    # Assert
    assert caught.value.reason is Reason.STORE_FAILED
    assert path.read_bytes() == b"old"


def test_write_onto_a_directory_is_store_failed(tmp_path: Path) -> None:
    """A target path that is a directory raises store_failed and the directory is untouched."""
    # Prepare
    path = tmp_path / "x.bin"
    path.mkdir()
    (path / "inside").write_bytes(b"keep")

    # Execute
    with pytest.raises(StoreError) as caught:
        write_atomic(path, b"new")

    # Assert
    assert caught.value.reason is Reason.STORE_FAILED
    assert (path / "inside").read_bytes() == b"keep"


def test_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    """A write whose final rename fails cleans up the temp file it wrote."""
    # Prepare
    (tmp_path / "x.bin").mkdir()

    # Execute
    with pytest.raises(StoreError):
        write_atomic(tmp_path / "x.bin", b"new")

    # Assert
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]


# -- ModelFiles ----------------------------------------------------------------------------

def test_weights_round_trip_bit_exact_in_spec_order(tmp_path: Path) -> None:
    """Saved weights load back in spec order with identical bits, and no server state."""
    # Prepare
    models = ModelFiles(tmp_path / "models")

    # Execute
    name = models.save(3, SPEC, WEIGHTS, None)
    tensors, state = models.load(name, SPEC)

    # Assert
    assert name == "v3.safetensors"
    assert _bits(tensors) == _bits(WEIGHTS)
    assert state is None


def test_server_state_round_trips_with_more_than_ten_tensors_per_key(tmp_path: Path) -> None:
    """Twelve tensors per state key come back in index order (10 and 11 after 9, not after 1)."""
    # Prepare
    models = ModelFiles(tmp_path / "models")
    state = {"m": [torch.tensor([float(i)]) for i in range(12)],
             "v": [torch.tensor([100.0 + i, 0.1]) for i in range(12)]}

    # Execute
    name = models.save(1, SPEC, WEIGHTS, state)
    tensors, loaded = models.load(name, SPEC)

    # Assert
    assert _bits(tensors) == _bits(WEIGHTS)
    assert loaded is not None and sorted(loaded) == ["m", "v"]
    assert [t.item() for t in loaded["m"]] == [float(i) for i in range(12)]
    assert _bits(loaded["m"]) == _bits(state["m"])
    assert _bits(loaded["v"]) == _bits(state["v"])


def test_file_lacking_a_spec_tensor_is_store_failed(tmp_path: Path) -> None:
    """Loading against a spec with a tensor the file does not hold raises store_failed."""
    # Prepare
    models = ModelFiles(tmp_path / "models")
    name = models.save(1, SPEC, WEIGHTS, None)
    wider = (*SPEC, TensorSpec(name="b.weight", shape=(1,)))

    # Execute
    with pytest.raises(StoreError) as caught:
        models.load(name, wider)

    # Assert
    assert caught.value.reason is Reason.STORE_FAILED
    assert "b.weight" in caught.value.detail


@pytest.mark.parametrize("damage", [
    "missing",
    pytest.param("garbage"),
    pytest.param("truncated"),
])
def test_missing_or_corrupt_file_is_store_failed(damage: str, tmp_path: Path) -> None:
    """A version file that is gone, not safetensors, or cut short raises store_failed."""
    # Prepare
    models = ModelFiles(tmp_path / "models")
    name = models.save(1, SPEC, WEIGHTS, None)
    path = models.root / name
    if damage == "missing":
        path.unlink()
    elif damage == "garbage":
        path.write_bytes(b"not a safetensors file")
    else:
        path.write_bytes(path.read_bytes()[:-3])

    # Execute
    with pytest.raises(StoreError) as caught:
        models.load(name, SPEC)

    # Assert
    assert caught.value.reason is Reason.STORE_FAILED
