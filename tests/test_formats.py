"""export_model: .keras, SavedModel and LiteRT files of spliced models; LiteRT keeps the packed factors."""

import warnings

import keras
import numpy as np
import pytest

import mutate
from mutate.errors import BadInput, MetricMismatch
from tests.helpers import compile_, data, fit, mlp


def spliced(op, params, widths=(16, 96, 64, 5)):
    x, y = data()
    model = compile_(mutate.compress(mlp(widths), {"dense_0": (op, params), "dense_1": (op, params)},
                                     mutate.Schedule(0, 1, 1)))
    fit(model, x, y)
    return mutate.strip(model), x, y


@pytest.mark.parametrize("op, params", [("low_rank", {"rank": 4}), ("pruning", {"sparsity": 0.9}),
                                        ("kmeans", {"k": 4}), ("dictionary", {"atoms": 8, "n_nonzero": 2}),
                                        ("pruning+kmeans", {"sparsity": 0.8, "k": 8}),
                                        ("simhash", {"rank": 64}), ("random_projection", {"rank": 8}),
                                        ("nmf", {"rank": 4}), ("kmeans", {"k": 8, "block_size": 4}),
                                        ("gradient_pruning", {"sparsity": 0.9})])
def test_a_litert_file_holds_the_packed_factors_and_matches_keras(tmp_path, op, params):
    model, x, y = spliced(op, params)
    counted = mutate.model_size(model).bits // 8
    dense = mutate.export_model(mlp((16, 96, 64, 5)), tmp_path / "dense.tflite")
    out = mutate.export_model(model, tmp_path / "m.tflite", x=x, y=y, arrays="packed")
    assert out.path.is_file() and out.bytes == out.path.stat().st_size and out.max_diff < 1e-4
    assert (out.arrays, out.other_bytes) == ("packed", None)
    assert out.litert_accuracy == out.keras_accuracy
    # the converter folds constant subgraphs: without the run-time anchor a pruned or clustered kernel is
    # stored as a dense float32 matrix (1.3 MB for LeNet-300-100 at 90% pruning; experiments/litert_sizes.txt).
    # The file's constant buffers are the stored arrays; the rest is the graph (ops, tensors, names).
    assert constant_bytes(out.path) <= 1.3 * counted + 1024, (constant_bytes(out.path), counted)
    assert out.bytes < dense.bytes


@pytest.mark.parametrize("widths, op, params, expect", [
    ((16, 12, 8, 5), "simhash", {"rank": 4}, "folded"),  # tiny: the hashing and unpacking graph outweighs R
    ((16, 256, 256, 5), "kmeans", {"k": 4}, "packed"),  # 2-bit codes against a float32 matrix folded
])
def test_smallest_litert_arrays_keeps_the_smaller_of_packed_and_folded(tmp_path, widths, op, params, expect):
    model, x, y = spliced(op, params, widths)
    packed = mutate.export_model(model, tmp_path / "p.tflite", arrays="packed")
    folded = mutate.export_model(model, tmp_path / "f.tflite", x=x, y=y, arrays="folded")
    assert folded.arrays == "folded" and folded.max_diff < 1e-4 and folded.litert_accuracy == folded.keras_accuracy
    best = mutate.export_model(model, tmp_path / "m.tflite", x=x, y=y)
    assert best.arrays == expect and best.bytes == min(packed.bytes, folded.bytes) == best.path.stat().st_size
    assert best.other_bytes == max(packed.bytes, folded.bytes) and best.max_diff < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.tflite", "m.tflite", "p.tflite"]  # no leftovers
    with pytest.raises(BadInput, match="arrays='dense'"):
        mutate.export_model(model, tmp_path / "n.tflite", arrays="dense")


def test_smallest_falls_back_to_the_other_form_when_the_smaller_one_fails_its_check(tmp_path, monkeypatch):
    """A form the converter folded wrongly was refused although the other form was right."""
    from mutate.results import formats

    model, x, y = spliced("simhash", {"rank": 4}, (16, 12, 8, 5))  # folded is the smaller file here
    check = formats._check

    def folded_wrong(model, blob, report, *args):
        if report.arrays == "folded":
            raise MetricMismatch(f"{report.path}: the LiteRT outputs differ (folded)")
        return check(model, blob, report, *args)

    monkeypatch.setattr(formats, "_check", folded_wrong)
    out = mutate.export_model(model, tmp_path / "m.tflite", x=x, y=y)
    assert out.arrays == "packed" and out.other_bytes < out.bytes == out.path.stat().st_size
    with pytest.raises(MetricMismatch, match="differ"):
        mutate.export_model(model, tmp_path / "f.tflite", x=x, y=y, arrays="folded")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite"]


def test_a_dictionary_kmeans_stack_converts_folded_to_the_same_outputs(tmp_path):
    """The converter crashed the process (SIGSEGV) folding a stacked dictionary's Dense product (a gather, then
    a sum over the nonzeros), and folded an Embedding's into outputs 0.07 away from Keras'."""
    model, x, y = spliced("dictionary+kmeans", {"atoms": 8, "n_nonzero": 2, "k": 4})
    folded = mutate.export_model(model, tmp_path / "f.tflite", x=x, y=y, arrays="folded")
    assert folded.max_diff < 1e-4 and folded.litert_accuracy == folded.keras_accuracy
    ids = np.random.default_rng(0).integers(0, 60, (32, 5)).astype("int32")
    labels = np.arange(32) % 5
    inputs = keras.Input((5,), dtype="int32")
    hidden = keras.layers.Flatten()(keras.layers.Embedding(60, 24, name="emb")(inputs))
    emb = compile_(mutate.compress(keras.Model(inputs, keras.layers.Dense(5, name="out")(hidden)),
                                   {"emb": [("dictionary", {"atoms": 4, "n_nonzero": 2}), ("kmeans", {"k": 4})]},
                                   mutate.Schedule(0, 1, 1)))
    fit(emb, ids, labels)
    mutate.strip(emb)
    for arrays in ("folded", "packed"):
        out = mutate.export_model(emb, tmp_path / f"emb_{arrays}.tflite", x=ids, y=labels, arrays=arrays)
        assert out.max_diff < 1e-4, (arrays, out.max_diff)


def test_a_loaded_subclassed_model_exports_and_an_rnn_is_unrolled_for_litert_or_refused(tmp_path):
    from tests.test_kinds import net, seqs

    x, _ = seqs()
    model = net()
    mutate.compress(model, {"head": ("kmeans", {"k": 4})}, mutate.Schedule(0, 1, 1))
    compile_(model)
    model.fit(x, np.zeros(len(x), "int32"), batch_size=8, epochs=1, verbose=0,
              callbacks=[mutate.CompressionCallback()])
    mutate.strip(model)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False)  # never called: Keras' export refuses
    out = mutate.export_model(loaded, tmp_path / "m.tflite", x=x)
    assert out.max_diff < 1e-4

    # Keras' RNN loop converts to Flex ops: with a fixed number of timesteps it is unrolled for the conversion
    # (builtin ops, same outputs; the layers are not left unrolled); with a variable one it is refused
    def rnn(steps):
        inp = keras.Input((steps, 4))
        seq = keras.layers.Bidirectional(keras.layers.LSTM(3, return_sequences=True), name="bi")(inp)
        return keras.Model(inp, keras.layers.Dense(2)(keras.layers.GRU(3, name="gru")(seq)))

    fixed, xs = rnn(6), np.random.default_rng(0).normal(size=(8, 6, 4)).astype("float32")
    out = mutate.export_model(fixed, tmp_path / "f.tflite", x=xs, arrays="packed")  # (one form: half the time)
    assert out.max_diff < 1e-4 and out.bytes == (tmp_path / "f.tflite").stat().st_size
    assert not any(layer.unroll for layer in fixed._flatten_layers() if isinstance(layer, keras.layers.RNN))
    with pytest.raises(BadInput, match=r"r.tflite: LiteRT would need TensorFlow's select ops \(Flex\) for \w+.*"
                                       r"unrolled for LiteRT when its number of timesteps is fixed"):
        mutate.export_model(rnn(None), tmp_path / "r.tflite", arrays="packed")
    assert not (tmp_path / "r.tflite").exists()


def constant_bytes(path) -> int:
    """Bytes of a .tflite file's read-only constant buffers (TensorFlow's model analyzer)."""
    import contextlib
    import io
    import re

    import tensorflow as tf

    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        tf.lite.experimental.Analyzer.analyze(model_path=str(path))
    return sum(int(m.group(1)) for m in re.finditer(r"RO (\d+) bytes", text.getvalue()))


def test_keras_and_saved_model_formats_and_what_is_refused(tmp_path):
    model, x, y = spliced("pruning", {"sparsity": 0.5})
    k = mutate.export_model(model, tmp_path / "m.keras")
    np.testing.assert_array_equal(keras.saving.load_model(k.path).predict(x, verbose=0), model.predict(x, verbose=0))
    # compiled only to evaluate (as `mutate export` does): the unbuilt optimizer is not saved, so the file loads
    # uncompiled without Keras' "Skipping variable loading for optimizer" warning; the model stays compiled
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.evaluate(x, y, verbose=0)
    mutate.export_model(model, tmp_path / "e.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert not keras.saving.load_model(tmp_path / "e.keras").compiled
    assert model.compiled and model.evaluate(x, y, verbose=0)
    # a trained optimizer is kept, to resume training from the file
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, verbose=0)
    mutate.export_model(model, tmp_path / "t.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert keras.saving.load_model(tmp_path / "t.keras").optimizer.iterations.numpy() == model.optimizer.iterations.numpy()
    s = mutate.export_model(model, tmp_path / "saved", "saved_model")
    assert (s.path / "saved_model.pb").is_file() and s.bytes > 0
    assert mutate.export_model(model, tmp_path / "saved", "saved_model").bytes > 0  # a SavedModel is replaced
    # any other folder is never replaced (as `export --force --out .` once deleted the working directory)
    (tmp_path / "mine" / "sub").mkdir(parents=True)
    (tmp_path / "mine" / "keep.txt").write_text("keep")
    (tmp_path / "dir.keras").mkdir()
    for folder, fmt in [(tmp_path / "mine", "saved_model"), (tmp_path / "dir.keras", None)]:
        with pytest.raises(BadInput, match="is a folder.*refusing to replace it"):
            mutate.export_model(model, folder, fmt)
    assert (tmp_path / "mine" / "keep.txt").read_text() == "keep" and (tmp_path / "dir.keras").is_dir()
    with pytest.raises(BadInput, match="must end in .tflite"):
        mutate.export_model(model, tmp_path / "m.bin", "litert")
    with pytest.raises(MetricMismatch, match="differ from Keras'"):
        mutate.export_model(model, tmp_path / "bad.tflite", x=x, tolerance=-1.0)
    assert not (tmp_path / "bad.tflite").exists() and not list(tmp_path.glob(".bad.tflite*"))  # nothing half-written
    # found by a bug hunt: a file without a suffix was replaced by a SavedModel folder; a .keras-named folder was
    # accepted for format="saved_model"; a wrong-length y and an empty x failed inside NumPy and Keras
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(BadInput, match="afile: is a file, and a SavedModel is a folder; refusing to replace it"):
        mutate.export_model(model, tmp_path / "afile")
    assert (tmp_path / "afile").read_text() == "mine"
    with pytest.raises(BadInput, match="a SavedModel is a folder; name it without the .keras suffix"):
        mutate.export_model(model, tmp_path / "sm.keras", "saved_model")
    with pytest.raises(BadInput, match="y has 5 labels for 8 rows of x"):
        mutate.export_model(model, tmp_path / "y.tflite", x=x[:8], y=y[:5])
    with pytest.raises(BadInput, match="x has no rows to check the file on"):
        mutate.export_model(model, tmp_path / "e.tflite", x=x[:0])
    with pytest.raises(BadInput, match=r"x has shape \(8, 15\); the model takes \(rows, 16\)"):
        mutate.export_model(model, tmp_path / "s.tflite", x=x[:8, :15])
    with pytest.raises(BadInput, match=r"x has shape \(128,\); the model takes \(rows, 16\)"):
        mutate.export_model(model, tmp_path / "f.tflite", x=x[:8].ravel())
    assert not list(tmp_path.glob("*.tflite")) and not (tmp_path / "sm.keras").exists()
    blending = compile_(mutate.compress(mlp(), {"dense_1": ("low_rank", {"rank": 2})}, mutate.Schedule(0, 9, 3)))
    with pytest.raises(BadInput, match="dense_1 still blending"):
        mutate.export_model(blending, tmp_path / "b.tflite")
    assert not (tmp_path / "b.tflite").exists()


def test_an_op_litert_cannot_convert_is_named_with_its_layer_and_nothing_is_written(tmp_path):
    import tensorflow as tf

    class Bessel(keras.layers.Layer):
        def call(self, x):
            return tf.math.bessel_i1e(x)

    inp = keras.Input((8,))
    model = keras.Model(inp, Bessel(name="odd_layer")(keras.layers.Dense(8, name="fc")(inp)))
    with pytest.raises(BadInput, match=r"cannot convert op BesselI1e .* in layer 'odd_layer'; nothing written"):
        mutate.export_model(model, tmp_path / "m.tflite")
    assert not list(tmp_path.iterdir())


def test_each_format_exports_on_the_backends_that_can_write_it(tmp_path):
    """Run on TensorFlow here and on JAX in tests/test_backends.py's child pytest: a .keras file carries no
    evaluation's optimizer on either (JAX builds its variables in `evaluate`: the file was 30% larger); a
    SavedModel of packed (pruning, k-means) layers traces on both (JAX once failed on the anchor's range);
    LiteRT is refused on JAX in one line naming the backend that writes it."""
    model, x, y = spliced("pruning+kmeans", {"sparsity": 0.8, "k": 8})
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.evaluate(x, y, verbose=0)
    k = mutate.export_model(model, tmp_path / "m.keras")
    import zipfile

    assert not [n for n in zipfile.ZipFile(k.path).namelist() if "optimizer" in n]
    np.testing.assert_allclose(keras.saving.load_model(k.path).predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
    s = mutate.export_model(model, tmp_path / "saved", "saved_model")
    assert (s.path / "saved_model.pb").is_file()
    (tmp_path / "a_file").write_text("")
    with pytest.raises(BadInput, match=r"a_file/m.keras: cannot write there \(.*a_file is a file, not a folder\)"):
        mutate.export_model(model, tmp_path / "a_file" / "m.keras")  # was an internal error, then "File exists"
    from mutate.results import formats

    def failing(*args, **kwargs):
        raise RuntimeError("converter failed")

    with pytest.MonkeyPatch.context() as m:  # a failed export left the folders it made (a bug hunt)
        m.setattr(formats, "_write_staged", failing)
        with pytest.raises(RuntimeError, match="converter failed"):
            mutate.export_model(model, tmp_path / "new" / "deeper" / "m.keras")
    assert not (tmp_path / "new").exists()
    if keras.backend.backend() == "tensorflow":
        assert mutate.export_model(model, tmp_path / "m.tflite", x=x).max_diff < 1e-4
    else:
        with pytest.raises(BadInput, match=r"m.tflite: a litert export needs KERAS_BACKEND=tensorflow; this process "
                                           r"runs Keras on jax"):
            mutate.export_model(model, tmp_path / "m.tflite")
        assert not (tmp_path / "m.tflite").exists()
    tf = pytest.importorskip("tensorflow")
    for op, params in (("simhash", {"rank": 64}), ("random_projection", {"rank": 8})):
        # factors generated from a hashed range off the run-time zero: JAX's export once failed on its arange
        hashed, xh, _ = spliced(op, params)
        out = mutate.export_model(hashed, tmp_path / op, "saved_model")
        loaded = tf.saved_model.load(str(out.path))  # held: its variables die with the object
        np.testing.assert_allclose(np.asarray(loaded.serve(xh)), hashed.predict(xh, verbose=0), atol=1e-4)


def test_litert_delegate_notice_is_dropped_and_other_native_output_passes(capfd):
    """LiteRT's C++ printed "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." into `mutate export`'s
    output; what else a native library writes on descriptor 2 meanwhile must still show."""
    import os

    from mutate.results.formats import quiet_delegate_notice

    with quiet_delegate_notice():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"ERROR: something real\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "ERROR: something real\nafter\n"
