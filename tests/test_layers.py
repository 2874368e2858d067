"""Blended layers: per-layer state, the blend arithmetic, the callback, and its absence."""

import keras
import numpy as np
import pytest

import mutate
from mutate.operator import KernelState
from tests.helpers import compile_, data, fit, mlp, state


def test_every_layer_of_a_four_layer_model_gets_its_own_state_and_factors():
    x, y = data()
    model = mlp()
    sched = mutate.Schedule(begin_step=0, end_step=6, frequency=2)
    c = compile_(mutate.compress(model, {"dense_*": ("low_rank", {"rank": 3})}, sched))
    layers = mutate.blending_kernels(c)
    assert [layer.name for layer in layers] == ["dense_0", "dense_1", "dense_2", "dense_3"]
    assert len({id(layer.alpha) for layer in layers}) == 4 and len({id(layer.step) for layer in layers}) == 4
    fit(c, x, y, epochs=1)  # 4 batches: updates at steps 0 and 2
    for layer in layers:
        assert layer.current_step() == 4
        assert layer.current_alpha() == pytest.approx(0.5)
        left, right = layer.factor_values()["left"], layer.factor_values()["right"]
        assert np.linalg.norm(left) > 0 and np.linalg.norm(right) > 0, layer.name


def test_layers_compressed_at_different_times_keep_independent_schedules():
    x, y = data()
    sched = mutate.Schedule(begin_step=0, end_step=7, frequency=1)
    c = compile_(mutate.compress(mlp(), {"dense_0": ("low_rank", {"rank": 2})}, sched))
    fit(c, x, y, epochs=1)
    c2 = compile_(mutate.compress(c, {"dense_2": ("pruning", {"sparsity": 0.5})}, sched))
    fit(c2, x, y, epochs=1)
    by_name = {k.path: k for k in mutate.blending_kernels(c2)}
    assert by_name["dense_0"].current_step() == 8 and by_name["dense_0"].current_alpha() == 0.0
    assert by_name["dense_2"].current_step() == 4 and by_name["dense_2"].current_alpha() == pytest.approx(0.5)


def test_alpha_one_is_the_dense_layer_and_alpha_zero_is_the_factor_product():
    x, _ = data()
    model = mlp()
    c = mutate.compress(model, {"dense_1": ("low_rank", {"rank": 4})}, mutate.Schedule(0, 4, 1))
    np.testing.assert_array_equal(c.predict(x, verbose=0), model.predict(x, verbose=0))
    layer = c.get_layer("dense_1")
    st = state(c, "dense_1")
    st.refactor(layer.kernel.numpy())
    st.alpha.assign(0.0)
    h = keras.Model(c.inputs, c.get_layer("dense_0").output).predict(x, verbose=0)
    f = st.factor_values()
    expected = np.maximum(h @ f["left"] @ f["right"] + layer.bias.numpy(), 0)
    got = keras.Model(c.inputs, layer.output).predict(x, verbose=0)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    st.alpha.assign(0.25)
    a = layer.kernel.numpy()
    blended = np.maximum(0.25 * (h @ a) + 0.75 * (h @ f["left"] @ f["right"]) + layer.bias.numpy(), 0)
    np.testing.assert_allclose(keras.Model(c.inputs, layer.output).predict(x, verbose=0), blended, atol=1e-5)


def test_factors_come_from_a_at_first_update_and_refresh_only_when_asked():
    x, y = data()
    sched = mutate.Schedule(begin_step=2, end_step=8, frequency=2)
    for refresh in (False, True):
        c = compile_(mutate.compress(mlp(), {"dense_1": ("low_rank", {"rank": 4})}, sched, refresh=refresh,
                                     trainable_factors={"left": False, "right": False}))
        layer = state(c, "dense_1")
        c.fit(x[:32], y[:32], batch_size=16, epochs=1, verbose=0, callbacks=[mutate.CompressionCallback()])
        assert layer.current_step() == 2 and not int(layer.factored.numpy())
        c.fit(x[:16], y[:16], batch_size=16, epochs=1, verbose=0, callbacks=[mutate.CompressionCallback()])
        first = layer.factor_values()["left"]  # factored from A at step 2
        c.fit(x[:32], y[:32], batch_size=16, epochs=1, verbose=0, callbacks=[mutate.CompressionCallback()])
        later = layer.factor_values()["left"]  # step 4 is an update; A trained in between
        assert (not np.allclose(first, later)) == refresh


def test_kmeans_is_clustered_once_even_with_refresh(monkeypatch):
    # Re-clustering a drifting A at every update collapsed LeNet-300-100 to chance level (experiments/README):
    # k-means is not refreshable, so its codes stay those of the first update and its codebook trains.
    # (random_projection refreshes on the host; low_rank and pruning refresh in TensorFlow's graph.)
    import operators

    assert operators.get("kmeans").refreshable is False and operators.get("low_rank", rank=2).refreshable is True
    assert operators.get("pruning").graph_refresh and not operators.get("gradient_pruning").graph_refresh  # saliency
    calls = []
    original = KernelState.refactor
    monkeypatch.setattr(KernelState, "refactor", lambda self, a: (calls.append(self.host), original(self, a)))
    x, y = data()
    for op, params, once in (("kmeans", {"k": 4}, True), ("random_projection", {"rank": 2}, False)):
        calls.clear()
        c = compile_(mutate.compress(mlp(), {"dense_1": (op, params)}, mutate.Schedule(0, 8, 2), refresh=True))
        c.fit(x[:160], y[:160], batch_size=16, epochs=1, verbose=0, callbacks=[mutate.CompressionCallback()])
        assert (len(calls) == 1) == once and len(calls) >= 1, (op, calls)


def test_factors_train_by_backprop_unless_frozen():
    x, y = data()
    for frozen in (False, True):
        flags = {"right": False} if frozen else None
        c = compile_(mutate.compress(mlp(), {"dense_1": ("low_rank", {"rank": 4})}, mutate.Schedule(0, 20, 5),
                                     trainable_factors=flags), lr=0.1)
        fit(c, x[:16], y[:16])
        layer = state(c, "dense_1")
        before = layer.factor_values()
        fit(c, x, y)
        after = layer.factor_values()
        assert not np.allclose(before["left"], after["left"])
        assert np.allclose(before["right"], after["right"]) == frozen


def test_training_without_the_callback_raises_a_clear_error():
    x, y = data()
    c = compile_(mutate.compress(mlp(), {"dense_1": ("low_rank", {"rank": 2})},
                                 mutate.Schedule(0, 4, 1)))
    with pytest.raises(RuntimeError, match="without mutate.CompressionCallback"):
        c.fit(x, y, verbose=0)
    c2 = compile_(mutate.compress(mlp(), {"dense_1": ("low_rank", {"rank": 2})}, mutate.Schedule(0, 4, 1)))
    fit(c2, x, y)
    with pytest.raises(Exception, match="without mutate.CompressionCallback"):
        c2.fit(x, y, verbose=0)  # traced function reused: the in-graph check fires
    c2.predict(x, verbose=0)  # inference needs no callback
    c2.evaluate(x, y, verbose=0)


@pytest.mark.parametrize("refresh", [False, True])
def test_steps_per_execution_8_gives_the_weights_of_1_when_updates_fall_on_execution_boundaries(refresh):
    x, y = data()
    results = []
    for spe in (1, 8):
        keras.utils.set_random_seed(0)
        c = mutate.compress(mlp(), {"dense_1": ("low_rank", {"rank": 2})}, mutate.Schedule(8, 40, 8), refresh=refresh)
        c.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  steps_per_execution=spe)
        c.fit(x, y, batch_size=len(x) // 16, epochs=3, shuffle=False, verbose=0,
              callbacks=[mutate.CompressionCallback()])
        layer = state(c, "dense_1")
        results.append((layer.current_step(), layer.current_alpha(), [w.numpy() for w in c.weights]))
    (s1, a1, w1), (s8, a8, w8) = results
    assert s1 == s8 == 48 and a1 == a8 == 0.0
    for a, b in zip(w1, w8):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _record_factoring_steps(monkeypatch) -> list[int]:
    """The kernel's step at each host factoring (`KernelState.refactor`), appended as fits run."""
    seen: list[int] = []
    original = KernelState.refactor
    monkeypatch.setattr(KernelState, "refactor",
                        lambda self, a: (seen.append(int(keras.ops.convert_to_numpy(self.step))), original(self, a)))
    return seen


def _kmeans_mlp(schedule, steps_per_execution):
    """A 16-32-4 MLP (seed 0) whose hidden kernel blends into k-means k=4 on ``schedule``, compiled."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((16,))
    c = keras.Model(inp, keras.layers.Dense(4, name="out")(keras.layers.Dense(32, name="h")(inp)))
    mutate.compress(c, {"h": ("kmeans", {"k": 4})}, schedule)
    c.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              steps_per_execution=steps_per_execution)
    return c


def test_an_epochs_short_last_execution_does_not_bring_the_next_update_forward(monkeypatch):
    """13 batches an epoch at steps_per_execution=8: executions of 8 and 5. The first update at step 13 (the next
    epoch's first batch, an execution boundary) was factored at step 8, the callback counting the 5 as 8."""
    seen = _record_factoring_steps(monkeypatch)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((208, 16)).astype("float32"), rng.integers(0, 4, 208)
    outputs = []
    for spe in (1, 8):
        c = _kmeans_mlp(mutate.Schedule(begin_step=13, end_step=16, frequency=3), spe)
        c.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[mutate.CompressionCallback()])
        outputs.append(c.predict(x, verbose=0))
    assert seen == [13, 13]
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)


def test_a_dataset_of_unknown_length_factors_at_the_step_a_known_one_does(monkeypatch):
    """Found by a bug hunt: a tf.data dataset of unknown length (a `filter`) gives Keras no steps per epoch, so
    the epoch's short last execution (1 batch of 4 here) was counted as 4 and the update at step 9, the next
    epoch's first batch, was factored at step 8. The callback now learns the epoch's length from the first
    epoch and, in it, waits with a first factoring for an execution that starts at or after it."""
    tf = pytest.importorskip("tensorflow")
    seen = _record_factoring_steps(monkeypatch)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((288, 16)).astype("float32"), rng.integers(0, 4, 288)
    outputs = []
    for unknown in (False, True):
        seen.clear()
        c = _kmeans_mlp(mutate.Schedule(begin_step=9, end_step=17, frequency=4), 4)
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        ds = (ds.filter(lambda a, b: True) if unknown else ds).batch(32)  # 9 batches: executions of 4, 4, 1
        assert (int(ds.cardinality()) < 0) == unknown
        c.fit(ds, epochs=3, verbose=0, callbacks=[mutate.CompressionCallback()])
        assert seen and seen[-1] == 9 and set(seen) == {9}, (unknown, seen)
        outputs.append(c.predict(x, verbose=0))
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("operator, params", [("low_rank", {"rank": 2}), ("pruning", {"sparsity": 0.7})])
def test_refreshes_run_in_the_graph_at_their_exact_step(monkeypatch, operator, params):
    """TensorFlow: low_rank and pruning refresh inside the training step, so refreshes that fall inside an
    execution of 8 (every 3 steps from 8) give the weights of steps_per_execution=1; the host factors once."""
    calls = []
    original = KernelState.refactor
    monkeypatch.setattr(KernelState, "refactor", lambda self, a: (calls.append(self.host), original(self, a)))
    x, y = data()
    results = []
    for spe, refresh in ((1, True), (8, True), (1, False)):
        calls.clear()
        keras.utils.set_random_seed(0)
        c = mutate.compress(mlp(), {"dense_1": (operator, params)}, mutate.Schedule(8, 44, 3), refresh=refresh)
        c.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  steps_per_execution=spe)
        c.fit(x, y, batch_size=len(x) // 16, epochs=3, shuffle=False, verbose=0,
              callbacks=[mutate.CompressionCallback()])
        layer = state(c, "dense_1")
        assert layer.graph_refresh == refresh and calls == ["dense_1"] and layer.current_alpha() == 0.0
        results.append([w.numpy() for w in c.weights])
    for a, b in zip(results[0], results[1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(a, b) for a, b in zip(results[0], results[2]))  # the refreshes did something


@pytest.mark.parametrize("operator, params", [("low_rank", {"rank": 6}), ("pruning", {"sparsity": 0.8})])
def test_a_refresh_computes_the_same_factors_in_numpy_and_in_the_graph(operator, params):
    import operators

    rng = np.random.default_rng(0)
    a = (rng.normal(size=(40, 12)) @ np.diag(np.linspace(2, 0.1, 12)) @ rng.normal(size=(12, 30))).astype("float32")
    op = operators.get(operator, **params)
    moved = a + 0.05 * rng.normal(size=a.shape).astype("float32")  # A after some training
    host = op.refreshed(moved, op.factor(a))
    graph = op.refreshed_tensor(keras.ops.convert_to_tensor(moved), op.factor(a))
    for name, value in host.items():
        np.testing.assert_allclose(keras.ops.convert_to_numpy(graph[name]), value, atol=2e-4)
    fresh = op.product(op.factor(moved))
    err = np.linalg.norm(moved - keras.ops.convert_to_numpy(op.product(host)))
    assert err <= 1.01 * np.linalg.norm(moved - keras.ops.convert_to_numpy(fresh))  # as good as factoring afresh


@pytest.mark.parametrize("spectrum", ["graded", "rank3", "zero", "huge"])
def test_the_graph_refresh_of_low_rank_survives_ill_conditioned_and_rank_deficient_kernels(spectrum):
    """The graph's bases come from Gram eigendecompositions, not a QR: singular values over 4 decades (the
    power step squares them: 8), a kernel of rank 3 < k = 6, an all-zero kernel, and a diverging one (finite
    entries near 1e17, whose Gram matrix overflowed float32 and made ``eigh`` raise: a bug hunt's SGD at rate
    10) give finite factors as good as factoring afresh."""
    import operators

    rng = np.random.default_rng(1)
    s = {"graded": np.geomspace(1.0, 1e-4, 12), "rank3": np.r_[np.ones(3), np.zeros(9)], "zero": np.zeros(12),
         "huge": np.geomspace(1e19, 1e17, 12)}[spectrum]
    a = (np.linalg.qr(rng.normal(size=(60, 12)))[0] * s @ np.linalg.qr(rng.normal(size=(40, 12)))[0].T).astype("float32")
    op = operators.get("low_rank", rank=6)
    start = op.factor(a + 0.01 * rng.normal(size=a.shape).astype("float32"))  # factors of an earlier A
    graph = {k: keras.ops.convert_to_numpy(v) for k, v in op.refreshed_tensor(keras.ops.convert_to_tensor(a), start).items()}
    assert all(np.isfinite(v).all() for v in graph.values())
    err = np.linalg.norm(a - graph["left"] @ graph["right"])
    assert err <= 1.01 * np.linalg.norm(a - keras.ops.convert_to_numpy(op.product(op.factor(a)))) + 1e-4 * np.linalg.norm(a) + 1e-6


def test_an_update_inside_an_execution_factors_at_its_start_and_alpha_follows_the_step():
    x, y = data()
    c = mutate.compress(mlp(), {"dense_1": ("low_rank", {"rank": 2})}, mutate.Schedule(5, 21, 4))
    c.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True), steps_per_execution=8)
    c.fit(x, y, batch_size=len(x) // 16, epochs=1, shuffle=False, verbose=0, callbacks=[mutate.CompressionCallback()])
    layer = state(c, "dense_1")
    assert layer.current_step() == 16 and int(layer.factored.numpy()) == 1
    assert layer.current_alpha() == pytest.approx(layer.schedule.alpha(15))  # the last batch's own alpha
    c.fit(x, y, batch_size=len(x) // 16, epochs=1, shuffle=False, verbose=0, callbacks=[mutate.CompressionCallback()])
    assert layer.current_step() == 32 and layer.current_alpha() == 0.0
    mutate.strip(c)


def test_schedule_updates_do_not_retrace_the_training_step(monkeypatch):
    x, y = data()
    c = compile_(mutate.compress(mlp(), {"dense_*": ("low_rank", {"rank": 2})}, mutate.Schedule(0, 11, 1),
                                 refresh=True))
    traced = []
    original = KernelState.begin_call

    def counting(self, training, a=None):
        traced.append((self.host, training))  # Python runs only while TensorFlow traces
        return original(self, training, a)

    monkeypatch.setattr(KernelState, "begin_call", counting)
    fit(c, x, y, epochs=3)  # 12 steps, an alpha update and a refresh at every one
    assert sorted(traced) == [(f"dense_{i}", True) for i in range(4)]


@pytest.mark.parametrize("bits", range(1, 10))
def test_unpack_codes_inverts_pack_codes_at_every_width(bits):
    from operators._bits import pack_codes, unpack_codes

    codes = np.random.default_rng(bits).integers(0, 1 << bits, 37)
    out = keras.ops.convert_to_numpy(unpack_codes(pack_codes(codes, bits), len(codes), bits))
    np.testing.assert_array_equal(out, codes)


MIRRORED = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np, mutate
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
rng = np.random.default_rng(0)
x, y = rng.standard_normal((64, 12)).astype("float32"), rng.integers(0, 3, 64)
with strategy.scope():
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(16, activation="relu", name="h"),
                              keras.layers.Dense(3, name="out")])
weights = len(model.weights)
try:  # outside the scope: refused before any variable is made (fit failed later on "colocate_vars_with")
    mutate.compress(model, {"h": ("low_rank", {"rank": 2})}, mutate.Schedule(0, 3, 1))
    raise AssertionError("compress outside the strategy's scope was not refused")
except ValueError as e:
    assert "built under a tf.distribute MirroredStrategy; call mutate.compress inside its scope" in str(e), e
assert len(model.weights) == weights
with strategy.scope():
    c = mutate.compress(model, {"h": ("low_rank", {"rank": 2})}, mutate.Schedule(0, 3, 1), refresh=True)
    c.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
c.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[mutate.CompressionCallback()])
layer = mutate.kernel(c, "h").compression
assert strategy.num_replicas_in_sync == 2
assert (layer.current_step(), layer.current_alpha()) == (4, 0.0), (layer.current_step(), layer.current_alpha())
before = c.predict(x, verbose=0)
try:
    mutate.strip(c)
    raise AssertionError("strip outside the strategy's scope was not refused")
except ValueError as e:
    assert "call mutate.strip inside its scope" in str(e), e
with strategy.scope():
    mutate.strip(c)
np.testing.assert_allclose(c.predict(x, verbose=0), before, atol=1e-5)
print("ok")
"""


def test_blending_under_a_mirrored_strategy_counts_each_batch_once():
    """Two logical CPUs stand in for two GPUs (the device setup must precede TensorFlow's, hence a child)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    res = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True, timeout=300, env=env,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-2000:]


@pytest.mark.parametrize("operator, params, factor", [("kmeans", {"k": 2}, "codebook"),
                                                      ("dictionary", {"atoms": 4, "n_nonzero": 2}, "dictionary")])
def test_one_adam_step_moves_a_shared_factor_by_one_learning_rate(operator, params, factor):
    """Each codebook entry / atom is looked up hundreds of times; Adam's first step must still be ~lr.

    A gather's gradient in TensorFlow is one slice per lookup, and Keras' Adam squared the slices before
    summing duplicates, which moved the codebook ~sqrt(lookups) learning rates in one step.
    """
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(48, name="h")])
    c = mutate.compress(model, {"h": (operator, params)}, mutate.Schedule(0, 0, 1))
    c.compile(keras.optimizers.Adam(1e-3), "mse")
    rng = np.random.default_rng(0)  # positive inputs, targets far below: every weight's gradient is positive
    x, y = rng.uniform(0, 1, (32, 64)).astype("float32"), np.full((32, 48), -10.0, "float32")
    c.fit(x[:1], y[:1], verbose=0, callbacks=[mutate.CompressionCallback()])  # factors the layer (alpha -> 0)
    variable = state(c, "h").factors[factor]
    before = variable.numpy().copy()
    c.fit(x, y, batch_size=32, verbose=0, callbacks=[mutate.CompressionCallback()])
    step = np.abs(variable.numpy() - before).max()
    assert 0 < step <= 2e-3, f"{factor} moved {step / 1e-3:.1f} learning rates in one Adam step"


@pytest.mark.parametrize("operator, params", [("pruning", {"sparsity": 0.8}), ("kmeans", {"k": 4}),
                                              ("simhash", {"rank": 32}), ("dictionary", {"atoms": 8, "n_nonzero": 2}),
                                              ("pruning+kmeans", {"sparsity": 0.8, "k": 4})])
def test_a_spliced_layer_trains_on_held_codes_exactly_as_on_its_packed_arrays(operator, params, tmp_path):
    """A spliced layer decodes its bit-packed arrays once and holds the codes (and pruning's kept positions),
    instead of unpacking them on every call: the product and the gradients of its float arrays are those of
    the unpacked packed arrays; the held copies are neither stored in a file nor counted, and come back
    when the model is loaded."""
    import tensorflow as tf

    x, y = data()
    model = compile_(mutate.compress(mlp((16, 64, 48, 5)), {"dense_1": (operator, params)}, mutate.Schedule(0, 3, 1)))
    fit(model, x, y, epochs=1)
    mutate.strip(model)
    st = state(model, "dense_1")
    assert st.decoded and all(v.path.split("/")[-1].startswith("decoded_") for v in st.decoded.values())
    m, n = st.matrix_shape()
    floats = [v for v in st.packed.values() if v.trainable]
    xs = tf.constant(np.random.default_rng(1).normal(size=(32, m)).astype("float32"))
    products = []
    for held in (True, False):
        with tf.GradientTape() as tape:
            factors = st.factor_tensors() if held else {**st._generated, **st.compressor.unpack(dict(st.packed), m, n)}
            product = keras.ops.convert_to_tensor(st.compressor.product(factors))
            loss = tf.reduce_sum(tf.sin(tf.matmul(xs, product)))
        products.append((product.numpy(), [g.numpy() for g in tape.gradient(loss, [v.value for v in floats])]))
    np.testing.assert_array_equal(products[0][0], products[1][0])
    for held_grad, unpacked_grad in zip(products[0][1], products[1][1]):
        np.testing.assert_allclose(held_grad, unpacked_grad, rtol=1e-5, atol=1e-6)
    store: dict = {}
    st.save_own_variables(store)
    assert len([k for k in store if "." not in k]) == len(st.stored_weights) == len(st.weights) - len(st.decoded)
    claimed = st.compressor.size_bits(st.factor_values())
    assert {e.name: e for e in mutate.model_size(model).layers}["dense_1"].bits == claimed + 32 * 48
    model.save(tmp_path / "m.keras")
    loaded = state(keras.saving.load_model(tmp_path / "m.keras"), "dense_1")
    for name, var in st.decoded.items():
        np.testing.assert_array_equal(loaded.decoded[name].numpy(), var.numpy())


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float64"])
def test_a_layer_of_another_dtype_splices_and_is_sized_at_its_own_width(dtype, tmp_path):
    """Found by a bug hunt: a Dense(dtype="bfloat16") was compressed, then `fit` died at its first factoring
    ("expected a real-valued matrix": ml_dtypes' bfloat16 is no np.number) and `model_size` refused even the
    plain model; and a compressed layer's dense bits counted 32 per kernel element whatever its dtype, so a
    float16 layer that stores more bits once spliced (its factors are float32) read as 1.87x smaller, a float64
    one 1.83x instead of 3.6x."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((12,))
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Dense(16, dtype=dtype, name="t")(inp)))
    plain = mutate.model_size(model)
    mutate.compress(model, {"t": ("pruning", {"sparsity": 0.5})}, mutate.Schedule(begin_step=0, end_step=4, frequency=2))
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(0).normal(size=(64, 12)).astype("float32")
    model.fit(x, np.zeros((64, 3), "float32"), batch_size=16, epochs=2, verbose=0,
              callbacks=[mutate.CompressionCallback()])
    mutate.strip(model)
    size = mutate.model_size(model)
    assert size.dense_bits == plain.bits  # the plain model's bits, at the layer's width
    row = next(r for r in size.layers if r.name == "t")
    bits = {"bfloat16": 16, "float16": 16, "float64": 64}[dtype]
    assert row.dense_bits == bits * 12 * 16 + bits * 16  # kernel and bias at the layer's width
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(again(x[:4])), keras.ops.convert_to_numpy(model(x[:4])))
