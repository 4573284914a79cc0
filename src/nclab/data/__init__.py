"""Datasets, label hierarchies, caching, fast batches."""

from nclab.data.hierarchy import Hierarchy
from nclab.data.types import Dataset, Split

__all__ = ["Dataset", "Split", "Hierarchy"]
