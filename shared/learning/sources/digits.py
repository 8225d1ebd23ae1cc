"""The "digits" source: scikit-learn's bundled 8x8 digits, split and partitioned reproducibly."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.learning.sources.base import SOURCES, Dataset, build_params

Indices = npt.NDArray[np.int64]

_MAX_ATTEMPTS = 100  # redraws before giving up; each draw is cheap, a hopeless case fails fast
_PIXEL_MAX = 16.0  # load_digits pixels are counts 0..16


@dataclass(frozen=True, slots=True, kw_only=True)
class DigitsParams:
    """Which slice of the digits data to load.

    Args:
        split: "train" or "test".
        test_fraction: Share of each class held out for "test", in (0, 1).
        seed: Seeds both the split and the partition; edges and cloud must use the same one.
        partitions: Number of non-IID parts the train split is cut into.
        partition: Which part to load, in [0, partitions).
        alpha: Dirichlet concentration; small values give more skewed label mixes.
        draw: 0 cuts the train split into disjoint parts; N > 0 instead draws part
            `partition` as N rows, with replacement, from the train split with label shares
            from Dirichlet(alpha) seeded by (seed, partition): any number of parts, which
            overlap (a simulated fleet larger than the data set, `fedstream sim`).

    Raises:
        ConfigError: BAD_CONFIG for any value out of range.
    """

    split: str = "train"
    test_fraction: float = 0.2
    seed: int = 0
    partitions: int = 1
    partition: int = 0
    alpha: float = 0.5
    draw: int = 0

    def __post_init__(self) -> None:
        frac, alpha, part, parts = self.test_fraction, self.alpha, self.partition, self.partitions
        ints = _is_int(self.seed) and _is_int(parts) and _is_int(part)
        rules = (
            (self.split in ("train", "test"), "split must be 'train' or 'test'"),
            (_is_real(frac) and 0 < frac < 1, "test_fraction must be in (0, 1)"),
            (ints, "seed, partitions and partition must be ints"),
            (ints and self.seed >= 0, "seed must be >= 0"),
            (ints and parts >= 1, "partitions must be >= 1"),
            (ints and 0 <= part < parts, "partition must be in [0, partitions)"),
            (_is_real(alpha) and math.isfinite(alpha) and alpha > 0, "alpha must be > 0"),
            (_is_int(self.draw) and 0 <= self.draw <= 1 << 20, "draw must be in 0..2**20"),
            # Only the train split is shared out; a partitioned test split would silently give
            # the cloud a different evaluation set than the one it reports on.
            (self.split == "train" or parts == 1, "only split 'train' can be partitioned"),
        )
        for ok, rule in rules:
            if not ok:
                raise ConfigError(Reason.BAD_CONFIG, f"digits: {rule}; got {self!r}")


class DigitsSource:
    """Loads one split (and, for train, one Dirichlet part) of the digits data."""

    def __init__(self, params: DigitsParams) -> None:
        self.params = params

    def load(self) -> Dataset:
        """Load the selected rows, features scaled to [0, 1].

        Raises:
            ConfigError: BAD_CONFIG when the train split cannot be cut into parts this large.
        """
        pixels, labels = _digits()
        p = self.params
        train_idx, test_idx = stratified_split(labels, p.test_fraction, p.seed)
        rows = test_idx if p.split == "test" else train_idx
        if p.split == "train" and p.draw > 0:
            rows = train_idx[dirichlet_draw(labels[train_idx], p.draw, p.alpha,
                                            (p.seed, p.partition))]
        elif p.split == "train" and p.partitions > 1:
            try:
                parts = dirichlet_partition(labels[train_idx], p.partitions, p.alpha, p.seed)
            except ValueError as err:
                raise ConfigError(Reason.BAD_CONFIG, f"digits: {err}") from err
            rows = train_idx[parts[p.partition]]
        features = (pixels[rows] / _PIXEL_MAX).astype(np.float32)
        return Dataset(features=features, labels=labels[rows], num_classes=10)

    def describe(self) -> str:
        """One line naming the split, part and seed."""
        p = self.params
        part = f" part {p.partition}/{p.partitions} alpha={p.alpha}" if p.partitions > 1 else ""
        part += f" ({p.draw} rows drawn)" if p.draw else ""
        return f"digits {p.split}{part} (test_fraction={p.test_fraction}, seed={p.seed})"


@SOURCES.add("digits", "scikit-learn's bundled 8x8 handwritten digits, 10 classes, no network")
def build_digits(**params: object) -> DigitsSource:
    """Build the digits source from config keywords (see `DigitsParams`)."""
    return DigitsSource(build_params(DigitsParams, params))


def stratified_split(
    labels: npt.NDArray[np.integer], test_fraction: float, seed: int
) -> tuple[Indices, Indices]:
    """Split row indices so every class keeps about the same share in both halves.

    Args:
        labels: Integer labels, shape [N].
        test_fraction: Share of each class (rounded half up) that goes to test, in (0, 1).
        seed: Seed for the per-class shuffles.

    Returns:
        Sorted (train_idx, test_idx); disjoint and together covering range(N).

    Raises:
        ValueError: `labels` is not 1-D or `test_fraction` is outside (0, 1).
    """
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train: list[Indices] = []
    test: list[Indices] = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_test = math.floor(test_fraction * len(members) + 0.5)
        test.append(members[:n_test])
        train.append(members[n_test:])
    return _joined(train), _joined(test)


def dirichlet_partition(
    labels: npt.NDArray[np.integer], parts: int, alpha: float, seed: int, min_size: int = 10
) -> list[Indices]:
    """Cut row indices into non-IID parts with Dirichlet label proportions.

    For each class, proportions are drawn from Dirichlet(alpha * ones(parts)) and that class's
    shuffled rows are cut accordingly. The whole draw repeats (from the same generator, so it
    stays deterministic) until every part has at least `min_size` rows. numpy may change its
    Dirichlet sampler between releases, so edges sharing a split should pin one numpy version.

    Args:
        labels: Integer labels, shape [N].
        parts: Number of parts (at least 1).
        alpha: Dirichlet concentration (> 0); small means each part sees few classes.
        seed: Seed for the shuffles and the draws.
        min_size: Fewest rows any part may have.

    Returns:
        `parts` sorted index arrays, disjoint and together covering range(N).

    Raises:
        ValueError: Bad arguments, or no draw met `min_size` within the attempt limit.
    """
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    if parts < 1 or not alpha > 0 or min_size < 0:
        raise ValueError(f"need parts >= 1, alpha > 0, min_size >= 0: {parts}, {alpha}, {min_size}")
    if parts * min_size > labels.size:
        raise ValueError(f"{labels.size} rows cannot fill {parts} parts of at least {min_size}")
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == cls) for cls in np.unique(labels)]
    for _ in range(_MAX_ATTEMPTS):
        buckets: list[list[Indices]] = [[] for _ in range(parts)]
        for members in by_class:
            shuffled = rng.permutation(members)
            shares = rng.dirichlet(np.full(parts, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(shuffled)).astype(np.int64)
            for bucket, chunk in zip(buckets, np.split(shuffled, cuts), strict=True):
                bucket.append(chunk)
        result = [_joined(bucket) for bucket in buckets]
        if min(len(part) for part in result) >= min_size:
            return result
    raise ValueError(
        f"no Dirichlet(alpha={alpha}) draw gave all {parts} parts >= {min_size} rows "
        f"in {_MAX_ATTEMPTS} attempts; raise alpha or lower the part count"
    )


def dirichlet_draw(labels: npt.NDArray[np.integer], rows: int, alpha: float,
                   seed: tuple[int, int]) -> Indices:
    """`rows` row indices drawn with replacement, label shares from Dirichlet(alpha).

    Args:
        labels: Integer labels, shape [N], every class present at least once.
        rows: How many to draw.
        alpha: Dirichlet concentration (> 0) over the classes present.
        seed: Seeds the draw: (data seed, part), so every part differs and repeats.

    Returns:
        Sorted indices into `labels` (repeats allowed).
    """
    rng = np.random.default_rng(list(seed))
    classes = np.unique(labels)
    counts = np.bincount(rng.choice(len(classes), size=rows,
                                    p=rng.dirichlet(np.full(len(classes), alpha))),
                         minlength=len(classes))
    picked = [rng.choice(np.flatnonzero(labels == cls), size=k)
              for cls, k in zip(classes, counts, strict=True) if k]
    return _joined(picked)


@functools.cache
def _digits() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """scikit-learn's digits, read once per process (many simulated edges share it)."""
    # Imported here so a gateway reading CSV never pays for importing scikit-learn.
    from sklearn.datasets import load_digits  # noqa: PLC0415

    pixels, target = load_digits(return_X_y=True)
    arrays = np.asarray(pixels, dtype=np.float64), np.asarray(target, dtype=np.int64)
    for array in arrays:
        array.setflags(write=False)  # shared by every caller
    return arrays


def _joined(chunks: list[Indices]) -> Indices:
    return np.sort(np.concatenate(chunks)).astype(np.int64)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
