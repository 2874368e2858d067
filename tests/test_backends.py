"""The operator on TensorFlow, JAX and PyTorch: the same schedule, splice, save/load and numbers (within float
tolerance), including an update that falls mid-epoch (JAX's fit trains on a copy of the state). PyTorch runs
when torch is installed (opt-in: ``bash scripts/dev test --backend torch`` installs the CPU wheel)."""

import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ["tensorflow", "jax"]


JAX_CASES = [("low_rank", 3, 1, 5), ("pruning", 0, 1, 5), ("kmeans", 7, 1, 5), ("low_rank", 4, 4, 4),
             ("kmeans", 7, 4, 5), ("low_rank", 3, 4, 5), ("pruning", 2, 4, 5)]
"""(operator, begin, steps_per_execution, frequency). With steps_per_execution > 1: low_rank's refreshes (every 4
steps from 4) on execution boundaries; low_rank's and pruning's refreshes inside executions of 4 (steps 8, 13, 18;
7, 12, 17), which both backends run in the training step at their exact step; k-means' one factoring at step 7
inside an execution of 4 (host work: both backends apply it at step 4)."""
TORCH_CASES = [c for c in JAX_CASES if c[2] == 1]  # Keras' PyTorch trainer takes only steps_per_execution=1


@functools.lru_cache(maxsize=None)
def results(backend: str, cases: tuple) -> dict:
    """Every case under one backend, in one child process (one import of the backend)."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    args = [":".join(str(v) for v in c) for c in cases]
    res = subprocess.run([sys.executable, "-m", "tests.backend_check", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(line) for line in res.stdout.strip().splitlines() if line.startswith("{")]
    return {tuple(r["case"].split(":")[:1]) + tuple(int(v) for v in r["case"].split(":")[1:]): r for r in rows}


def alike(a: dict, b: dict, backends: tuple) -> None:
    for name, o in zip(backends, (a, b)):
        assert o["backend"] == name
        assert o["step"] == 32 and o["alpha"] == 0.0, o  # every update took effect, alpha exactly 0
        assert o["roundtrip"] == 0.0
        assert o["mid_roundtrip"] <= 1e-6, o["mid_roundtrip"]  # saved mid-blend, loaded: the same outputs
        assert o["resumed"] <= 1e-5, o["resumed"]  # and trained on: the same as the model that was never saved
        assert o["dtype_truncated"] == [], o["dtype_truncated"]  # JAX without x64 once warned on the int64 step
        # PyTorch's parameters() after strip kept the dropped kernel A and lacked the packed arrays
        assert o.get("torch_params_stale", 0) == 0 and o.get("torch_params_missing", 0) == 0, o
    assert a["layers"] == b["layers"] and a["bytes"] == b["bytes"]
    np.testing.assert_allclose(np.array(a["pred"]), np.array(b["pred"]), atol=1e-4, rtol=1e-4)  # seen: < 1e-6


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed (pip install mutate[jax])")
@pytest.mark.parametrize("case", JAX_CASES, ids=lambda c: "-".join(map(str, c)))
def test_tensorflow_and_jax_blend_splice_and_round_trip_alike(case):
    cases = tuple(JAX_CASES)
    alike(results("tensorflow", cases)[case], results("jax", cases)[case], ("tensorflow", "jax"))


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch is not installed (opt-in: bash scripts/dev test --backend torch)")
@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda c: "-".join(map(str, c)))
def test_tensorflow_and_torch_blend_splice_and_round_trip_alike(case):
    cases = tuple(JAX_CASES)  # TensorFlow's child is shared with the JAX comparison
    alike(results("tensorflow", cases)[case], results("torch", tuple(TORCH_CASES))[case], ("tensorflow", "torch"))


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed (pip install mutate[jax])")
def test_gradient_pruning_names_the_backend_it_cannot_run_on():
    code = ("import keras, mutate\n"
            "m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, name='d')])\n"
            "try:\n"
            "    mutate.compress(m, {'d': ('gradient_pruning', {'sparsity': 0.5})}, mutate.Schedule(0, 10, 5))\n"
            "except ValueError as e:\n"
            "    print('refused:', e)\n")
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert "refused: operator 'gradient_pruning' accumulates its saliency with a TensorFlow gradient tap, which " \
           "the 'jax' backend does not run" in res.stdout, res.stdout + res.stderr[-2000:]


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed (pip install mutate[jax])")
def test_a_jax_search_driver_never_imports_tensorflow(tmp_path):
    """The driver (validation, sensitivity table, Ray, test set, report) runs with TensorFlow refused; the Ray
    workers are not covered by this test (they may import it when it is installed)."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    args = ["search", str(ROOT / "search_spaces" / "digits_mlp.yaml"), "--set", f"storage={tmp_path}",
            "--set", "training.steps=100", "--set", "search.population=1", "--set", "mutations.warmup_steps=50",
            "--set", "mutations.window=20", "--set", "model.hidden=[32]", "--set", "budget.ratio=0.6"]
    res = subprocess.run([sys.executable, "-m", "tests.no_tensorflow", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "on the front chosen on validation" in res.stdout
    assert json.loads((tmp_path / "digits_mlp" / "space.json").read_text())["backend"] == "jax"
    rows = [json.loads(line) for line in (tmp_path / "digits_mlp" / "points.jsonl").read_text().splitlines()]
    assert rows and {r["backend"] for r in rows} == {"jax"}


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed (pip install mutate[jax])")
def test_a_multi_device_jax_trial_runs_under_a_data_parallel_mesh_like_one_device():
    """Two host CPU devices stand in for GPUs or TPU cores: Keras' DataParallel, steps_per_execution 4."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    res = subprocess.run([sys.executable, "-m", "tests.jax_mesh_check"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    par, one = out["parallel"], out["single"]
    assert par["devices"] == 2 and (par["step"], par["alpha"]) == (one["step"], one["alpha"]) == (24, 0.0)
    assert par["roundtrip"] == 0.0
    np.testing.assert_allclose(np.array(par["pred"]), np.array(one["pred"]), atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed (pip install mutate[jax])")
def test_the_keras_conformance_suites_pass_on_jax():
    """tests/test_operator_layers.py (every built-in operator on Dense, Conv2D, EinsumDense, Embedding, LSTM and
    DepthwiseConv2D kernels: blend, splice, size, save/load), a stack's (pruning -> kmeans), the hashed
    random matrix's bit-exactness and subclassed models (RNNs in a call without `training`, a save mid-blend
    resumed, nested Sequential and RNN-wrapper layers reloaded) and the formats JAX writes (.keras, SavedModel;
LiteRT refused in one line) under KERAS_BACKEND=jax, in a child pytest."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_operator_layers.py",
                          "tests/test_stack.py::TestPruneKMeansLayers", "tests/test_hash.py",
                          "tests/test_kinds.py::test_rnn_layers_count_their_batches_in_a_model_whose_call_takes_no_training",
                          "tests/test_kinds.py::test_a_layer_after_an_uncompressed_dropout_or_rnn_counts_its_batches",
                          "tests/test_kinds.py::test_a_subclassed_model_saved_mid_blend_resumes_training_exactly",
                          "tests/test_kinds.py::test_fit_without_the_callback_is_refused_and_inner_predictions_count_"
                          "nothing",
                          "tests/test_kinds.py::test_a_layer_called_several_times_a_batch_counts_the_batch_once_and_"
                          "one_in_an_rnn_cell_is_refused",
                          "tests/test_kinds.py::test_only_fits_own_steps_count_even_when_fit_is_interrupted_or_its_"
                          "callbacks_reused",
                          "tests/test_layers.py::test_a_dataset_of_unknown_length_factors_at_the_step_a_known_one_does",
                          "tests/test_layers.py::test_an_epochs_short_last_execution_does_not_bring_the_next_update_"
                          "forward",
                          "tests/test_kinds.py::test_kernels_inside_a_nested_sequential_and_rnn_wrappers_reload_and_"
                          "keep_their_addresses",
                          "tests/test_formats.py::test_each_format_exports_on_the_backends_that_can_write_it"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:]
    assert " passed" in res.stdout and "failed" not in res.stdout


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch is not installed (opt-in: bash scripts/dev test --backend torch)")
def test_the_layer_kinds_suite_passes_on_torch():
    """tests/test_kinds.py (subclassed and nested models, RNNs, weights files, mixed precision: PyTorch's
    assign once lost alpha under it) under KERAS_BACKEND=torch, in a child pytest."""
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_kinds.py"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)  # 9.5 min on 2 busy cores
    assert res.returncode == 0, res.stdout[-3000:]
    assert " passed" in res.stdout and "failed" not in res.stdout


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed (pip install mutate[jax])")
def test_jax_refresh_shifts_fold_into_the_factors_and_round_trip_under_bfloat16():
    """On JAX an in-graph refresh moves a trainable factor through a non-trainable shift. AdamW's weight decay
    shrank the factor alone, so after the blend the sum decayed toward the shift for good: the shifts are folded
    into the factors once the last refresh has run. Under mixed_bfloat16 the sum of two rounded halves was not
    what a saved file (the sum) computed once loaded (0.0039)."""
    out = {}
    for backend in ("tensorflow", "jax"):
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
        res = subprocess.run([sys.executable, "-m", "tests.jax_shift_check"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        out[backend] = json.loads(res.stdout.strip().splitlines()[-1])
    tf_, jax_ = out["tensorflow"], out["jax"]
    assert jax_["shifts"] == 0.0  # folded once the blend's last refresh ran
    # (the predictions are not compared: during the blend the shift is not decayed between refreshes, and 30
    # epochs amplify that into 0.003-0.27 on these two seeds; README, JAX)
    assert tf_["bf16_roundtrip"] == 0.0 and jax_["bf16_roundtrip"] == 0.0
