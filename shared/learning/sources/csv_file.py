"""The "csv" source: one numeric CSV file with a header row and an integer label column."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.learning.sources.base import SOURCES, Dataset, build_params

_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True, slots=True, kw_only=True)
class CsvParams:
    """Where the file is and which columns hold what.

    Args:
        path: The CSV file.
        label_column: Header name of the integer label column.
        feature_columns: Header names of the feature columns, in order; None takes every
            column except the label, in file order.
        delimiter: One-character field separator.
        num_classes: Number of classes; None means the largest label + 1.

    Raises:
        ConfigError: BAD_CONFIG for an empty name, a bad delimiter or num_classes < 1.
    """

    path: str
    label_column: str
    feature_columns: tuple[str, ...] | None = None
    delimiter: str = ","
    num_classes: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.feature_columns, list):
            # TOML arrays arrive as lists; a tuple keeps the frozen params hashable.
            object.__setattr__(self, "feature_columns", tuple(self.feature_columns))
        cols, label, k = self.feature_columns, self.label_column, self.num_classes
        names_ok = isinstance(cols, tuple) and len(cols) > 0 and all(_is_name(c) for c in cols)
        # The duplicate and label rules read `names`, never a mistyped value that could raise.
        names = cols if names_ok and isinstance(cols, tuple) else ()
        rules = (
            (_is_name(self.path), "path must be a non-empty string"),
            (_is_name(label), "label_column must be a non-empty string"),
            (cols is None or names_ok, "feature_columns must be None or a non-empty list of names"),
            (len(set(names)) == len(names), "feature_columns repeats a name"),
            (label not in names, "feature_columns includes the label column"),
            (
                isinstance(self.delimiter, str) and len(self.delimiter) == 1,
                "delimiter must be 1 char",
            ),
            (k is None or (type(k) is int and k >= 1), "num_classes must be None or an int >= 1"),
        )
        for ok, rule in rules:
            if not ok:
                raise ConfigError(Reason.BAD_CONFIG, f"csv: {rule}; got {self!r}")


class CsvSource:
    """Reads the whole file into memory; meant for gateway-sized files."""

    def __init__(self, params: CsvParams) -> None:
        self.params = params

    def load(self) -> Dataset:
        """Parse the file into float32 features and int64 labels.

        Raises:
            ConfigError: BAD_DATA naming the file, and the line and column where one applies.
        """
        p = self.params
        try:
            # utf-8-sig drops the byte-order mark spreadsheet exports put before the first name.
            with open(p.path, newline="", encoding="utf-8-sig") as handle:
                reader = csv.reader(handle, delimiter=p.delimiter)
                try:
                    return self._parse(reader, lambda: reader.line_num)
                except csv.Error as err:
                    raise _bad(p.path, reader.line_num, f"malformed CSV ({err})") from err
        except FileNotFoundError as err:
            raise ConfigError(Reason.BAD_DATA, f"{p.path}: file not found") from err
        except UnicodeDecodeError as err:
            raise ConfigError(Reason.BAD_DATA, f"{p.path}: not UTF-8 text ({err})") from err
        except OSError as err:
            raise ConfigError(Reason.BAD_DATA, f"{p.path}: cannot read ({err.strerror})") from err

    def describe(self) -> str:
        """One line naming the file and the label column."""
        return f"csv {self.params.path} (label column {self.params.label_column!r})"

    def _parse(self, rows: Iterator[list[str]], line_num: Callable[[], int]) -> Dataset:
        p = self.params
        header = next(rows, None)
        if header is None:
            raise ConfigError(Reason.BAD_DATA, f"{p.path}: empty file, expected a header row")
        names = [name.strip() for name in header]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise _bad(p.path, 1, f"column(s) {', '.join(dupes)} appear more than once")
        wanted = p.feature_columns or tuple(n for n in names if n != p.label_column)
        if not wanted:
            raise _bad(p.path, 1, "no feature columns besides the label column")
        for name in (p.label_column, *wanted):
            if name not in names:
                raise _bad(p.path, 1, f"no column {name!r}; header has {', '.join(names)}")
        label_at = names.index(p.label_column)
        feature_at = [names.index(name) for name in wanted]
        features: list[list[float]] = []
        labels: list[int] = []
        for row in rows:
            if not row:
                continue  # csv yields [] for a blank line, e.g. a trailing newline
            line = line_num()
            if len(row) != len(names):
                raise _bad(p.path, line, f"{len(row)} fields, but the header has {len(names)}")
            features.append([_number(row[i], p.path, line, names[i]) for i in feature_at])
            labels.append(_label(row[label_at], p.path, line, p.label_column, p.num_classes))
        if not labels:
            raise ConfigError(Reason.BAD_DATA, f"{p.path}: empty file, no rows after the header")
        num_classes = p.num_classes if p.num_classes is not None else max(labels) + 1
        return Dataset(
            features=np.asarray(features, dtype=np.float32).reshape(len(labels), len(feature_at)),
            labels=np.asarray(labels, dtype=np.int64),
            num_classes=num_classes,
        )


@SOURCES.add("csv", "numeric CSV file with a header row and an integer label column")
def build_csv(**params: object) -> CsvSource:
    """Build the CSV source from config keywords (see `CsvParams`)."""
    return CsvSource(build_params(CsvParams, params))


def _number(cell: str, path: str, line: int, column: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise _bad(path, line, f"column {column!r}: {cell!r} is not a number") from None
    # Checked per cell so the error can name it; float32 overflow would otherwise show up as inf.
    if not math.isfinite(value) or abs(value) > _FLOAT32_MAX:
        raise _bad(path, line, f"column {column!r}: {cell!r} is not a finite float32")
    return value


def _label(cell: str, path: str, line: int, column: str, num_classes: int | None) -> int:
    try:
        value = int(cell)
    except ValueError:
        raise _bad(path, line, f"column {column!r}: label {cell!r} is not an integer") from None
    if value < 0:
        raise _bad(path, line, f"column {column!r}: label {value} is negative")
    if num_classes is not None and value >= num_classes:
        raise _bad(path, line, f"column {column!r}: label {value} >= num_classes {num_classes}")
    return value


def _bad(path: str, line: int, detail: str) -> ConfigError:
    return ConfigError(Reason.BAD_DATA, f"{path}, line {line}: {detail}")


def _is_name(value: object) -> bool:
    return isinstance(value, str) and value != ""
