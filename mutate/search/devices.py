"""Where a trial runs, from the resources its search space asks for.

The choice is one small pure function (`strategy_for`, tested on CPU). One device: no strategy (the backend
uses the GPU Ray gave the trial, or the CPU). More than one GPU, or a TPU: on TensorFlow a tf.distribute
strategy (MirroredStrategy, TPUStrategy; building it imports TensorFlow); on JAX a Keras ``DataParallel``
distribution over every device JAX sees (tested on two host CPU devices, `tests/test_backends.py`); on
PyTorch a one-line `BadInput`. Compile with ``steps_per_execution`` > 1 on TPUs (the blend schedule runs in
the graph, so it works: tested at 4 on the JAX mesh and 8 on TensorFlow).
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
        BadInput: ``mirrored`` or ``tpu`` under PyTorch (tf.distribute is TensorFlow's; JAX gets a Keras
            ``DataParallel`` distribution instead, `jax_data_parallel`).
        ValueError: an unknown ``kind``.
    """
    if kind not in ("default", "mirrored", "tpu"):
        raise ValueError(f"unknown strategy kind {kind!r}; expected default, mirrored or tpu.")
    if kind == "default":
        return None
    if backend is None:
        import keras

        backend = keras.backend.backend()
    if backend == "jax":  # Keras' distribution API: one data-parallel mesh over the devices JAX sees
        return jax_data_parallel()
    if backend != "tensorflow":
        asked = "more than one GPU (resources.gpus > 1)" if kind == "mirrored" else "a TPU (resources.tpu > 0)"
        raise BadInput(f"a trial that asks for {asked} runs under tf.distribute, which needs KERAS_BACKEND=tensorflow "
                       f"(pip install mutate[tensorflow]), but the Keras backend is {backend!r}; set resources.gpus "
                       "to 1 or 0 and resources.tpu to 0 (one device per trial), or use the TensorFlow backend.")
    import tensorflow as tf

    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    try:  # kind == "tpu": the TPU this host is attached to (a TPU VM), or the one TPU_NAME names
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    except ValueError as e:
        raise BadInput(f"resources.tpu asks for a TPU, but TensorFlow finds none here ({str(e).splitlines()[0]}); "
                       "run on a TPU VM (or set TPU_NAME), or set resources.tpu to 0.") from None
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def jax_data_parallel() -> Any:
    """``keras.distribution.DataParallel`` over every device JAX sees (the GPUs Ray gave the trial, or a TPU's
    cores): each batch is split across them, weights replicated, gradients averaged, one program per step, so
    a kernel's step and alpha advance once per batch. Compile with ``steps_per_execution`` > 1 on TPUs."""
    import keras

    return keras.distribution.DataParallel(devices=keras.distribution.list_devices())


def scope(strategy: Any) -> ContextManager[Any]:
    """``strategy.scope()``, or a no-op context for None."""
    return contextlib.nullcontext() if strategy is None else strategy.scope()
