"""Compressed LSTMs: equal to Keras' LSTM at alpha 1, blend, strip, save, size, densify."""

import functools

import keras
import numpy as np
import pytest

import mutate
from mutate.layers import CompressedLSTM

VOCAB, EMB, UNITS, T = 50, 8, 12, 6
OPS = {"low_rank": {"rank": 2}, "pruning": {"sparsity": 0.75}, "kmeans": {"k": 4}}


def lm(seed: int = 0, mask_zero: bool = False) -> keras.Model:
    """Embedding(50, 8) -> LSTM(12, return_sequences) -> Dense(50), with a random (non-zero) LSTM bias."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((T,), dtype="int32"),
                              keras.layers.Embedding(VOCAB, EMB, mask_zero=mask_zero, name="emb"),
                              keras.layers.LSTM(UNITS, return_sequences=True, name="lstm"),
                              keras.layers.Dense(VOCAB, name="head")], name="lm")
    cell = model.get_layer("lstm").cell
    cell.bias.assign(np.random.default_rng(seed).standard_normal(4 * UNITS).astype(np.float32) * 0.5)
    return model


def ids(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(1, VOCAB, (n, T + 1)).astype(np.int32)
    return x[:, :-1], x[:, 1:]


@functools.cache
def trained(op: str, epochs: int = 2, end_step: int = 3) -> keras.Model:
    """The LM with its LSTM compressed by ``OPS[op]``, trained ``epochs`` x 4 batches (cached: do not train it)."""
    x, y = ids()
    c = mutate.compress(lm(), {"lstm": (op, OPS[op])}, mutate.Schedule(0, end_step, 1))
    c.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    c.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, callbacks=[mutate.CompressionCallback()])
    return c


@pytest.mark.parametrize("return_sequences, go_backwards", [(True, False), (False, False), (False, True)])
def test_alpha_one_equals_keras_lstm(return_sequences, go_backwards):
    x = np.random.default_rng(1).standard_normal((5, 9, 7)).astype(np.float32)
    ref = keras.layers.LSTM(10, return_sequences=return_sequences, go_backwards=go_backwards)
    ref(x)
    ref.cell.bias.assign(np.random.default_rng(2).standard_normal(40).astype(np.float32))
    layer = CompressedLSTM(10, return_sequences=return_sequences, go_backwards=go_backwards, operator="low_rank",
                           operator_params={"rank": 3}, schedule=mutate.Schedule(0, 4, 1))
    layer.build(x.shape)
    for new, old in zip((layer.kernel, layer.recurrent_kernel, layer.bias),
                        (ref.cell.kernel, ref.cell.recurrent_kernel, ref.cell.bias)):
        new.assign(old)
    got = layer(x)
    assert tuple(got.shape) == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(got, ref(x), atol=1e-5)


def test_compress_keeps_predictions_with_a_mask_and_refuses_dropout():
    x, _ = ids()
    x[:, 4:] = 0  # padded tails, masked by the embedding
    for mask_zero in (False, True):
        model = lm(mask_zero=mask_zero)
        c = mutate.compress(model, {"lstm": ("low_rank", {"rank": 2})}, mutate.Schedule(0, 4, 1))
        assert isinstance(c.get_layer("lstm"), CompressedLSTM)
        np.testing.assert_allclose(c.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    inp = keras.Input((T, EMB))
    bad = keras.Model(inp, keras.layers.LSTM(4, dropout=0.1, name="lstm")(inp))
    with pytest.raises(TypeError, match=r"'lstm'.*plain LSTMs only.*dropout=0\.1"):
        mutate.compress(bad, {"lstm": ("low_rank", {"rank": 2})}, mutate.Schedule(0, 4, 1))


@pytest.mark.parametrize("op", ["low_rank", "pruning"])
def test_functional_masked_model_compresses_strips_and_densifies(op):
    x, _ = ids()
    x[:, 4:] = 0
    keras.utils.set_random_seed(0)
    inp = keras.Input((T,), dtype="int32")
    h = keras.layers.Embedding(VOCAB, EMB, mask_zero=True, name="emb")(inp)
    h = keras.layers.LSTM(UNITS, return_sequences=True, name="lstm")(h)
    model = keras.Model(inp, keras.layers.Dense(VOCAB, name="head")(h))
    c = mutate.compress(model, {"lstm": (op, OPS[op])}, mutate.Schedule(0, 4, 1))
    np.testing.assert_allclose(c.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    layer = c.get_layer("lstm")
    layer.refactor()
    layer.alpha.assign(0.0)
    out = c.predict(x, verbose=0)
    np.testing.assert_allclose(out[:, 5], out[:, 3], atol=1e-6)  # masked steps repeat the last state
    s = mutate.strip(c)
    np.testing.assert_allclose(s.predict(x, verbose=0), out, atol=1e-5)
    np.testing.assert_allclose(mutate.densify(s, "lstm").predict(x, verbose=0), out, atol=1e-5)


@pytest.mark.parametrize("op", list(OPS))
def test_blend_strip_and_save_round_trip(tmp_path, op):
    x, y = ids()
    c = trained(op)
    layer = c.get_layer("lstm")
    assert layer.current_step() == 8 and layer.current_alpha() == 0.0
    s = mutate.strip(c)
    np.testing.assert_allclose(s.predict(x, verbose=0), c.predict(x, verbose=0), atol=1e-5)
    if op == "low_rank":
        assert isinstance(s.get_layer("lstm_left"), mutate.FactorDense)
        assert isinstance(s.get_layer("lstm_right"), mutate.FactorLSTM)
    else:
        assert isinstance(s.get_layer("lstm"), mutate.SplicedLSTM)
    assert (EMB, 4 * UNITS) not in {tuple(w.shape) for w in s.weights}  # the dense input kernel is gone
    s.save(tmp_path / "s.keras")
    loaded = keras.saving.load_model(tmp_path / "s.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), s.predict(x, verbose=0))
    for a, b in zip(s.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert mutate.model_size(loaded) == mutate.model_size(s)
    s.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    s.fit(x, y, epochs=1, verbose=0)  # trains on after the splice


def test_mid_blend_save_round_trip_is_exact(tmp_path):
    x, _ = ids()
    c = trained("pruning", epochs=1, end_step=8)
    assert 0.0 < c.get_layer("lstm").current_alpha() < 1.0
    c.save(tmp_path / "c.keras")
    loaded = keras.saving.load_model(tmp_path / "c.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), c.predict(x, verbose=0))
    assert loaded.get_layer("lstm").current_step() == 4


def test_model_size_on_a_hand_checked_case():
    dense_lstm = 32 * (EMB * 4 * UNITS + UNITS * 4 * UNITS + 4 * UNITS)  # kernel, recurrent kernel, bias
    kept = 32 * (UNITS * 4 * UNITS + 4 * UNITS)
    c = trained("low_rank")
    blending = {e.name: e for e in mutate.model_size(c).layers}["lstm"]
    low_rank = 32 * (EMB * 2 + 2 * 4 * UNITS) + kept
    assert (blending.state, blending.dense_bits, blending.final_bits) == ("blending", dense_lstm, low_rank)
    size = mutate.model_size(mutate.strip(c))
    assert [(e.name, e.state, e.bits, e.dense_bits) for e in size.layers][1] == ("lstm", "spliced", low_rank,
                                                                                 dense_lstm)
    assert size.dense_bits == mutate.model_size(lm()).dense_bits
    pruned = {e.name: e for e in mutate.model_size(mutate.strip(trained("pruning"))).layers}
    assert pruned["lstm"].bits == 8 * (EMB * 4 * UNITS // 8) + 32 * (EMB * 4 * UNITS // 4) + kept


@pytest.mark.parametrize("op", ["low_rank", "pruning"])
def test_densify_round_trip(op):
    x, _ = ids()
    mid = trained(op, epochs=1, end_step=8)  # still blending
    for model in (mid, mutate.strip(mid, force=True)):
        d = mutate.densify(model, "lstm")
        plain = d.get_layer("lstm")
        assert type(plain) is keras.layers.LSTM and plain.return_sequences
        np.testing.assert_allclose(d.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
        again = mutate.compress(d, {"lstm": (op, OPS[op])}, mutate.Schedule(0, 4, 1))
        np.testing.assert_allclose(again.predict(x, verbose=0), d.predict(x, verbose=0), atol=1e-5)
