"""Gradient (first-order Taylor) pruning: keep the weights whose saliency ``|w * dL/dw|`` is largest."""

from __future__ import annotations

import numpy as np

from operators._base import Factors, check_fraction
from operators._registry import register
from operators.pruning import Pruning, top_mask


@register("gradient_pruning")
class GradientPruning(Pruning):
    """Pruning by saliency ``|w * dL/dw|`` (the first-order estimate of the loss change when w is zeroed).

    A blended layer accumulates the saliency from the real gradients of every training batch as an
    exponential moving average (decay ``decay``) of ``|A * dL/dW|``, where W is the blended weight, and
    hands it to `factor` at each update step. Before any gradient was seen (the saliency is all zero, or
    the operator is used outside a layer) it falls back to magnitude. Factors, product and storage are
    those of ``pruning``: a bitmask plus the kept values.

    Args:
        sparsity: fraction of weights set to zero, in [0, 1).
        decay: EMA decay of the saliency per batch, in [0, 1).
    """

    uses_saliency = True

    def __init__(self, sparsity: float = 0.5, *, decay: float = 0.9) -> None:
        super().__init__(sparsity)
        self.decay = decay

    @property
    def saliency_decay(self) -> float:  # type: ignore[override]
        return float(self.decay)

    def check(self, m: int | None = None, n: int | None = None) -> None:
        super().check(m, n)
        check_fraction("decay", self.decay)

    def _factor(self, a: np.ndarray, saliency: np.ndarray | None = None) -> Factors:  # type: ignore[override]
        score = saliency if saliency is not None and np.any(saliency > 0) else np.abs(a)
        mask = top_mask(score, self.sparsity)
        return {"values": a * mask, "mask": mask}
