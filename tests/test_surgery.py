"""compress / strip / densify / model_size / .keras round-trips, in place, on Dense, Embedding and Conv2D models."""

import keras
import numpy as np
import pytest

import mutate
import operators
from tests.helpers import compile_, data, fit, mlp, state

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


def test_compress_mid_training_keeps_the_model_its_layers_and_their_weights():
    x, y = data()
    model = compile_(mlp())
    model.fit(x, y, epochs=2, verbose=0)
    before = model.predict(x, verbose=0)
    layers = list(model.layers)
    kernel = model.get_layer("dense_1").kernel.numpy()
    c = mutate.compress(model, {"dense_1": ("low_rank", {"rank": 4})}, mutate.Schedule(5, 10, 1))
    assert c is model and list(c.layers) == layers  # in place: the same objects, in the same places
    np.testing.assert_array_equal(c.predict(x, verbose=0), before)
    layer = c.get_layer("dense_1")
    assert isinstance(layer, keras.layers.Dense) and type(layer).__name__ == "Dense"
    assert type(c.get_layer("dense_0")) is keras.layers.Dense
    np.testing.assert_array_equal(layer.kernel.numpy(), kernel)
    assert layer.get_config()["units"] == 32
    compile_(c)
    fit(c, x, y)


@pytest.mark.parametrize("op", OPS, ids=[o[0] for o in OPS])
def test_strip_equals_the_blended_model_at_alpha_zero_on_dense_conv_and_embedding(op):
    x, y = conv_embed_data()
    model = conv_embed_model()
    dense_shapes = {tuple(w.shape) for w in model.weights if len(w.shape) >= 2}
    plan = {"conv*": op, "emb": op, "head": op}
    c = mutate.compress(model, plan, mutate.Schedule(0, 3, 1))
    c.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    c.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[mutate.CompressionCallback()])
    assert all(k.current_alpha() == 0.0 for k in mutate.blending_kernels(c))
    blended = c.predict(x, verbose=0)
    s = mutate.strip(c)
    assert s is c and not mutate.blending_kernels(s)
    assert [k.state for k in mutate.compressible(s)] == ["spliced"] * 4
    np.testing.assert_allclose(s.predict(x, verbose=0), blended, atol=1e-5)
    assert not dense_shapes & {tuple(w.shape) for w in s.weights}  # A is gone
    assert s.get_layer("head").kernel is None
    s.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    s.fit(x, y, epochs=1, verbose=0)  # training goes on after the splice, no callback needed


def test_a_spliced_low_rank_dense_is_two_matmuls():
    x, y = data()
    c = compile_(mutate.compress(mlp(), {"dense_1": ("low_rank", {"rank": 3})}, mutate.Schedule(0, 1, 1)))
    fit(c, x, y)
    mutate.strip(c)
    seen = []
    original = keras.ops.matmul

    def counting(a, b):
        seen.append((tuple(a.shape)[-1], tuple(b.shape)))
        return original(a, b)

    import keras.src.ops.numpy as numpy_ops

    numpy_ops.matmul, saved = counting, numpy_ops.matmul
    try:
        keras.ops.matmul = counting
        c.get_layer("dense_1")(x[:2, :32] if x.shape[1] == 32 else np.zeros((2, 32), np.float32))
    finally:
        keras.ops.matmul = original
        numpy_ops.matmul = saved
    assert [b for _, b in seen] == [(32, 3), (3, 32)]


def test_strip_refuses_a_kernel_still_blending_unless_forced():
    x, y = data()
    c = compile_(mutate.compress(mlp(), {"dense_1": ("low_rank", {"rank": 3})}, mutate.Schedule(0, 20, 4)))
    fit(c, x, y)
    with pytest.raises(ValueError, match=r"'dense_1' is still blending \(alpha=0.8333 after 4 training batches; .* step 20, .*17 more batches\)"):
        mutate.strip(c)
    mutate.strip(c, force=True)
    assert state(c, "dense_1").spliced


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
    size = mutate.model_size(mutate.strip(c))
    low_rank_bits = 32 * (16 * 2 + 2 * 32 + 32)  # left, right, bias
    pruned_bits = 8 * (32 * 8 // 8) + 32 * 64 + 32 * 8  # bitmask bytes, 64 kept values, bias
    assert [(e.name, e.state, e.bits) for e in size.layers] == [
        ("dense_0", "spliced", low_rank_bits), ("dense_1", "spliced", pruned_bits)]
    assert size.bits == low_rank_bits + pruned_bits == blended.final_bits
    assert size.dense_bits == dense.bits
    assert size.ratio == pytest.approx(dense.bits / (low_rank_bits + pruned_bits))
    assert "spliced" in str(size) and "ratio" in str(size)


@pytest.mark.parametrize("stage", ["blending", "spliced", "densified"])
def test_keras_round_trip_gives_identical_predictions(tmp_path, stage):
    x, y = conv_embed_data()
    plan = {"conv": OPS[0], "emb": OPS[1], "head": OPS[1], "conv_b": OPS[0]}
    c = mutate.compress(conv_embed_model(), plan, mutate.Schedule(0, 9, 3))
    c.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    c.fit(x, y, batch_size=8, epochs=1 if stage == "blending" else 3, verbose=0,
          callbacks=[mutate.CompressionCallback()])
    if stage != "blending":
        mutate.strip(c)
    if stage == "densified":
        mutate.densify(c, "*")
        assert all(type(layer).__module__.startswith("keras.") for layer in c.layers)
    path = tmp_path / "m.keras"
    c.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), c.predict(x, verbose=0))
    for a, b in zip(c.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert mutate.model_size(loaded) == mutate.model_size(c)
    assert [(k.path, k.state) for k in mutate.compressible(loaded)] == [(k.path, k.state) for k in mutate.compressible(c)]


def test_densify_holds_the_matrix_the_kernel_computes_with_and_compresses_again():
    x, y = data()
    c = compile_(mutate.compress(mlp(), {"dense_1": ("low_rank", {"rank": 3})}, mutate.Schedule(0, 8, 2)))
    fit(c, x, y)  # mid-blend
    mid = c.predict(x, verbose=0)
    mutate.densify(c, "dense_1")
    assert type(c.get_layer("dense_1")) is keras.layers.Dense and not mutate.blending_kernels(c)
    np.testing.assert_allclose(c.predict(x, verbose=0), mid, atol=1e-5)
    mutate.compress(c, {"dense_1": ("pruning", {"sparsity": 0.5})}, mutate.Schedule(0, 1, 1))
    compile_(c)
    fit(c, x, y)
    assert state(c, "dense_1").compressor.name == "pruning"
    with pytest.raises(mutate.PlanError, match="no compressed kernel matching 'dense_0'"):
        mutate.densify(c, "dense_0")


def test_mid_blend_save_resumes_the_schedule_exactly(tmp_path):
    x, y = data()
    sched = mutate.Schedule(2, 14, 3)

    def fresh():
        return mutate.compress(mlp(), {"dense_1": ("low_rank", {"rank": 3}), "dense_2": ("pruning", {"sparsity": 0.5})},
                               sched)

    straight = compile_(fresh())
    fit(straight, x, y, epochs=3)  # 12 steps

    first = compile_(fresh())
    fit(first, x, y, epochs=1)
    first.save(tmp_path / "mid.keras")
    resumed = keras.saving.load_model(tmp_path / "mid.keras")
    st = state(resumed, "dense_1")
    assert st.current_step() == 4 and st.current_alpha() == pytest.approx(1 - 1 / 5)
    fit(resumed, x, y, epochs=2)  # the optimizer state travels in the .keras file too
    for name in ("dense_1", "dense_2"):
        a, b = state(straight, name), state(resumed, name)
        assert (a.current_step(), a.current_alpha()) == (b.current_step(), b.current_alpha())
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("plan, exc, match", [
    ({"dense_9": ("low_rank", {"rank": 2})}, mutate.PlanError, "'dense_9' matches no compressible kernel.*dense_0"),
    ({"conv*": ("low_rank", {"rank": 2})}, mutate.PlanError, "'conv\\*' matches no compressible kernel"),
    ({"dense_1": ("low_rank", {"rank": 0})}, ValueError, "rank=0"),
    ({"dense_1": ("low_rank", {"rank": 33})}, mutate.PlanError, r"'dense_1' \(32x32\).*\[1, 32\].*rank=33"),
    ({"dense_1": ("pruning", {"sparsity": 1.0})}, ValueError, "sparsity=1.0"),
    ({"dense_1": ("kmeans_typo", {})}, ValueError, "unknown operator 'kmeans_typo'"),
    ({"dense_1": 16}, TypeError, "plan\\['dense_1'\\] must be"),
    ({"dense_*": ("low_rank", {"rank": 2}), "dense_1": "pruning"}, mutate.PlanError, "more than one plan key"),
    ({}, mutate.PlanError, "plan is empty"),
    ([("dense_1", "low_rank")], TypeError, "must map layer paths or globs to operators.*got a list"),
    ({1: "low_rank"}, TypeError, "plan key 1 must be a layer path, name or glob"),
])
def test_bad_plans_name_the_value(plan, exc, match):
    model = mlp()
    with pytest.raises(exc, match=match):
        mutate.compress(model, plan, mutate.Schedule(0, 4, 1))
    assert not [k for k in mutate.compressible(model) if k.state != "dense"]  # nothing half-done


def test_a_compress_that_fails_on_a_later_kernel_changes_nothing():
    """The first kernel is attached before the second fails (trainable_factors names a factor pruning lacks):
    the first is rolled back, the model keeps its class, weights and predictions, and trains without the
    callback as before."""
    model = mlp()
    x = np.random.default_rng(0).standard_normal((8, model.input_shape[-1])).astype("float32")
    before, weights = model.predict(x, verbose=0), [w.numpy().copy() for w in model.weights]
    classes = [type(layer) for layer in model.layers]
    with pytest.raises(ValueError, match="trainable_factors names \\['right'\\]"):
        mutate.compress(model, {"dense_1": ("low_rank", {"rank": 2}), "dense_2": ("pruning", {"sparsity": 0.5})},
                        mutate.Schedule(0, 4, 1), trainable_factors={"right": False})
    assert [k.state for k in mutate.compressible(model)] == ["dense"] * len(mutate.compressible(model))
    assert [type(layer) for layer in model.layers] == classes and "mutate" not in type(model).__module__
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(weights, model.weights))
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)


def test_non_compressible_and_already_compressed_layers_are_refused_by_path():
    inp = keras.Input((6, 4))
    h = keras.layers.LayerNormalization(name="norm")(inp)
    out = keras.layers.Dense(2, name="head")(keras.layers.GRU(3, name="gru")(h))
    model = keras.Model(inp, out)
    with pytest.raises(mutate.PlanError, match=r"'norm' \(LayerNormalization\) cannot be compressed"):
        mutate.compress(model, {"norm": ("low_rank", {"rank": 2})}, mutate.Schedule(0, 4, 1))
    c = mutate.compress(mlp(), {"dense_1": ("low_rank", {"rank": 2})}, mutate.Schedule(0, 4, 1))
    with pytest.raises(mutate.PlanError, match="'dense_1' is already compressed"):
        mutate.compress(c, {"dense_1": ("low_rank", {"rank": 2})}, mutate.Schedule(0, 4, 1))
    with pytest.raises(mutate.PlanError, match=r"'gru' \(4x9\), operator 'low_rank'.*rank=5"):
        mutate.compress(model, {"gru": ("low_rank", {"rank": 5})}, mutate.Schedule(0, 4, 1))


def test_unbuilt_models_and_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="not built"):
        mutate.compress(keras.Sequential([keras.layers.Dense(3)]), {"x": "low_rank"}, mutate.Schedule(0, 4, 1))
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
    assert state(c, "dense_1").compressor.rank_for(32, 32) == 4
    assert state(c, "dense_2").compressor.sparsity == 0.5


def test_strip_rebuilds_the_optimizer_so_a_saved_model_loads_its_state(tmp_path):
    """After strip the optimizer holds state for the variables the model has now (A's moments gone, the
    others carried over), so save -> load restores it without Keras' "Skipping variable loading" warning."""
    import warnings

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).standard_normal((64, 20)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, 64)
    m = keras.Sequential([keras.Input((20,)), keras.layers.Dense(16, activation="relu", name="d1"),
                          keras.layers.Dense(3, name="out")])
    mutate.compress(m, {"d1": ("low_rank", {"rank": 4})}, mutate.Schedule(0, 5, 2))
    m.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    m.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[mutate.CompressionCallback()])
    before = {v.path: np.asarray(v) for v in m.optimizer.variables}
    mutate.strip(m)
    after = {v.path: np.asarray(v) for v in m.optimizer.variables}
    assert len(after) == 2 + 2 * len(m.trainable_variables) < len(before)  # iterations, rate; 2 moments each
    kept = [p for p in after if p in before]
    assert any("out" in p for p in kept) and all(np.array_equal(after[p], before[p]) for p in kept)
    assert int(after[m.optimizer.iterations.path]) == 8
    m.save(tmp_path / "m.keras")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)]
    for a, b in zip(loaded.optimizer.variables, m.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0)  # trains on without recompiling


def test_lora_on_a_compressed_layer_is_refused_and_works_again_once_densified():
    """Keras' LoRA adds to a kernel a compressed layer no longer computes with: refused in words, not a no-op."""
    model = mlp()
    mutate.compress(model, {"dense_1": ("low_rank", {"rank": 2})}, mutate.Schedule(0, 4, 1))
    layer = model.get_layer("dense_1")
    with pytest.raises(ValueError, match="'dense_1' is compressed by mutate .*densify"):
        layer.enable_lora(2)
    assert not getattr(layer, "lora_enabled", False)
    mutate.densify(model, "dense_1")
    layer.enable_lora(2)
    assert layer.lora_enabled


def test_numpy_scalar_parameters_are_taken_as_numbers_and_the_model_saves(tmp_path):
    """rank=np.int64(2) (say from a NumPy grid) passes the checks; the saved config must still be JSON."""
    model = mlp()
    schedule = mutate.Schedule(np.int64(0), np.int64(4), np.int32(1))
    assert schedule == mutate.Schedule(0, 4, 1)
    mutate.compress(model, {"dense_1": ("low_rank", {"rank": np.int64(2)}),
                            "dense_2": [("pruning", {"sparsity": np.float32(0.5)}), ("kmeans", {"k": np.int64(4)})]},
                    schedule)
    assert type(operators.get("low_rank", rank=np.int64(2)).get_config()["rank"]) is int
    model.save(tmp_path / "m.keras")
    model.save_weights(tmp_path / "m.weights.h5")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert [k.state for k in mutate.compressible(loaded)] == [k.state for k in mutate.compressible(model)]


def test_strip_says_how_many_more_batches_a_blend_needs():
    """Schedule(0, 8, 2): updates at steps 0, 2, ..., 8; after 8 batches alpha is 0.2 and the update at step 8
    runs in the next batch."""
    model = mlp()
    mutate.compress(model, {"dense_1": ("low_rank", {"rank": 2})}, mutate.Schedule(0, 8, 2))
    x, y = data(n=64)
    compile_(model)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[mutate.CompressionCallback()])
    with pytest.raises(ValueError, match=r"alpha=0.2 after 8 training batches; its last update, at step 8, sets "
                                         r"alpha=0: 1 more batch\)"):
        mutate.strip(model)
    model.fit(x[:8], y[:8], batch_size=8, epochs=1, verbose=0, callbacks=[mutate.CompressionCallback()])
    mutate.strip(model)
    assert {k.path: k.state for k in mutate.compressible(model)}["dense_1"] == "spliced"
