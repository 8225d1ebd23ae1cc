"""The cloud's own labelled data: every `*.csv` and `*.npz` of a directory, one window each."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.learning.sources import SOURCES, Dataset

Window = tuple[str, npt.NDArray[np.float32], npt.NDArray[np.int64]]


def load_data_dir(path: Path, *, cols: int, label_column: str = "label") -> list[Window]:
    """Load each data file of `path` in name order as (window name = file stem, x, y).

    CSV files go through the "csv" source; an NPZ file holds "x" (float [N, cols]) and "y"
    (integer [N]).

    Raises:
        ConfigError: BAD_DATA naming the file for a missing directory or a malformed file.
    """
    if not path.is_dir():
        raise ConfigError(Reason.BAD_DATA, f"{path}: not a directory")
    loaded: list[Window] = []
    for file in sorted(path.iterdir()):
        if file.suffix == ".csv":
            data = SOURCES.build("csv", path=str(file), label_column=label_column).load()
        elif file.suffix == ".npz":
            data = _load_npz(file)
        else:
            continue
        if data.features.shape[1] != cols:
            raise ConfigError(Reason.BAD_DATA, f"{file}: {data.features.shape[1]} feature "
                              f"columns, expected {cols}")
        assert data.labels is not None  # both readers give class labels
        loaded.append((file.stem, data.features, data.labels))
    return loaded


def _load_npz(file: Path) -> Dataset:
    try:
        with np.load(file, allow_pickle=False) as npz:
            if "x" not in npz or "y" not in npz:
                raise ConfigError(Reason.BAD_DATA, f"{file}: needs arrays 'x' and 'y', "
                                  f"has {', '.join(npz.files) or 'none'}")
            x, y = npz["x"], npz["y"]
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ConfigError(Reason.BAD_DATA, f"{file}: not a readable npz ({err})") from err
    if x.dtype.kind != "f" or y.dtype.kind not in "iu":
        raise ConfigError(Reason.BAD_DATA, f"{file}: 'x' must be float and 'y' integer, "
                          f"got {x.dtype} and {y.dtype}")
    try:
        return Dataset(features=x.astype(np.float32), labels=y.astype(np.int64),
                       num_classes=max(int(y.max(initial=0)) + 1, 1))
    except ConfigError as err:
        raise ConfigError(Reason.BAD_DATA, f"{file}: {err.detail}") from err
