"""compress / strip / model_size / .keras round-trips on Dense, Embedding and Conv2D models."""

import keras
import numpy as np
import pytest

import mutate
import operators
from tests.helpers import compile_, data, fit, mlp

OPS = [("low_rank", {"rank": 3}), ("pruning", {"sparsity": 0.7})]


def conv_embed_model(seed: int = 0) -> keras.Model:
    """Functional model with a Conv2D branch and an Embedding branch."""
    keras.utils.set_random_seed(seed)
    img = keras.Input((8, 8, 3), name="img")
    ids = keras.Input((5,), dtype="int32", name="ids")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(img)
    h = keras.layers.Conv2D(6, (3, 2), strides=2, name="conv_b")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    e = keras.layers.Embedding(20, 6, name="emb")(ids)
    e = keras.layers.GlobalAveragePooling1D()(e)
    out = keras.layers.Dense(4, name="head")(keras.layers.Concatenate()([h, e]))
    return keras.Model([img, ids], out, name="two_branch")


def conv_embed_data(n: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    return ({"img": rng.standard_normal((n, 8, 8, 3)).astype(np.float32),
             "ids": rng.integers(0, 20, (n, 5)).astype(np.int32)}, rng.integers(0, 4, n))


def test_compress_mid_training_carries_every_weight_and_keeps_untouched_layers():
    x, y = data()
    model = compile_(mlp())
    model.fit(x, y, epochs=2, verbose=0)
    c = mutate.compress(model, {"dense_1": ("low_rank", {"rank": 4})}, mutate.Schedule(5, 10, 1))
    np.testing.assert_array_equal(c.predict(x, verbose=0), model.predict(x, verbose=0))
    for name in ("dense_0", "dense_2", "dense_3"):
        old, new = model.get_layer(name), c.get_layer(name)
        assert type(new) is type(old) and new is not old
        for a, b in zip(old.get_weights(), new.get_weights()):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(c.get_layer("dense_1").kernel.numpy(), model.get_layer("dense_1").kernel.numpy())
    compile_(c)
    fit(c, x, y)  # ready to fit; the original is untouched by it
    np.testing.assert_array_equal(model.get_layer("dense_0").kernel.numpy(), model.get_weights()[0])


@pytest.mark.parametrize("op", OPS, ids=[o[0] for o in OPS])
def test_strip_equals_the_blended_model_at_alpha_zero_on_dense_conv_and_embedding(op):
    x, y = conv_embed_data()
    model = conv_embed_model()
    plan = {"conv*": op, "emb": op, "head": op}
    c = mutate.compress(model, plan, mutate.Schedule(0, 3, 1))
    c.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    c.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[mutate.CompressionCallback()])
    assert all(layer.current_alpha() == 0.0 for layer in mutate.blended_layers(c))
    s = mutate.strip(c)
    assert not mutate.blended_layers(s)
    np.testing.assert_allclose(s.predict(x, verbose=0), c.predict(x, verbose=0), atol=1e-5)
    names = [layer.name for layer in s.layers]
    if op[0] == "low_rank":
        assert {"conv_left", "conv_right", "emb_left", "emb_right", "head_left", "head_right"} <= set(names)
        assert type(s.get_layer("head_left")).__mro__[1:3] == (mutate.layers._spliced._Origin, keras.layers.Dense)
    else:
        assert isinstance(s.get_layer("conv"), mutate.SplicedConv2D)
        assert isinstance(s.get_layer("emb"), mutate.SplicedEmbedding)
    # A is gone: no variable of the spliced model has a dense kernel's shape
    dense_shapes = {tuple(w.shape) for name in ("conv", "conv_b", "emb", "head") for w in model.get_layer(name).weights
                    if len(w.shape) >= 2}
    assert not dense_shapes & {tuple(w.shape) for w in s.weights}
    s.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    s.fit(x, y, epochs=1, verbose=0)  # training goes on after the splice, no callback needed


def test_strip_refuses_a_layer_still_blending_unless_forced():
    x, y = data()
    c = compile_(mutate.compress(mlp(), {"dense_1": ("low_rank", {"rank": 3})}, mutate.Schedule(0, 20, 4)))
    fit(c, x, y)
    with pytest.raises(ValueError, match=r"'dense_1' is still blending \(alpha=0.8333 at its step 4; .* step 20\)"):
        mutate.strip(c)
    forced = mutate.strip(c, force=True)
    assert "dense_1_left" in [layer.name for layer in forced.layers]


def test_model_size_on_a_hand_checked_case():
    x, y = data()
    model = mlp((16, 32, 8))  # dense_0 16x32 (+32 bias), dense_1 32x8 (+8 bias)
    dense = mutate.model_size(model)
    assert dense.params == 16 * 32 + 32 + 32 * 8 + 8 and dense.bits == 32 * dense.params and dense.ratio == 1.0
    plan = {"dense_0": ("low_rank", {"rank": 2}), "dense_1": ("pruning", {"sparsity": 0.75})}
    c = compile_(mutate.compress(model, plan, mutate.Schedule(0, 1, 1)))
    fit(c, x, y)
    blended = mutate.model_size(c)
    assert blended.final_bits < blended.dense_bits < blended.bits  # a blending model stores A and the factors
    s = mutate.strip(c)
    size = mutate.model_size(s)
    low_rank_bits = 32 * (16 * 2 + 2 * 32 + 32)  # left, right, bias
    pruned_bits = 8 * (32 * 8 // 8) + 32 * 64 + 32 * 8  # bitmask bytes, 64 kept values, bias
    assert [(e.name, e.state, e.bits) for e in size.layers] == [
        ("dense_0", "spliced", low_rank_bits), ("dense_1", "spliced", pruned_bits)]
    assert size.bits == low_rank_bits + pruned_bits == blended.final_bits
    assert size.dense_bits == dense.bits
    assert size.ratio == pytest.approx(dense.bits / (low_rank_bits + pruned_bits))
    assert "spliced" in str(size) and "ratio" in str(size)


@pytest.mark.parametrize("stage", ["blending", "spliced"])
def test_keras_round_trip_gives_identical_predictions(tmp_path, stage):
    x, y = conv_embed_data()
    plan = {"conv": OPS[0], "emb": OPS[1], "head": OPS[1], "conv_b": OPS[0]}
    c = mutate.compress(conv_embed_model(), plan, mutate.Schedule(0, 9, 3))
    c.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    c.fit(x, y, batch_size=8, epochs=1 if stage == "blending" else 3, verbose=0,
          callbacks=[mutate.CompressionCallback()])
    model = c if stage == "blending" else mutate.strip(c)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert mutate.model_size(loaded) == mutate.model_size(model)


def test_mid_blend_save_resumes_the_schedule_exactly(tmp_path):
    x, y = data()
    sched = mutate.Schedule(2, 14, 3)

    def fresh():
        c = mutate.compress(mlp(), {"dense_1": ("low_rank", {"rank": 3}), "dense_2": ("pruning", {"sparsity": 0.5})},
                            sched)
        return c

    straight = compile_(fresh())
    fit(straight, x, y, epochs=3)  # 12 steps

    first = compile_(fresh())
    fit(first, x, y, epochs=1)
    first.save(tmp_path / "mid.keras")
    resumed = keras.saving.load_model(tmp_path / "mid.keras")
    layer = resumed.get_layer("dense_1")
    assert layer.current_step() == 4 and layer.current_alpha() == pytest.approx(1 - 1 / 5)
    fit(resumed, x, y, epochs=2)  # the optimizer state travels in the .keras file too
    for name in ("dense_1", "dense_2"):
        a, b = straight.get_layer(name), resumed.get_layer(name)
        assert (a.current_step(), a.current_alpha()) == (b.current_step(), b.current_alpha())
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("plan, exc, match", [
    ({"dense_9": ("low_rank", {"rank": 2})}, ValueError, "plan key 'dense_9' matches no layer.*dense_0"),
    ({"conv*": ("low_rank", {"rank": 2})}, ValueError, "plan key 'conv\\*' matches no layer"),
    ({"dense_1": ("low_rank", {"rank": 0})}, ValueError, "rank=0"),
    ({"dense_1": ("low_rank", {"rank": 33})}, ValueError, r"'dense_1' \(32x32\).*\[1, 32\].*rank=33"),
    ({"dense_1": ("pruning", {"sparsity": 1.0})}, ValueError, "sparsity=1.0"),
    ({"dense_1": ("kmeans_typo", {})}, ValueError, "unknown operator 'kmeans_typo'"),
    ({"dense_1": 16}, TypeError, "plan\\['dense_1'\\] must be"),
    ({"dense_*": "low_rank", "dense_1": "pruning"}, (ValueError, TypeError), "."),
    ({}, ValueError, "plan is empty"),
])
def test_bad_plans_name_the_value(plan, exc, match):
    with pytest.raises(exc, match=match):
        mutate.compress(mlp(), plan, mutate.Schedule(0, 4, 1))


def test_layers_that_cannot_be_viewed_as_a_matrix_are_refused():
    inp = keras.Input((6, 4))
    out = keras.layers.Dense(2, name="head")(keras.layers.GRU(3, name="gru")(inp))
    model = keras.Model(inp, out)
    with pytest.raises(TypeError, match="layer 'gru' of type GRU cannot be compressed"):
        mutate.compress(model, {"gru": ("low_rank", {"rank": 2})}, mutate.Schedule(0, 4, 1))
    c = mutate.compress(mlp(), {"dense_1": ("low_rank", {"rank": 2})}, mutate.Schedule(0, 4, 1))
    with pytest.raises(TypeError, match="already being compressed"):
        mutate.compress(c, {"dense_1": ("low_rank", {"rank": 2})}, mutate.Schedule(0, 4, 1))


def test_unbuilt_and_subclassed_models_are_refused():
    with pytest.raises(ValueError, match="not built"):
        mutate.compress(keras.Sequential([keras.layers.Dense(3)]), {"x": "low_rank"}, mutate.Schedule(0, 4, 1))

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="subclassed Sub"):
        mutate.compress(Sub(), {"x": "low_rank"}, mutate.Schedule(0, 4, 1))
    with pytest.raises(TypeError, match="mutate.Schedule"):
        mutate.compress(mlp(), {"dense_1": ("low_rank", {"rank": 2})}, {"begin_step": 0})


def test_nan_weights_at_factor_time_are_refused():
    x, y = data()
    model = mlp()
    kernel = model.get_layer("dense_1").kernel
    kernel.assign(np.where(np.eye(32, dtype=bool), np.nan, kernel.numpy()))
    c = compile_(mutate.compress(model, {"dense_1": ("low_rank", {"rank": 2})}, mutate.Schedule(0, 4, 1)))
    with pytest.raises(ValueError, match="holds 32 NaN/Inf values"):
        fit(c, x, y)


def test_operator_instances_and_names_work_in_plans():
    c = mutate.compress(mlp(), {"dense_1": operators.get("low_rank", ratio=4.0), "dense_2": ("pruning", {})},
                        mutate.Schedule(0, 4, 1))
    assert c.get_layer("dense_1").compressor.rank_for(32, 32) == 4
    assert c.get_layer("dense_2").compressor.sparsity == 0.5
