"""Tests for shared/files.py: the data directory check at start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fedstream.shared.errors import Reason, StoreError
from fedstream.shared.files import prepare_data_dir


def test_missing_data_dir_is_created(tmp_path: Path) -> None:
    """A data directory that does not exist yet is created with its parents."""
    # Prepare
    path = tmp_path / "a" / "b"

    # Execute
    got = prepare_data_dir(path)

    # Assert
    assert got == path and path.is_dir()


def test_uncreatable_data_dir_names_path_and_key(tmp_path: Path) -> None:
    """A data directory under a regular file is store_failed naming the path and data_dir."""
    # Prepare
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "data"

    # Execute
    with pytest.raises(StoreError) as info:
        prepare_data_dir(path)

    # Assert
    assert info.value.reason is Reason.STORE_FAILED
    assert f"data_dir {path} cannot be created" in info.value.detail


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to any directory")
def test_read_only_data_dir_is_store_failed(tmp_path: Path) -> None:
    """An existing data directory without write permission is store_failed."""
    # Prepare
    tmp_path.chmod(0o500)

    # Execute
    try:
        with pytest.raises(StoreError) as info:
            prepare_data_dir(tmp_path)
    finally:
        tmp_path.chmod(0o700)

    # Assert
    assert f"data_dir {tmp_path} is not writable" in info.value.detail
