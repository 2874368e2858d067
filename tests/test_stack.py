"""Stacks (operators/stack.py): stages on the previous stage's factors, entropy coding, and the Keras round trips."""

import numpy as np
import pytest

import operators
from operators.huffman import decode_stream, encode_stream
from operators.pruning import kept_count
from tests.operator_conformance import LayerConformance, OperatorConformance

PRUNE_KMEANS = {"stages": [["pruning", {"sparsity": 0.75}], ["kmeans", {"k": 4}]]}


def scatter(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.zeros(mask.size, np.float32)
    out[mask.ravel() > 0] = values.ravel()
    return out.reshape(mask.shape)


class TestPruneKMeansConformance(OperatorConformance):
    name = "stack"
    params = PRUNE_KMEANS

    def reconstruct(self, op, factors):
        return scatter(factors["mask"], factors["values__codebook"][factors["values__codes"].ravel(), 0])


class TestLowRankKMeansConformance(OperatorConformance):
    name = "stack"
    params = {"stages": [["low_rank", {"rank": 4}], ["kmeans", {"k": 8}]]}

    def reconstruct(self, op, factors):
        left = factors["left__codebook"][factors["left__codes"], 0]
        right = factors["right__codebook"][factors["right__codes"], 0]
        return left @ right


class TestPruneKMeansLayers(LayerConformance):
    name = "stack"
    params = PRUNE_KMEANS


def test_the_first_stage_is_kept_and_the_second_compresses_its_kept_values():
    a = np.random.default_rng(0).standard_normal((40, 30)).astype(np.float32)
    alone = operators.get("pruning", sparsity=0.9).factor(a)
    f = operators.get("pruning+kmeans", sparsity=0.9, k=8).factor(a)
    np.testing.assert_array_equal(f["mask"], alone["mask"])  # the mask is pruning's own
    kept = a.ravel()[alone["mask"].ravel() > 0]
    assert f["values__codes"].shape == (kept_count(40, 30, 0.9), 1) and f["values__codebook"].shape == (8, 1)
    direct = operators.get("kmeans", k=8).factor(kept[:, None])  # k-means of the kept values alone
    np.testing.assert_array_equal(f["values__codes"], direct["codes"])
    # combined names route each parameter to the stage that takes it; both spellings give the same stack
    assert operators.get("pruning+kmeans", sparsity=0.9, k=8) == operators.get(
        "stack", stages=[("pruning", {"sparsity": 0.9}), ("kmeans", {"k": 8})])
    assert operators.get("pruning+kmeans", **{"sparsity": 0.9, "kmeans.k": 8}).get_config() == \
        operators.get("pruning+kmeans", sparsity=0.9, k=8).get_config()


@pytest.mark.parametrize("name, params, match", [
    ("simhash+kmeans", {"rank": 8, "k": 4}, "kmeans cannot follow simhash"),
    ("kmeans+low_rank", {"k": 4, "rank": 2}, "low_rank cannot follow kmeans"),
    ("huffman+kmeans", {"k": 4}, "huffman must be the last stage"),
    ("pruning+kmeans", {"sparsity": 0.5, "k": 4, "max_iter": 3, "kmeans.seed": 1, "rank": 2}, "'rank': no stage"),
    ("pruning+nope", {}, "unknown operator 'nope'"),
    # found by a bug hunt: the later spelling won silently; huffman's parameters were dropped; a repeated stage
    # was reported as an ambiguous parameter
    ("pruning+kmeans", {"k": 4, "kmeans.k": 8}, r"kmeans.k is given twice \(k and kmeans.k\)"),
    ("pruning+kmeans+huffman", {"sparsity": 0.5, "huffman.level": 9}, "stage huffman takes no parameter 'level'"),
    ("pruning+kmeans", {"kmeans.rank": 2}, "stage kmeans takes no parameter 'rank'"),
    ("pruning+pruning", {"sparsity": 0.5}, "a stage appears twice"),
    ("stack", {"stages": [("pruning", {"sparsity": 0.5}), ("kmeans", {"k": 4}), ("huffman", {"level": 9})]},
     "stage huffman takes no parameter 'level'"),  # the list form kept them in its config, ignored
])
def test_stacks_that_cannot_work_are_refused_naming_both_operators(name, params, match):
    with pytest.raises((ValueError, TypeError), match=match):
        operators.get(name, **params)


def test_a_stage_that_cannot_factor_the_previous_factor_names_both():
    with pytest.raises(ValueError, match="low_rank cannot compress pruning's values"):
        operators.get("pruning+low_rank", sparsity=0.5, rank=2).check(40, 30)


@pytest.mark.parametrize("name, params", [
    ("pruning+kmeans+huffman", {"sparsity": 0.9, "k": 16}),
    ("kmeans+huffman", {"k": 6}),
    ("low_rank+pruning+kmeans+huffman", {"rank": 6, "sparsity": 0.5, "k": 8}),
    ("dictionary+kmeans+huffman", {"atoms": 16, "n_nonzero": 3, "k": 8}),
])
def test_entropy_coding_is_lossless_and_counted_exactly(name, params):
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((96, 64)) * rng.exponential(1.0, (96, 1))).astype(np.float32)
    op = operators.get(name, **params)
    f = op.factor(a)
    packed, coded = op.pack(f), op.encode(f)
    assert coded, "no integer stream was coded"
    stored = sum(operators.array_bits({k: v}) for k, v in packed.items() if k not in coded)
    for c in coded.values():  # what a file holds: the tag, the payload, the table and any count
        extra = 32 if str(c["method"]).startswith("gaps") else 0
        table = 5 * np.asarray(c["lengths"]).size
        payload_bits = 8 * np.asarray(c["payload"]).size
        assert payload_bits - 7 <= c["bits"] - 4 - table - extra <= payload_bits
        stored += c["bits"]
    assert op.size_bits(f) == stored <= operators.array_bits(packed) + 4 * len(coded)
    decoded = op.decode(coded, f)
    for k in coded:
        np.testing.assert_array_equal(decoded[k], packed[k])


def test_a_sparse_mask_is_coded_below_one_bit_per_weight():
    mask = np.random.default_rng(2).random(784 * 300) < 0.08
    c = encode_stream(mask, 2)
    assert c["bits"] < 0.5 * mask.size and str(c["method"]) != "raw"
    np.testing.assert_array_equal(decode_stream(c, mask.size, 2), mask)
    skewed = np.minimum(np.random.default_rng(3).geometric(0.4, 5000) - 1, 15)
    c = encode_stream(skewed, 16)
    assert c["method"] == "huffman" and c["bits"] < 4 * skewed.size
    np.testing.assert_array_equal(decode_stream(c, skewed.size, 16), skewed)


def test_a_stack_through_keras_blends_splices_saves_densifies_and_counts_its_bits(tmp_path):
    import keras

    import mutate
    from tests.helpers import compile_, data, fit, mlp, state

    x, y = data()
    plan = {"dense_1": [("pruning", {"sparsity": 0.8}), ("kmeans", {"k": 8}), ("huffman", {})]}
    model = compile_(mutate.compress(mlp((16, 64, 48, 5)), plan, mutate.Schedule(0, 3, 1)))
    fit(model, x, y, epochs=2)
    st = state(model, "dense_1")
    assert st.compressor.label() == "pruning+kmeans+huffman" and st.current_alpha() == 0.0
    blended = model.predict(x, verbose=0)
    counted = st.compressor.size_bits(st.factor_values())
    mutate.strip(model)
    np.testing.assert_allclose(model.predict(x, verbose=0), blended, atol=1e-5)
    spliced = state(model, "dense_1")
    assert spliced.compressor.size_bits(spliced.factor_values()) == counted
    stored = sum(int(np.prod(w.shape)) * operators.dtype_bits(w.dtype) for w in spliced.stored_weights)
    assert counted < stored  # the layer holds the pre-entropy arrays; the count is Huffman's
    entry = {e.name: e for e in mutate.model_size(model).layers}["dense_1"]
    assert entry.bits == counted + 32 * 48
    store: dict = {}  # what a .keras file holds for the state: the coded streams, not the packed arrays
    spliced.save_own_variables(store)
    assert any(k.endswith(".coded") for k in store)
    assert sum(np.asarray(v).nbytes for v in store.values()) < sum(w.numpy().nbytes for w in spliced.stored_weights)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")  # decoded when loaded
    for name, var in state(loaded, "dense_1").packed.items():
        np.testing.assert_array_equal(var.numpy(), spliced.packed[name].numpy())
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    product = state(loaded, "dense_1").product_matrix()
    mutate.densify(loaded, "dense_1")
    np.testing.assert_array_equal(loaded.get_layer("dense_1").kernel.numpy(), product)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), blended, atol=1e-5)


def test_linear_kmeans_starts_evenly_spaced_and_keeps_the_extremes():
    x = np.random.default_rng(4).standard_t(3, (5000, 1)).astype(np.float32)  # heavy tails, as trained weights
    lin = operators.get("kmeans", k=16, init="linear").factor(x)
    pp = operators.get("kmeans", k=16).factor(x)
    assert lin["codebook"].max() > pp["codebook"].max() and lin["codebook"].min() < pp["codebook"].min()

    def entropy(codes):
        p = np.bincount(codes.ravel(), minlength=16) / codes.size
        return -(p[p > 0] * np.log2(p[p > 0])).sum()

    assert entropy(lin["codes"]) < entropy(pp["codes"])  # skewed code use: what Huffman shrinks
    with pytest.raises(ValueError, match="needs block_size=1"):
        operators.get("kmeans", k=4, block_size=2, init="linear")
