"""The console script: the demo end to end, bad input exits 2 with a one-line error, a search whose every
trial failed exits 1."""

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
    from pathlib import Path

    import pytest

    from mutate import demo
    from mutate.errors import BadInput

    # checked before any training (a rank over 64 failed after the dense model had trained; .txt was written)
    for kwargs, fragment in (({"rank": 100000}, "--rank 100000: the low-rank rank must be in"),
                             ({"out": Path("d.txt")}, "--out d.txt: name a .keras file")):
        with pytest.raises(BadInput, match=fragment):
            demo.run(**kwargs)


def test_a_search_whose_every_trial_failed_exits_1(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    from mutate import cli

    from mutate.search import runner as search

    failed = [("abc12_00000", "RuntimeError: boom"), ("abc12_00001", "NonFiniteLoss: training loss became nan")]
    monkeypatch.setattr(search, "run", lambda space, **kw: {"wall_s": 1.0, "compute_s": 0.0, "points": 0,
                                                            "trials": 2, "failed": failed, "slots": 2})
    space = Path(__file__).resolve().parents[1] / "search_spaces" / "digits_mlp.yaml"
    code = cli.main(["search", str(space), "--set", "model.hidden=[32,32]", "--set", f"storage={tmp_path}"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "2 of 2 trials failed" in out
    assert "  trial abc12_00000 failed: RuntimeError: boom\n" in out
    assert "  trial abc12_00001 failed: NonFiniteLoss: training loss became nan\n" in out
    assert err.strip().splitlines() == ["mutate: error: every trial failed (2 of 2); the reasons are listed above"]


def test_an_inf_weight_in_a_mutable_layer_is_refused_before_ray_starts():
    import pytest
    from pathlib import Path

    from mutate.search import driver, space as spaces

    space = spaces.load(Path(__file__).resolve().parents[1] / "search_spaces" / "digits_mlp.yaml",
                        ["model.builder=tests.faulty:nan_weight_mlp", "model.layer=logits", "model.value=-.inf",
                         "model.hidden=[32,32]"])
    with pytest.raises(spaces.SpaceError) as e:
        driver.prepare(space)
    assert str(e.value) == ("digits_mlp.yaml: model.builder: tests.faulty:nan_weight_mlp built a model whose mutable "
                            "layer 'logits' kernel holds 1 NaN/Inf value (-inf at [0, 0]); the operators cannot "
                            "factor it")


def test_verbose_goes_before_or_after_the_command():
    """A docs check: the README's "unless --verbose" was only accepted before the command, so
    `mutate search S.yaml --verbose` (and `bash scripts/dev search --verbose`) exited 2."""
    from mutate import cli

    p = cli._parser()
    for argv, want in ((["search", "s.yaml", "--verbose"], True), (["--verbose", "search", "s.yaml"], True),
                       (["search", "s.yaml"], False), (["pareto", "r", "--verbose"], True),
                       (["export", "r", "--point", "0", "--out", "m.keras", "--verbose"], True),
                       (["demo", "--verbose"], True), (["--verbose", "demo"], True)):
        assert p.parse_args(argv).verbose is want, argv
