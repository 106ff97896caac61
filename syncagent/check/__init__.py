"""The checks: is a tree whole (verify.py), how far is a replica from its source (compare.py), does a
registry serve what the storage holds (registry.py, over HTTP with minted pull tokens)."""

from .compare import Comparison, compare
from .verify import verify_backend

__all__ = ["Comparison", "compare", "verify_backend"]
