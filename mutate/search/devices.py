"""Which tf.distribute strategy a trial runs under, from the resources its search space asks for.

The choice is one small pure function (tested on CPU); building a multi-device strategy imports TensorFlow,
and only on the TensorFlow backend: under another Keras backend (KERAS_BACKEND=jax or torch) a one-device trial
runs on the device that backend picks (the GPU Ray assigned, or the CPU) and a multi-GPU or TPU trial is refused
with a `BadInput` that says so, before anything imports TensorFlow.
"""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager

from mutate.errors import BadInput


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


def make_strategy(kind: str, backend: str | None = None) -> Any:
    """The tf.distribute strategy for ``kind``, or None for ``default`` (no TensorFlow import then).

    Args:
        kind: ``default``, ``mirrored`` or ``tpu`` (from `strategy_for`).
        backend: the Keras backend; None asks Keras (``keras.backend.backend()``).

    Raises:
        BadInput: ``mirrored`` or ``tpu`` under a backend other than TensorFlow (tf.distribute is TensorFlow's).
        ValueError: an unknown ``kind``.
    """
    if kind not in ("default", "mirrored", "tpu"):
        raise ValueError(f"unknown strategy kind {kind!r}; expected default, mirrored or tpu.")
    if kind == "default":
        return None
    if backend is None:
        import keras

        backend = keras.backend.backend()
    if backend != "tensorflow":
        asked = "more than one GPU (resources.gpus > 1)" if kind == "mirrored" else "a TPU (resources.tpu > 0)"
        raise BadInput(f"a trial that asks for {asked} runs under tf.distribute, which needs KERAS_BACKEND=tensorflow "
                       f"(pip install mutate[tensorflow]), but the Keras backend is {backend!r}; set resources.gpus "
                       "to 1 or 0 and resources.tpu to 0 (one device per trial), or use the TensorFlow backend.")
    import tensorflow as tf

    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()  # kind == "tpu"
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def scope(strategy: Any) -> ContextManager[Any]:
    """``strategy.scope()``, or a no-op context for None."""
    return contextlib.nullcontext() if strategy is None else strategy.scope()
