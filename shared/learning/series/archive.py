"""Time-series classification archives: the strict `.ts` text reader and the files aeon ships.

The `.ts` format (the UEA/UCR archive's, as aeon writes it) is a header of `@tag value` lines,
then `@data`, then one case per line: each dimension's values separated by `,`, dimensions
separated by `:`, the class label last. This reader takes the one kind of file the archive's
sensor sets are: equal-length, without timestamps or missing values, with class labels. Any
other file is refused with `ConfigError(BAD_DATA, "<path>:<line>: ...")` instead of guessed at.

The packaged files come inside the `aeon` wheel, installed with `pip install --no-deps
aeon==1.6.0` only for them: aeon is never imported (its dependencies are not installed), its
files are found through the distribution's metadata.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import numpy.typing as npt

from fedstream.shared.errors import ConfigError, Reason

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

INSTALL_HINT = "pip install --no-deps aeon==1.6.0"
SPLITS = ("train", "test")
_DATA_DIR = "aeon/datasets/data"
_DATASET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")  # one folder name, no separators
# Decimal syntax only: float() would also take "nan", "inf" and "1_000".
_DECIMAL = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
# Tag names are matched case-insensitively, as aeon does; errors spell them as files do.
_TAGS = {t.lower(): f"@{t}" for t in ("problemName", "timeStamps", "missing", "univariate",
                                      "dimensions", "equalLength", "seriesLength", "classLabel")}
_REQUIRED = ("problemname", "timestamps", "univariate", "equallength", "serieslength",
             "classlabel")


@dataclass(frozen=True, slots=True)
class ArchiveChannel:
    """One dimension of an archive's cases: its channel name and unit (None: not known)."""

    name: str
    unit: str | None


def _imu(prefix: str, unit: str) -> tuple[ArchiveChannel, ...]:
    return tuple(ArchiveChannel(f"{prefix}_{axis}", unit) for axis in "xyz")


# The one place channel names live. The archive states neither names nor units; these follow
# the dataset's description (3-D accelerometer then 3-D gyroscope of a smartwatch).
_KNOWN_CHANNELS: dict[str, tuple[ArchiveChannel, ...]] = {
    "BasicMotions": _imu("accel", "m/s2") + _imu("gyro", "rad/s"),
}


def channels_of(dataset: str, count: int) -> tuple[ArchiveChannel, ...]:
    """The channels of a dataset with `count` dimensions: known names, else `ch0`, `ch1`, ...

    Raises:
        ConfigError: BAD_DATA when a dataset with known channels has another dimension count.
    """
    known = _KNOWN_CHANNELS.get(dataset)
    if known is None:
        return tuple(ArchiveChannel(f"ch{i}", None) for i in range(count))
    if len(known) != count:
        raise ConfigError(Reason.BAD_DATA, f"{dataset} has {len(known)} channels "
                                           f"({', '.join(c.name for c in known)}), not {count}")
    return known


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Archive:
    """The cases of one archive file, as read-only arrays. `eq=False`: compare the arrays.

    Args:
        name: The file's `@problemName`.
        x: `[cases, channels, steps]` float64, all finite.
        y: `[cases]` int64, each an index into `classes`.
        classes: Class names in `@classLabel` order.

    Raises:
        ValueError: When the shapes, dtypes or labels disagree.
    """

    name: str
    x: F64
    y: I64
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        x, y = self.x, self.y
        if x.dtype != np.float64 or x.ndim != 3 or 0 in x.shape:
            raise ValueError(f"x must be non-empty float64 [cases, channels, steps]; "
                             f"got {x.dtype} {x.shape}")
        if y.dtype != np.int64 or y.shape != x.shape[:1]:
            raise ValueError(f"y must be int64 [{x.shape[0]}]; got {y.dtype} {y.shape}")
        if not self.classes or y.min() < 0 or y.max() >= len(self.classes):
            raise ValueError(f"labels must index {len(self.classes)} classes")
        for label, array in (("x", x), ("y", y)):
            view = array.view()
            view.flags.writeable = False
            object.__setattr__(self, label, view)

    @property
    def channels(self) -> tuple[ArchiveChannel, ...]:
        """Names and units of the dimensions (see `channels_of`)."""
        return channels_of(self.name, self.x.shape[1])


@dataclass(frozen=True, slots=True)
class _Header:
    name: str
    dimensions: int
    length: int
    classes: tuple[str, ...]


def archive_file(dataset: str, split: str) -> Path:
    """The packaged `.ts` file of one split of an aeon dataset, e.g. BasicMotions train.

    Args:
        dataset: A dataset folder name in aeon's bundled data ("BasicMotions").
        split: "train" or "test".

    Raises:
        ConfigError: BAD_CONFIG for a name that is not a plain folder name or an unknown
            split; BAD_DATA, naming the install command, when aeon is not installed or has
            no such file.
    """
    if not isinstance(dataset, str) or not _DATASET.fullmatch(dataset):
        raise ConfigError(Reason.BAD_CONFIG, f"dataset {dataset!r} must be 1-100 letters, "
                                             "digits, '_' or '-' (a folder name)")
    if split not in SPLITS:
        raise ConfigError(Reason.BAD_CONFIG, f"split must be one of {list(SPLITS)}; "
                                             f"got {split!r}")
    try:
        dist = importlib.metadata.distribution("aeon")
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(Reason.BAD_DATA, "the archive datasets ship in the aeon package, "
                                           f"which is not installed: run `{INSTALL_HINT}` "
                                           "(read as data files, never imported)") from None
    base = Path(str(dist.locate_file(_DATA_DIR)))
    path = base / dataset / f"{dataset}_{split.upper()}.ts"
    # The name check already rules out separators; this also refuses a symlink out of the tree.
    if not path.is_file() or not path.resolve().is_relative_to(base.resolve()):
        known = sorted(p.parent.name for p in base.glob(f"*/*_{split.upper()}.ts")
                       if p.name == f"{p.parent.name}_{split.upper()}.ts")
        raise ConfigError(Reason.BAD_DATA, f"aeon {dist.version} has no {split} split of "
                                           f"{dataset!r} at {path}; it has {known or 'none'} "
                                           f"(expected with `{INSTALL_HINT}`)")
    return path


def load_archive(dataset: str, split: str) -> Archive:
    """Read one packaged split (see `archive_file` and `read_ts`)."""
    return read_ts(archive_file(dataset, split))


def read_ts(path: Path) -> Archive:
    """Read a `.ts` file (see the module docstring for what is accepted).

    Raises:
        ConfigError: BAD_DATA naming the file (and the line, where one applies).
    """
    try:
        with path.open(encoding="utf-8") as handle:
            return parse_ts(handle, str(path))
    except FileNotFoundError:
        raise ConfigError(Reason.BAD_DATA, f"{path}: file not found") from None
    except UnicodeDecodeError as err:
        raise ConfigError(Reason.BAD_DATA, f"{path}: not UTF-8 text ({err})") from err
    except OSError as err:
        raise ConfigError(Reason.BAD_DATA, f"{path}: cannot read ({err.strerror})") from err


def parse_ts(lines: Iterable[str], source: str) -> Archive:
    """Parse the lines of a `.ts` file; `source` names it in errors.

    Raises:
        ConfigError: BAD_DATA as `"<source>:<line>: ..."` for anything not accepted.
    """
    numbered = enumerate(lines, start=1)
    fields, data_line = _read_header(numbered, source)
    header = _check_header(fields, data_line, source)
    rows: list[F64] = []
    labels: list[int] = []
    last = data_line
    for num, raw in numbered:
        last = num
        line = raw.strip()
        if line:
            row, label = _case(line, header, source, num)
            rows.append(row)
            labels.append(label)
    if not rows:
        _bad(source, last, "no cases after @data")
    return Archive(name=header.name, x=np.stack(rows), y=np.asarray(labels, dtype=np.int64),
                   classes=header.classes)


def _read_header(numbered: Iterator[tuple[int, str]],
                 source: str) -> tuple[dict[str, tuple[str, int]], int]:
    """The `@tag value` lines up to `@data` as tag -> (value, line), and the `@data` line."""
    fields: dict[str, tuple[str, int]] = {}
    num = 0
    for num, raw in numbered:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith("@"):
            _bad(source, num, f"expected a @tag line or @data, got {line[:40]!r}")
        tag, value = [*line[1:].split(None, 1), "", ""][:2]
        key = tag.lower()
        if key == "data":
            if value:
                _bad(source, num, "@data takes no value")
            return fields, num
        if key not in _TAGS:
            _bad(source, num, f"unsupported tag {line.split()[0]!r}")
        if key in fields:
            _bad(source, num, f"@{tag} repeated (first on line {fields[key][1]})")
        fields[key] = (value, num)
    _bad(source, num, "no @data line")


def _check_header(fields: dict[str, tuple[str, int]], data_line: int, source: str) -> _Header:
    """The header's meaning, refusing every variant this reader does not take."""
    for key in _REQUIRED:
        if key not in fields:
            _bad(source, data_line, f"the header lacks {_TAGS[key]}")

    def flag(key: str, want: bool, refusal: str) -> None:
        value, num = fields[key]
        if value.lower() not in ("true", "false"):
            _bad(source, num, f"{_TAGS[key]} must be true or false, got {value!r}")
        if (value.lower() == "true") != want:
            _bad(source, num, refusal)

    flag("timestamps", False, "series with timestamps are not supported")
    flag("equallength", True, "unequal-length series are not supported")
    if "missing" in fields:
        flag("missing", False, "series with missing values are not supported")
    univariate, uni_line = fields["univariate"]
    if univariate.lower() not in ("true", "false"):
        _bad(source, uni_line, f"@univariate must be true or false, got {univariate!r}")
    if univariate.lower() == "false" and "dimensions" not in fields:
        _bad(source, uni_line, "a multivariate header needs @dimensions")
    dims = _count(fields["dimensions"], source) if "dimensions" in fields else 1
    if univariate.lower() == "true" and dims != 1:
        _bad(source, fields["dimensions"][1], f"@univariate true with {dims} dimensions")
    name, name_line = fields["problemname"]
    if not name or len(name.split()) != 1:
        _bad(source, name_line, f"@problemName must be one word, got {name!r}")
    first, *classes = fields["classlabel"][0].split()
    if first.lower() != "true" or not classes:
        _bad(source, fields["classlabel"][1], "@classLabel must be true followed by the class "
                                               "names (unlabelled series are not supported)")
    if len(set(classes)) != len(classes):
        _bad(source, fields["classlabel"][1], f"@classLabel repeats a class: {classes}")
    return _Header(name=name, dimensions=dims, length=_count(fields["serieslength"], source),
                   classes=tuple(classes))


def _case(line: str, header: _Header, source: str, num: int) -> tuple[F64, int]:
    """One data line as `[dimensions, length]` values and its class index."""
    *dims, label = line.split(":")
    if len(dims) != header.dimensions:
        _bad(source, num, f"{len(dims)} dimensions, expected {header.dimensions} "
                          "(dimensions separated by ':', then the class label)")
    label = label.strip()
    if label not in header.classes:
        _bad(source, num, f"class label {label!r} is not one of {list(header.classes)}")
    for d, dim in enumerate(dims):
        values = dim.split(",")
        if len(values) != header.length:
            _bad(source, num, f"dimension {d + 1} has {len(values)} values, expected "
                              f"{header.length}")
        for i, value in enumerate(values):
            if not _DECIMAL.fullmatch(value.strip()):
                what = "a missing value" if value.strip() == "?" else "not a decimal number"
                _bad(source, num, f"dimension {d + 1}, value {i + 1}: {value!r} is {what}")
    x = np.array([dim.split(",") for dim in dims], dtype=np.float64)
    if not np.isfinite(x).all():
        _bad(source, num, "a value is too large for a float64")
    return x, header.classes.index(label)


def _count(field: tuple[str, int], source: str) -> int:
    """A header value that must be an int >= 1."""
    value, num = field
    if not value.isdigit() or int(value) < 1:
        _bad(source, num, f"expected an integer >= 1, got {value!r}")
    return int(value)


def _bad(source: str, line: int, detail: str) -> NoReturn:
    raise ConfigError(Reason.BAD_DATA, f"{source}:{line}: {detail}")
