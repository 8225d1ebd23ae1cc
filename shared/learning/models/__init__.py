"""Model families by name; importing this package registers the built-in ones."""

from fedstream.shared.learning.models import cnn1d, gru, mlp, transformer
from fedstream.shared.learning.models.base import (
    ENTRY_POINTS,
    MODELS,
    Rows,
    build_model,
    load_plugins,
)

__all__ = ["ENTRY_POINTS", "MODELS", "Rows", "build_model", "cnn1d", "gru", "load_plugins",
           "mlp", "transformer"]
