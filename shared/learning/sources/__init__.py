"""Data sources: the `Source` contract, the `Dataset` it loads, and the `SOURCES` table."""

# The unit modules are imported for their side effect: each registers itself in SOURCES.
from fedstream.shared.learning.sources import csv_file, digits, sensor_archive  # noqa: F401
from fedstream.shared.learning.sources.base import SOURCES, Dataset, Source

__all__ = ["SOURCES", "Dataset", "Source"]
