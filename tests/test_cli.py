"""The console script: the demo end to end, and bad input exits 2 with a one-line error."""

import subprocess
import sys

import keras
import numpy as np

import mutate


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mutate.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
                                                "PATH": "/usr/bin:/bin"})


def test_demo_compresses_and_saves_a_spliced_model(tmp_path):
    out = tmp_path / "demo.keras"
    proc = run_cli("demo", "--epochs", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "fewer bits" in proc.stdout and "compressed" in proc.stdout
    model = keras.saving.load_model(out)
    size = mutate.model_size(model)
    assert {entry.state for entry in size.layers} == {"spliced"}
    assert size.ratio > 5
    assert model.predict(np.zeros((2, 64), np.float32), verbose=0).shape == (2, 10)


def test_demo_bad_input_is_one_line_and_exit_2():
    proc = run_cli("demo", "--rank", "0")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("mutate: error:") and "rank=0" in lines[-1]
    assert "Traceback" not in proc.stderr
