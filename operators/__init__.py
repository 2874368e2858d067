"""Compression operators: one module per method, each registered by name.

>>> import operators
>>> op = operators.get("low_rank", rank=16)
>>> factors = op.factor(A)        # {"left": (m, 16), "right": (16, n)}
"""

from operators._base import Compressor, FactorSpec, Factors, array_bits, dtype_bits
from operators._registry import available, get, register
from operators import low_rank as _low_rank  # noqa: F401  (registers)
from operators import pruning as _pruning  # noqa: F401  (registers)
from operators.low_rank import LowRank
from operators.pruning import Pruning

__all__ = ["Compressor", "FactorSpec", "Factors", "LowRank", "Pruning", "array_bits", "available", "dtype_bits",
           "get", "register"]
