"""`predict_csv` (fedstream/predict.py): a CSV classified by a running InferenceServer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fedstream.broker import Mosquitto
from fedstream.client import FleetAddress
from fedstream.cloud.config import InferenceConfig
from fedstream.cloud.inference import InferenceServer, ServedModel
from fedstream.predict import RowPrediction, predict_csv, read_features
from fedstream.shared.errors import ConfigError, FedstreamError, Reason
from fedstream.shared.learning.model import tensors_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.connection import Connection
from fedstream.shared.protocol.topics import Topics

ARCH = Architecture.mlp((3, 8, 4))
MODEL = "mlp"
# Never connected to: the file is refused first.
NOWHERE = FleetAddress.local(host="127.0.0.1", port=1, federation="f", model=MODEL)


@pytest.fixture
def serving(broker: Mosquitto, federation: str) -> Iterator[ServedModel]:
    """An InferenceServer for `MODEL` serving version 7; yields that version's model."""
    with InferenceServer(cfg=InferenceConfig(http_port=0, precision="fp32"), arch=ARCH,
                         topics=Topics(federation), model=MODEL,
                         conn=Connection(host=broker.host, port=broker.port)) as server:
        yield server.swap(7, tensors_of(build_model(ARCH, seed=7)))


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rows.csv"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.mosquitto
def test_every_row_is_classified_by_the_served_version(
    serving: ServedModel, broker: Mosquitto, federation: str, tmp_path: Path
) -> None:
    """Five rows sent two per request come back in file order, each naming version 7."""
    # Prepare
    rows = np.random.default_rng(3).standard_normal((5, 3)).astype(np.float32)
    lines = "\n".join(",".join(repr(float(v)) for v in row) for row in rows)
    path = _csv(tmp_path, f"a,b,c\n{lines}\n")

    # Execute
    got = predict_csv(path, FleetAddress.local(host=broker.host, port=broker.port,
                                               federation=federation, model=MODEL),
                      batch_rows=2)

    # Assert
    classes, _ = serving.predict(rows)
    assert got == [RowPrediction(i, int(c), 7) for i, c in enumerate(classes)]


@pytest.mark.mosquitto
def test_rows_of_the_wrong_width_raise_the_servers_reason(
    serving: ServedModel, broker: Mosquitto, federation: str, tmp_path: Path
) -> None:
    """The service's spec_mismatch refusal comes back as a FedstreamError with that reason."""
    # Prepare
    path = _csv(tmp_path, "1,2\n3,4\n")

    # Execute
    with pytest.raises(FedstreamError) as info:
        predict_csv(path, FleetAddress.local(host=broker.host, port=broker.port,
                                             federation=federation, model=MODEL))

    # Assert
    assert info.value.reason is Reason.SPEC_MISMATCH


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,2\n3,4\n", [[1, 2], [3, 4]]),
        ("x,y\n1,2\n\n3.5,-4e1\n", [[1, 2], [3.5, -40]]),
        ("\ufeffx,y\r\n1,2\r\n", [[1, 2]]),
    ],
    ids=["no-header", "header-and-blank-line", "bom-and-crlf"],
)
def test_read_features(tmp_path: Path, text: str, expected: list[list[float]]) -> None:
    """Numbers are read row by row; a first line without numbers is a header."""
    # Execute
    features = read_features(_csv(tmp_path, text))

    # Assert
    assert features.dtype == np.float32
    assert features.tolist() == expected


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("", "no rows"),
        ("a,b\n", "no rows"),
        ("1,2\n3\n", "line 2: 1 fields, expected 2"),
        ("1,2\n3,four\n", "line 2: 'four' is not a finite float32"),
        ("1,2\nnan,4\n", "line 2: 'nan' is not a finite float32"),
        ("1,2\n1e39,4\n", "line 2: '1e39' is not a finite float32"),
        ("1,x\n", "line 1: 'x' is not a finite float32"),
    ],
    ids=["empty", "header-only", "ragged", "text-cell", "nan", "float32-overflow",
         "half-header"],
)
def test_malformed_csv_is_bad_data(tmp_path: Path, text: str, detail: str) -> None:
    """Empty files, ragged rows and cells that are not finite numbers name the line."""
    # Prepare
    path = _csv(tmp_path, text)

    # Execute
    with pytest.raises(ConfigError) as info:
        predict_csv(path, NOWHERE)

    # Assert
    assert info.value.reason is Reason.BAD_DATA
    assert detail in info.value.detail


def test_unreadable_file_is_bad_data(tmp_path: Path) -> None:
    """A missing file or one that is not UTF-8 is bad data naming the path."""
    # Prepare
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81")

    # Execute
    errors = []
    for path in (tmp_path / "missing.csv", binary):
        with pytest.raises(ConfigError) as info:
            read_features(path)
        errors.append(info.value)

    # Assert
    assert [e.reason for e in errors] == [Reason.BAD_DATA, Reason.BAD_DATA]
    assert "missing.csv" in errors[0].detail and "binary.csv" in errors[1].detail


@pytest.mark.parametrize("batch_rows", [0, 65537])
def test_batch_rows_out_of_range_is_bad_config(tmp_path: Path, batch_rows: int) -> None:
    """batch_rows must fit one request."""
    # Execute
    with pytest.raises(ConfigError) as info:
        predict_csv(_csv(tmp_path, "1\n"), NOWHERE, batch_rows=batch_rows)

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG
