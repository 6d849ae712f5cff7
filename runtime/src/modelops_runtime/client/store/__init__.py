"""A study's results store (a directory or any fsspec URL): runs written as Parquet parts
as they finish, a manifest of the inputs and the complete parts, resume of what is missing.
See store.py."""

from .fs import ResultsStoreError, StoreInputsDiffer
from .manifest import StoreInputs
from .store import ResultsStore

__all__ = ["ResultsStore", "ResultsStoreError", "StoreInputs", "StoreInputsDiffer"]
