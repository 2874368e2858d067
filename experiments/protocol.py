"""The training protocol every LeNet-300-100 / CNN study and anchor shares, as plain data (no TensorFlow).

The TFMOT anchors run in a separate virtual environment with tf_keras; they read this file too, so both
sides train the same model on the same data for the same epochs:

1. ``dense_epochs`` of dense training at ``lr`` (Adam, batch ``batch``), one run per seed;
2. from those dense weights, ``blend_epochs`` during which the method comes in (mutate: alpha goes from 1
   to 0 in ``updates_per_epoch`` steps per epoch, then the layer is spliced; TFMOT pruning: the sparsity
   follows PolynomialDecay from 0 to its target over the same steps; TFMOT clustering: clustered from the
   start), at ``tune_lr`` with a fresh Adam;
3. ``tune_epochs`` of fine-tuning of the compressed model at ``tune_lr``.

The dense anchor trains steps 2 and 3 without compression, so every row sees the same number of steps.
Only ``COMPRESSED`` layers are compressed (the logits, 0.4% of LeNet's weights, stay dense for everybody).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Protocol:
    """Epochs, batch and learning rates of one study mode."""

    dataset: str  # "fashion_mnist" or "digits"
    dense_epochs: int
    blend_epochs: int
    tune_epochs: int
    batch: int
    lr: float = 1e-3
    tune_lr: float = 5e-4
    updates_per_epoch: int = 4

    @property
    def total_epochs(self) -> int:
        return self.dense_epochs + self.blend_epochs + self.tune_epochs


LENET = {"full": Protocol("fashion_mnist", 8, 3, 3, 128), "quick": Protocol("digits", 10, 3, 2, 32)}
"""LeNet-300-100 (784-300-100-10, relu): layer names ``fc1``, ``fc2``, ``logits``."""

CNN = {"full": Protocol("fashion_mnist", 3, 1, 1, 128), "quick": Protocol("digits", 10, 3, 2, 32)}
"""The small CNN of ``mutate.search.builders.cnn`` (conv 32, conv 64, dense 128, logits)."""

COMPRESSED = {"lenet": ("fc1", "fc2"), "cnn": ("conv_2", "dense_1")}
"""The layers every method compresses, per model."""


def pruned_bits(m: int, n: int, kept: int) -> int:
    """Stored bits of an m x n matrix pruned to ``kept`` nonzeros: a 1-bit mask plus float32 values.

    The same accounting as mutate's ``pruning`` operator, so TFMOT's pruned models count alike.
    """
    return 8 * math.ceil(m * n / 8) + 32 * kept


def clustered_bits(m: int, n: int, k: int) -> int:
    """Stored bits of an m x n matrix clustered to k float32 centroids with ceil(log2 k)-bit codes."""
    return 8 * math.ceil(m * n * max(1, math.ceil(math.log2(k))) / 8) + 32 * k
