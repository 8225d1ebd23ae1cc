"""Training backends: stock torch and IPEX, registered by name, and the per-machine choice."""

from fedstream.shared.learning.backends import ipex, stock
from fedstream.shared.learning.backends.base import BACKENDS, Backend
from fedstream.shared.learning.backends.ipex import ipex_status
from fedstream.shared.learning.backends.selection import BackendChoice, select_backend

del ipex, stock  # imported only so their units register in BACKENDS

__all__ = ["BACKENDS", "Backend", "BackendChoice", "ipex_status", "select_backend"]
