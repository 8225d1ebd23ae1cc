"""Blob codecs, looked up by the name carried in every frame."""

from fedstream.shared.codecs import f32 as _f32  # noqa: F401  (importing registers the unit)
from fedstream.shared.codecs.base import CODECS, Codec

__all__ = ["CODECS", "Codec"]
