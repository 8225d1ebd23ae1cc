"""Blob codecs, looked up by the name carried in every frame."""

# Importing each unit registers it in CODECS.
from fedstream.shared.protocol.codecs import bf16 as _bf16  # noqa: F401
from fedstream.shared.protocol.codecs import f16 as _f16  # noqa: F401
from fedstream.shared.protocol.codecs import f32 as _f32  # noqa: F401
from fedstream.shared.protocol.codecs import int8 as _int8  # noqa: F401
from fedstream.shared.protocol.codecs import topk as _topk  # noqa: F401
from fedstream.shared.protocol.codecs import topk16 as _topk16  # noqa: F401
from fedstream.shared.protocol.codecs.base import CODECS, Codec

__all__ = ["CODECS", "Codec"]
