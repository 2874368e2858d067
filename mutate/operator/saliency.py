"""A gradient tap: identity forward; backward, it folds ``|A * dL/dW|`` into a saliency EMA (TensorFlow)."""

from __future__ import annotations

from typing import Any

import keras


def saliency_tap(kernel: Any, saliency: keras.Variable, alpha: keras.Variable, decay: float) -> Any:
    """Return ``kernel`` unchanged; its gradient also updates ``saliency`` (same shape as the kernel).

    The blended weight is ``W = alpha * A + (1 - alpha) * (B∘C)``, so ``dL/dA = alpha * dL/dW`` and the
    tap divides by alpha to recover ``dL/dW``. Nothing is accumulated once alpha is 0 (A is then unused).

    Raises:
        NotImplementedError: the Keras backend is not TensorFlow.
    """
    if keras.backend.backend() != "tensorflow":
        raise NotImplementedError("gradient_pruning accumulates saliency with a TensorFlow gradient tap; "
                                  f"the Keras backend is {keras.backend.backend()!r}.")
    import tensorflow as tf

    @tf.custom_gradient
    def tap(w: tf.Tensor) -> tuple[tf.Tensor, Any]:
        def grad(g: Any) -> tf.Tensor:
            g = tf.convert_to_tensor(g)  # an Embedding's gather gives IndexedSlices
            # in float32: under mixed precision g is float16 and loss-scaled (|w * g| overflows there); a step
            # whose gradient is not finite (the loss scale's overflow, skipped by the optimizer) is not folded in
            a = tf.cast(alpha.value, "float32")
            fresh = tf.abs(tf.cast(w, "float32") * tf.cast(g, "float32")) / tf.maximum(a, 1e-12)
            fold = tf.logical_and(a > 0, tf.reduce_all(tf.math.is_finite(fresh)))
            new = tf.where(fold, decay * saliency.value + (1.0 - decay) * fresh, saliency.value)
            with tf.control_dependencies([saliency.assign(new)]):
                return tf.identity(g)

        return tf.identity(w), grad

    return tap(kernel)
