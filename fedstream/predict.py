"""`fedstream predict`: classify the rows of a CSV file with the cloud's served model over MQTT."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from fedstream.client import FleetAddress, FleetClient
from fedstream.shared.errors import ConfigError, ProtocolError, Reason
from fedstream.shared.protocol.data import MAX_ROWS

_FLOAT32_MAX = float(np.finfo(np.float32).max)


class RowPrediction(NamedTuple):
    """The class predicted for one data row (0 is the first row after any header)."""

    row: int
    prediction: int
    version: int


def read_features(path: Path) -> npt.NDArray[np.float32]:
    """The rows of a CSV of numbers as float32 [rows, cols].

    A first line without a single number is a header and skipped; blank lines are skipped.

    Raises:
        ConfigError: BAD_DATA naming the file (and line) when it cannot be read, holds no rows,
            has rows of different lengths, or a cell that is not a finite float32.
    """
    try:
        # utf-8-sig drops the byte-order mark spreadsheet exports put before the first cell.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            lines = [(reader.line_num, row) for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ConfigError(Reason.BAD_DATA, f"{path}: cannot read ({err})") from err
    if lines and not any(_is_number(cell) for cell in lines[0][1]):
        lines = lines[1:]
    if not lines:
        raise ConfigError(Reason.BAD_DATA, f"{path}: no rows of features")
    width = len(lines[0][1])
    rows: list[list[float]] = []
    for line, row in lines:
        if len(row) != width:
            raise ConfigError(Reason.BAD_DATA,
                              f"{path}, line {line}: {len(row)} fields, expected {width}")
        bad = next((cell for cell in row if not _is_number(cell)), None)
        if bad is not None:
            raise ConfigError(Reason.BAD_DATA,
                              f"{path}, line {line}: {bad!r} is not a finite float32")
        rows.append([float(cell) for cell in row])
    return np.asarray(rows, dtype=np.float32)


def predict_csv(path: Path | str, address: FleetAddress, *,
                batch_rows: int = 256) -> list[RowPrediction]:
    """Classify every row of a CSV file with the model the cloud serves, over MQTT v5.

    Rows go out `batch_rows` at a time, one request/response each; every row reports the
    model version that answered its batch.

    Args:
        path: CSV of float features, header optional (see `read_features`).
        address: The broker, federation and model; its `timeout_s` bounds the broker
            connect and each reply.
        batch_rows: Rows per request, at most the server's `max_rows`.

    Returns:
        One prediction per data row, in file order.

    Raises:
        ConfigError: BAD_DATA for an unreadable or malformed file; BAD_CONFIG for a
            `batch_rows` out of range.
        TransportError: broker_unreachable, or no_reply when the service does not answer.
        FedstreamError: the service's reason when it refuses a request (spec_mismatch for
            the wrong number of columns, overloaded, no_model).
    """
    if not 1 <= batch_rows <= MAX_ROWS:
        raise ConfigError(Reason.BAD_CONFIG, f"batch_rows {batch_rows} not in 1..{MAX_ROWS}")
    features = read_features(Path(path))
    out: list[RowPrediction] = []
    with FleetClient(address) as fleet:
        for start in range(0, len(features), batch_rows):
            chunk = features[start:start + batch_rows]
            reply = fleet.infer(chunk)
            if len(reply.predictions) != len(chunk):
                raise ProtocolError(Reason.SIZE_MISMATCH,
                                    f"{len(reply.predictions)} predictions for {len(chunk)} rows")
            out.extend(RowPrediction(start + i, p, reply.version)
                       for i, p in enumerate(reply.predictions))
    return out


def _is_number(cell: str) -> bool:
    try:
        value = float(cell)
    except ValueError:
        return False
    return math.isfinite(value) and abs(value) <= _FLOAT32_MAX
