"""Which tf.distribute strategy a trial runs under, from the resources its search space asks for.

The choice is one small pure function (tested on CPU); building the strategy imports TensorFlow.
"""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager


def strategy_for(gpus: float, tpus: int) -> str:
    """``tpu`` (TPUStrategy) when a trial holds a TPU, ``mirrored`` (MirroredStrategy over its GPUs) with
    more than one GPU, else ``default`` (one device: the GPU Ray assigned, or the CPU).

    Raises:
        ValueError: a negative resource count.
    """
    if gpus < 0 or tpus < 0:
        raise ValueError(f"resources must be >= 0, but got gpus={gpus!r}, tpus={tpus!r}.")
    if tpus > 0:
        return "tpu"
    if gpus > 1:
        return "mirrored"
    return "default"


def make_strategy(kind: str) -> Any:
    """The tf.distribute strategy for ``kind``, or None for ``default`` (no TensorFlow import then)."""
    if kind == "default":
        return None
    import tensorflow as tf

    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy kind {kind!r}; expected default, mirrored or tpu.")


def scope(strategy: Any) -> ContextManager[Any]:
    """``strategy.scope()``, or a no-op context for None."""
    return contextlib.nullcontext() if strategy is None else strategy.scope()
