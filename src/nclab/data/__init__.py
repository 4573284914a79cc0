"""Datasets, label hierarchies, caching, fast batches.

``load_dataset(spec)`` reads every source; ``build_hierarchy(spec, class_names)`` makes fine->coarse
groupings; ``subsample`` makes deterministic (imbalanced) training subsets. See docs/data.md.
"""

from nclab.data.builders import build_hierarchy, split_labels
from nclab.data.hierarchy import Hierarchy
from nclab.data.load import data_root, load_dataset
from nclab.data.subsample import subsample
from nclab.data.synthetic import make_hierarchical_gaussian
from nclab.data.types import Dataset, Split

__all__ = [
    "Dataset",
    "Split",
    "Hierarchy",
    "load_dataset",
    "data_root",
    "build_hierarchy",
    "split_labels",
    "subsample",
    "make_hierarchical_gaussian",
]
