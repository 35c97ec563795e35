"""Datasets as normalised tensors: Fashion-MNIST, MNIST, CIFAR-10/100, digits, MNIST-1D, synthetic.

The bottom layer of sparseflow: imports only torch, numpy and the standard library
(scikit-learn and mnist1d lazily, for their datasets). See ``docs/data.md``.
"""

from .augment import RandomCrop
from .dataset import Dataset, carve_heldout
from .errors import DataError
from .registry import DATASETS, NORMALISATION, load_dataset

__all__ = [
    "DATASETS",
    "NORMALISATION",
    "DataError",
    "Dataset",
    "RandomCrop",
    "carve_heldout",
    "load_dataset",
]
