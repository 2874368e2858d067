"""Compressed recurrent layers (LSTM, GRU), in place: both kernels, masks, dropout, strip, save, size, densify."""

import keras
import numpy as np
import pytest

import mutate
from tests.helpers import state

VOCAB, EMB, UNITS, T = 50, 8, 12, 6
OPS = {"low_rank": {"rank": 2}, "pruning": {"sparsity": 0.75}, "kmeans": {"k": 4}}


def lm(seed: int = 0, mask_zero: bool = False, rnn: type = keras.layers.LSTM, **kwargs) -> keras.Model:
    """Embedding(50, 8) -> LSTM(12, return_sequences) -> Dense(50), with a random (non-zero) LSTM bias."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((T,), dtype="int32"),
                              keras.layers.Embedding(VOCAB, EMB, mask_zero=mask_zero, name="emb"),
                              rnn(UNITS, return_sequences=True, name="lstm", **kwargs),
                              keras.layers.Dense(VOCAB, name="head")], name="lm")
    cell = model.get_layer("lstm").cell
    cell.bias.assign(np.random.default_rng(seed).standard_normal(tuple(cell.bias.shape)).astype(np.float32) * 0.5)
    return model


def ids(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(1, VOCAB, (n, T + 1)).astype(np.int32)
    return x[:, :-1], x[:, 1:]


def trained(op: str, epochs: int = 2, end_step: int = 3, plan_key: str = "lstm", rnn: type = keras.layers.LSTM):
    """The LM with ``plan_key`` compressed by ``OPS[op]``, trained ``epochs`` x 4 batches."""
    x, y = ids()
    c = mutate.compress(lm(rnn=rnn), {plan_key: (op, OPS[op])}, mutate.Schedule(0, end_step, 1))
    c.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    c.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, callbacks=[mutate.CompressionCallback()])
    return c


def test_both_kernels_are_addressable_and_viewed_as_their_matrices():
    for rnn, gates in ((keras.layers.LSTM, 4), (keras.layers.GRU, 3)):
        found = {k.path: k for k in mutate.compressible(lm(rnn=rnn))}
        assert found["lstm"].matrix == (EMB, gates * UNITS) and found["lstm"].slot.name == "kernel"
        assert found["lstm/recurrent_kernel"].matrix == (UNITS, gates * UNITS)


@pytest.mark.parametrize("rnn", [keras.layers.LSTM, keras.layers.GRU])
def test_compress_keeps_predictions_with_a_mask_and_dropout(rnn):
    x, _ = ids()
    x[:, 4:] = 0  # padded tails, masked by the embedding
    for mask_zero in (False, True):
        model = lm(mask_zero=mask_zero, rnn=rnn, dropout=0.1, recurrent_dropout=0.1)
        before = model.predict(x, verbose=0)
        c = mutate.compress(model, {"lstm*": ("low_rank", {"rank": 2})}, mutate.Schedule(0, 4, 1))
        assert type(c.get_layer("lstm")).__name__ == rnn.__name__
        np.testing.assert_allclose(c.predict(x, verbose=0), before, atol=1e-5)


@pytest.mark.parametrize("op", ["low_rank", "pruning"])
def test_functional_masked_model_compresses_strips_and_densifies(op):
    x, _ = ids()
    x[:, 4:] = 0
    keras.utils.set_random_seed(0)
    inp = keras.Input((T,), dtype="int32")
    h = keras.layers.Embedding(VOCAB, EMB, mask_zero=True, name="emb")(inp)
    h = keras.layers.LSTM(UNITS, return_sequences=True, name="lstm")(h)
    model = keras.Model(inp, keras.layers.Dense(VOCAB, name="head")(h))
    before = model.predict(x, verbose=0)
    c = mutate.compress(model, {"lstm": (op, OPS[op])}, mutate.Schedule(0, 4, 1))
    np.testing.assert_allclose(c.predict(x, verbose=0), before, atol=1e-5)
    st = state(c, "lstm")
    st.refactor(c.get_layer("lstm").cell.kernel.numpy())
    st.alpha.assign(0.0)
    out = c.predict(x, verbose=0)
    np.testing.assert_allclose(out[:, 5], out[:, 3], atol=1e-6)  # masked steps repeat the last state
    mutate.strip(c)
    np.testing.assert_allclose(c.predict(x, verbose=0), out, atol=1e-5)
    np.testing.assert_allclose(mutate.densify(c, "lstm").predict(x, verbose=0), out, atol=1e-5)


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("rnn", [keras.layers.LSTM, keras.layers.GRU])
def test_blend_strip_and_save_round_trip(tmp_path, op, rnn):
    x, y = ids()
    c = trained(op, plan_key="lstm*", rnn=rnn)
    for path in ("lstm", "lstm/recurrent_kernel"):
        assert state(c, path).current_step() == 8 and state(c, path).current_alpha() == 0.0
    blended = c.predict(x, verbose=0)
    mutate.strip(c)
    np.testing.assert_allclose(c.predict(x, verbose=0), blended, atol=1e-5)
    shapes = {tuple(w.shape) for w in c.weights}
    gates = 4 if rnn is keras.layers.LSTM else 3
    assert (EMB, gates * UNITS) not in shapes and (UNITS, gates * UNITS) not in shapes  # both kernels are gone
    c.save(tmp_path / "s.keras")
    loaded = keras.saving.load_model(tmp_path / "s.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), c.predict(x, verbose=0))
    for a, b in zip(c.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert mutate.model_size(loaded) == mutate.model_size(c)
    c.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    c.fit(x, y, epochs=1, verbose=0)  # trains on after the splice


def test_mid_blend_save_round_trip_is_exact(tmp_path):
    x, _ = ids()
    c = trained("pruning", epochs=1, end_step=8)
    assert 0.0 < state(c, "lstm").current_alpha() < 1.0
    c.save(tmp_path / "c.keras")
    loaded = keras.saving.load_model(tmp_path / "c.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), c.predict(x, verbose=0))
    assert state(loaded, "lstm").current_step() == 4


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
    for force in (False, True):
        model = trained(op, epochs=1, end_step=8)  # still blending
        if force:
            mutate.strip(model, force=True)
        before = model.predict(x, verbose=0)
        mutate.densify(model, "lstm")
        plain = model.get_layer("lstm")
        assert type(plain) is keras.layers.LSTM and plain.return_sequences
        assert [w.name for w in plain.cell.weights] == ["kernel", "recurrent_kernel", "bias"]
        np.testing.assert_allclose(model.predict(x, verbose=0), before, atol=1e-5)
        mutate.compress(model, {"lstm": (op, OPS[op])}, mutate.Schedule(0, 4, 1))
        np.testing.assert_allclose(model.predict(x, verbose=0), before, atol=1e-5)
