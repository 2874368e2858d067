"""Compression operators: one module per method, each registered by name.

>>> import operators
>>> op = operators.get("low_rank", rank=16)
>>> factors = op.factor(A)        # {"left": (m, 16), "right": (16, n)}
"""

from operators._base import Compressor, FactorSpec, Factors, TwoFactor, array_bits, dtype_bits
from operators._registry import available, get, register
from operators.compressed import Compressed
from operators.dictionary import Dictionary
from operators.gradient_pruning import GradientPruning
from operators.kmeans import KMeans
from operators.low_rank import LowRank
from operators.nmf import NMF
from operators.pruning import Pruning
from operators.random_projection import RandomProjection
from operators.simhash import SimHash
from operators.stack import Stack

__all__ = ["Compressed", "Compressor", "Dictionary", "FactorSpec", "Factors", "GradientPruning", "KMeans", "LowRank",
           "NMF", "Pruning", "RandomProjection", "SimHash", "Stack", "TwoFactor", "array_bits", "available", "dtype_bits",
           "get", "register"]
