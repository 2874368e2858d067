"""gradient_pruning: the saliency tap sees the real gradients, and the mask follows the saliency."""

import numpy as np
import pytest

import mutate
import operators
from tests.helpers import compile_, data, fit, mlp, state
from tests.operator_conformance import LayerConformance, OperatorConformance


class TestGradientPruningConformance(OperatorConformance):
    name = "gradient_pruning"
    params = {"sparsity": 0.9, "decay": 0.5}

    def reconstruct(self, op, factors):
        return factors["values"] * factors["mask"]


class TestGradientPruningLayers(LayerConformance):
    name = "gradient_pruning"
    params = {"sparsity": 0.8}
    exact_params = {"sparsity": 0.0}


def test_mask_keeps_the_most_salient_weights_not_the_largest():
    a = np.arange(1, 13, dtype=np.float32).reshape(3, 4)
    saliency = a[::-1, ::-1].copy()  # the smallest weights are the most salient
    factors = operators.get("gradient_pruning", sparsity=0.75).factor(a, saliency=saliency)
    np.testing.assert_array_equal(factors["mask"], (saliency >= 10).astype(np.float32))
    magnitude = operators.get("gradient_pruning", sparsity=0.75).factor(a, saliency=np.zeros_like(a))
    np.testing.assert_array_equal(magnitude["mask"], (a >= 10).astype(np.float32))


@pytest.mark.parametrize("bad", [{"decay": 1.0}, {"decay": -0.1}, {"sparsity": 1.0}])
def test_bad_params_name_the_value(bad):
    key, value = next(iter(bad.items()))
    with pytest.raises(ValueError, match=f"{key}={value!r}"):
        operators.get("gradient_pruning", **bad)


def test_saliency_is_the_ema_of_weight_times_gradient():
    x, y = data(n=32)
    decay = 0.75
    plain = compile_(mlp((16, 12, 5)))
    c = compile_(mutate.compress(mlp((16, 12, 5)), {"dense_0": ("gradient_pruning", {"sparsity": 0.5, "decay": decay})},
                                 mutate.Schedule(begin_step=10, end_step=20, frequency=5)))
    kernel = plain.get_layer("dense_0").kernel
    np.testing.assert_array_equal(kernel.numpy(), c.get_layer("dense_0").kernel.numpy())
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = plain.compute_loss(x=x, y=y, y_pred=plain(x, training=True))
    grad = tape.gradient(loss, kernel.value).numpy()
    expected = (1 - decay) * np.abs(kernel.numpy() * grad)
    fit(c, x, y, batch_size=32)  # one batch at alpha = 1, so dL/dA = dL/dW
    np.testing.assert_allclose(state(c, "dense_0").saliency.numpy(), expected, rtol=1e-4, atol=1e-7)


def test_spliced_gradient_pruning_keeps_the_salient_weights_and_saves():
    x, y = data()
    c = compile_(mutate.compress(mlp(), {"dense_1": ("gradient_pruning", {"sparsity": 0.9})},
                                 mutate.Schedule(begin_step=4, end_step=8, frequency=2), refresh=True))
    fit(c, x, y, epochs=3)
    layer = state(c, "dense_1")
    saliency = layer.saliency.numpy()
    assert layer.current_alpha() == 0.0 and saliency.max() > 0
    mask = layer.factor_values()["mask"]
    assert mask.sum() == operators.pruning.kept_count(32, 32, 0.9)
    assert saliency[mask > 0].min() >= np.quantile(saliency, 0.5)
    blended = c.predict(x, verbose=0)
    s = mutate.strip(c)
    np.testing.assert_allclose(s.predict(x, verbose=0), blended, atol=1e-5)
