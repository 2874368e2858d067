"""export_model: .keras, SavedModel and LiteRT files of spliced models; LiteRT keeps the packed factors."""

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
                                        ("kmeans", {"k": 4}), ("dictionary", {"atoms": 8, "n_nonzero": 2})])
def test_a_litert_file_holds_the_packed_factors_and_matches_keras(tmp_path, op, params):
    model, x, y = spliced(op, params)
    counted = mutate.model_size(model).bits // 8
    dense = mutate.export_model(mlp((16, 96, 64, 5)), tmp_path / "dense.tflite")
    out = mutate.export_model(model, tmp_path / "m.tflite", x=x, y=y)
    assert out.path.is_file() and out.bytes == out.path.stat().st_size and out.max_diff < 1e-4
    assert out.litert_accuracy == out.keras_accuracy
    graph = dense.bytes - mutate.model_size(mlp((16, 96, 64, 5))).bits // 8  # a dense file's graph overhead
    # the converter folds constant subgraphs: without the run-time anchor a pruned or clustered kernel is
    # stored as a dense float32 matrix (1.3 MB for LeNet-300-100 at 90% pruning; experiments/litert_sizes.txt)
    assert out.bytes <= 1.3 * counted + graph + 16_000, (out.bytes, counted, graph)
    assert out.bytes < dense.bytes


def test_keras_and_saved_model_formats_and_what_is_refused(tmp_path):
    model, x, _ = spliced("pruning", {"sparsity": 0.5})
    k = mutate.export_model(model, tmp_path / "m.keras")
    np.testing.assert_array_equal(keras.saving.load_model(k.path).predict(x, verbose=0), model.predict(x, verbose=0))
    s = mutate.export_model(model, tmp_path / "saved", "saved_model")
    assert (s.path / "saved_model.pb").is_file() and s.bytes > 0
    with pytest.raises(BadInput, match="must end in .tflite"):
        mutate.export_model(model, tmp_path / "m.bin", "litert")
    with pytest.raises(MetricMismatch, match="differ from Keras'"):
        mutate.export_model(model, tmp_path / "bad.tflite", x=x, tolerance=-1.0)
    assert not (tmp_path / "bad.tflite").exists() and not list(tmp_path.glob(".bad.tflite*"))  # nothing half-written
    blending = compile_(mutate.compress(mlp(), {"dense_1": ("low_rank", {"rank": 2})}, mutate.Schedule(0, 9, 3)))
    with pytest.raises(BadInput, match="dense_1 still blending"):
        mutate.export_model(blending, tmp_path / "b.tflite")
    assert not (tmp_path / "b.tflite").exists()
