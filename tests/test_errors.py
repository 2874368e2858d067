"""Bad input (`mutate.errors.BadInput`) exits 2 with ``mutate: error:``; anything else is an internal error:
exit 1, one line ``mutate: internal error:``, the traceback saved in the run directory when there is one.

In-process through `mutate.cli.main`, with no training and no Ray.
"""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

import mutate
from mutate import cli, commands

from mutate.results import report, runs

from mutate.search import space as spaces
from mutate.errors import BadInput, MetricMismatch, MissingInput, OutputExists

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "digits_mlp.yaml"
HINT = "(run with --verbose for the traceback)"


@pytest.fixture(autouse=True)
def no_tf_import(monkeypatch):
    monkeypatch.setattr(cli, "quiet_tensorflow_import", lambda verbose=False: None)


@pytest.fixture
def run_dir(tmp_path):
    """A run directory as `mutate search` makes it, with two points whose checkpoints hold no model."""
    d = runs.prepare_run_dir(spaces.load(SPACE, [f"storage={tmp_path / 'runs'}"]), classes=10)
    for i, (size, acc) in enumerate([(1000, 0.95), (200, 0.90)]):
        runs.append_point(d, {"trial": "t0", "step": 50 * (i + 1), "bytes": size, "ratio": size / 1000,
                              "val_accuracy": acc, "genome": [], "genome_summary": "dense", "checkpoint": f"ckpt/{i}"})
    (d / "tuner.pkl").write_bytes(b"a stand-in for Ray Tune's pickled tuner")
    (d / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": [["t0", "{}"]]}))
    return d


def not_a_model(data, **kwargs):
    return "a string"


def raiser(exc):
    def fail(*args, **kwargs):
        raise exc
    return fail


def stderr_lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_the_error_classes():
    assert issubclass(spaces.SpaceError, BadInput) and issubclass(BadInput, ValueError)
    assert issubclass(MissingInput, FileNotFoundError) and issubclass(OutputExists, FileExistsError)
    assert issubclass(MissingInput, BadInput) and issubclass(OutputExists, BadInput)
    assert issubclass(MetricMismatch, ValueError) and not issubclass(MetricMismatch, BadInput)


def test_an_internal_error_is_one_line_exit_1_without_a_traceback(monkeypatch, capsys):
    monkeypatch.setattr(commands, "pareto", raiser(ValueError("boom\nwith a second line")))
    assert cli.main(["pareto", "somewhere"]) == 1
    assert stderr_lines(capsys) == [f"mutate: internal error: ValueError: boom [...] {HINT}"]


def test_a_ctrl_c_that_tensorflow_rewrapped_is_an_interrupt_not_an_internal_error(run_dir, monkeypatch, capsys):
    """A bug hunt's Ctrl-C during `mutate export`'s evaluation came back from TensorFlow's C++ as a
    RuntimeError: exit 1, "internal error", a traceback file in the user's run. It is an interrupt."""
    wrapped = RuntimeError("pybind11::error_already_set: MISMATCH of original and normalized active exception "
                           "types: ORIGINAL KeyboardInterrupt REPLACED BY KeyboardInterrupt: <EMPTY MESSAGE>")
    wrapped.mutate_run_dir = run_dir
    monkeypatch.setattr(commands, "export", raiser(wrapped))
    assert cli.main(["export", str(run_dir), "--point", "0", "--out", str(run_dir / "m.keras")]) == 130
    assert stderr_lines(capsys) == ["mutate: interrupted"]
    assert not (run_dir / cli.INTERNAL_ERROR_FILE).exists()
    chained = ValueError("while tracing")
    chained.__context__ = KeyboardInterrupt()
    monkeypatch.setattr(commands, "pareto", raiser(chained))
    assert cli.main(["pareto", str(run_dir)]) == 130
    monkeypatch.setattr(commands, "pareto", raiser(RuntimeError("a real bug naming KeyboardInterrupt")))
    assert cli.main(["pareto", "somewhere"]) == 1  # only TensorFlow's wrapper, or a chained interrupt
    # a search wrapped-interrupted before any report removes its folder as a plain Ctrl-C does (a review)
    monkeypatch.setattr(commands, "_run", raiser(wrapped))
    storage = run_dir.parent / "fresh"
    assert cli.main(["search", str(SPACE), "--set", f"storage={storage}"]) == 130
    assert not storage.exists()


def test_an_export_path_that_cannot_be_written_is_refused_before_the_checkpoint_loads(run_dir, tmp_path,
                                                                                        monkeypatch, capsys):
    """A bug hunt's `--out` under a file or on a plain folder was refused only after the model was loaded,
    spliced and evaluated, and under a file it said "(File exists)"."""
    from mutate.results import export as exporter

    monkeypatch.setattr(exporter, "load_checkpoint", raiser(AssertionError("loaded")))
    (tmp_path / "afile").write_text("")
    (tmp_path / "folder").mkdir()
    for out, said in ((tmp_path / "afile" / "m.keras", "cannot write there (.*afile is a file, not a folder)"),
                      (tmp_path / "folder", "is a folder that is not a SavedModel; refusing to replace it")):
        assert cli.main(["export", str(run_dir), "--point", "0", "--out", str(out), "--force"]) == 2
        [line] = stderr_lines(capsys)
        assert re.search(said, line), line


def test_an_internal_error_in_a_run_saves_its_traceback_there(run_dir, monkeypatch, capsys):
    monkeypatch.setattr(report, "pareto", raiser(KeyError("accuracy")))
    assert cli.main(["pareto", str(run_dir)]) == 1
    saved = run_dir / cli.INTERNAL_ERROR_FILE
    assert stderr_lines(capsys) == [f"mutate: internal error: KeyError: 'accuracy' (traceback in {saved})"]
    text = saved.read_text()
    assert text.startswith("Traceback") and "KeyError: 'accuracy'" in text and "def fail" not in text
    assert not list(run_dir.glob("*.tmp"))


def test_several_runs_name_no_run_dir(run_dir, monkeypatch, capsys):
    monkeypatch.setattr(report, "pareto", raiser(KeyError("accuracy")))
    assert cli.main(["pareto", str(run_dir), str(run_dir)]) == 1
    assert stderr_lines(capsys) == [f"mutate: internal error: KeyError: 'accuracy' {HINT}"]
    assert not (run_dir / cli.INTERNAL_ERROR_FILE).exists()


def test_resume_saves_the_traceback_in_the_resumed_run(run_dir, monkeypatch, capsys):
    from mutate.search import driver

    monkeypatch.setattr(driver, "prepare", raiser(RuntimeError("bug")))
    assert cli.main(["search", "--resume", str(run_dir)]) == 1
    saved = run_dir / cli.INTERNAL_ERROR_FILE
    assert stderr_lines(capsys) == [f"mutate: internal error: RuntimeError: bug (traceback in {saved})"]
    assert "RuntimeError: bug" in saved.read_text()


def test_a_search_stopped_by_its_time_budget_is_not_resumed_in_a_loop(tmp_path, capsys):
    """--resume of a run that search.time_budget_s stopped trained nothing (Tune restores the spent budget) and
    said "interrupted ... --resume continues it", exit 130, every time."""
    d = runs.prepare_run_dir(spaces.load(SPACE, [f"storage={tmp_path / 'runs'}", "search.time_budget_s=25"]))
    runs.write_timing(d, wall_s=27.0, compute_s=40.0, slots=2)
    assert cli.main(["search", "--resume", str(d)]) == 2
    assert stderr_lines(capsys) == [
        f"mutate: error: {d}: this search stopped at its time budget (search.time_budget_s: 25 s, 27 s spent); Ray "
        "Tune restores the spent budget, so a resume would train nothing: start a new search with a larger "
        "search.time_budget_s"]


def test_a_damaged_ray_tune_state_refuses_the_resume_naming_the_file(run_dir, capsys):
    """Found by a bug hunt: an experiment_state file cut short made Tune restore a search of fewer trials (each
    failing with KeyError 'run_dir'), which the resume then finished (test set, pruning): the other trial was
    gone. A missing or empty tuner.pkl was an internal error."""
    state = next(run_dir.glob("experiment_state-*.json"))
    good = state.read_text()
    state.write_text(good[:20])
    assert cli.main(["search", "--resume", str(run_dir)]) == 2
    lines = stderr_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"mutate: error: {state}: damaged, not JSON (")
    state.write_text(json.dumps({"runner_data": {}}))
    assert cli.main(["search", "--resume", str(run_dir)]) == 2
    assert stderr_lines(capsys)[0].startswith(f"mutate: error: {state}: damaged, no trial_data")
    state.write_text(good)
    (run_dir / "tuner.pkl").write_bytes(b"")
    assert cli.main(["search", "--resume", str(run_dir)]) == 2
    assert stderr_lines(capsys)[0].startswith(f"mutate: error: {run_dir / 'tuner.pkl'}: empty")
    # the record of the time spent: refused before a session trains, not after it (as it was)
    for text, says in (('{"spent_s": ', "damaged, not JSON"), ('{"spent_s": "abc"}', "damaged, spent_s: 'abc' is not")):
        (run_dir / "spent.txt").write_text(text)
        assert cli.main(["search", "--resume", str(run_dir)]) == 2
        assert stderr_lines(capsys)[0].startswith(f"mutate: error: {run_dir / 'spent.txt'}: {says}")
    assert not (run_dir / "timing.json").exists() and not (run_dir / cli.INTERNAL_ERROR_FILE).exists()


def test_a_finished_search_is_not_resumed_and_a_file_named_like_a_run_is_taken(run_dir, capsys):
    """Found by a bug hunt: `--resume` of a finished run restored nothing to train and overwrote its timing.json
    with that empty session's (wall 70 s -> 12 s, compute 39 s -> 0); a failed or time-stopped one still
    resumes (Tune retries errored trials). A file where the run folder would go was an internal error
    (NotADirectoryError); it is taken like a folder, and the run goes to NAME-2."""
    runs.write_timing(run_dir, wall_s=70.0, compute_s=39.0, slots=2, failed=0, unfinished=0)
    before = (run_dir / "timing.json").read_text()
    assert cli.main(["search", "--resume", str(run_dir)]) == 2
    assert stderr_lines(capsys) == [f"mutate: error: {run_dir}: this search finished (its timing.json records no "
                                    f"failed or unfinished trial): nothing to resume; `mutate pareto {run_dir}` "
                                    "shows its front"]
    assert (run_dir / "timing.json").read_text() == before
    storage = run_dir.parent.parent / "other"
    storage.mkdir()
    (storage / "digits_mlp").write_text("a file, not a run")
    d = runs.prepare_run_dir(spaces.load(SPACE, [f"storage={storage}"]))
    assert d.name == "digits_mlp-2" and (storage / "digits_mlp").read_text() == "a file, not a run"


def test_a_failed_trials_reason_is_its_message_not_tensorflows_node_line():
    """Found by a bug hunt: a trial's one-line reason was TensorFlow's trailing `[[{{node ...}}]] [Op:...]`."""
    from mutate.search.runner import reason

    error = ("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
             "tensorflow.python.framework.errors_impl.InvalidArgumentError: Graph execution error:\n\n"
             "Self-adjoint eigen decomposition was not successful.\n"
             "\t [[{{node mlp_1/dense_2_1/cond/SelfAdjointEigV2}}]] [Op:__inference_one_step_on_data_1234]")
    assert reason(error) == "Self-adjoint eigen decomposition was not successful."
    assert reason("ray.exceptions.RayTaskError: boom") == "RayTaskError: boom"
    # a message of several lines: Keras' advice ends in example code, and the reason read "return config"
    keras_advice = ("Traceback (most recent call last):\n  File \"t.py\", line 3\n"
                    "TypeError: <class 'usermods.NoConfig'> could not be deserialized properly. Please ensure that\n"
                    "def get_config(self):\n    config = super().get_config()\n    return config")
    assert reason(keras_advice).startswith("TypeError: <class 'usermods.NoConfig'> could not be deserialized")
    assert reason("a last line without a header") == "a last line without a header"


def test_a_run_resumes_only_in_the_folder_it_was_started_in(run_dir, tmp_path, capsys):
    """A copy resumed ran its trials into the original folder (Tune's state and the trials' configs hold its
    path): 12 new rows there, the copy's front and pruning run on stale rows, exit 0; a moved run failed
    naming a folder that no longer exists."""
    import shutil

    for how in (shutil.copytree, shutil.move):
        other = tmp_path / f"elsewhere_{how.__name__}"
        how(run_dir, other)
        assert cli.main(["search", "--resume", str(other)]) == 2
        assert stderr_lines(capsys) == [
            f"mutate: error: {other}: this run was started in {run_dir}, which Ray Tune's state and its trials "
            "name: a resume would write there. Resume it in that folder (move it back); `mutate pareto` and "
            "`mutate export` read a run anywhere."]
    assert runs.started_in(other) == run_dir and not (other / cli.INTERNAL_ERROR_FILE).exists()


def test_damaged_run_files_are_one_line_naming_the_file(run_dir, capsys):
    """Each was an internal error (JSONDecodeError, TypeError, KeyError: 'bytes') of `mutate pareto`."""
    good = (run_dir / "space.json").read_text()
    with open(run_dir / "points.jsonl", "a") as f:
        f.write("null\n")  # JSON, not a row: skipped as a torn line is
    assert cli.main(["pareto", str(run_dir)]) == 0
    capsys.readouterr()
    cases = [("space.json", good[: len(good) // 2], r"space.json: damaged, not JSON \("),
             ("space.json", "[]", r"space.json: damaged, expected a JSON object, got list"),
             ("test_metrics.json", "{oops", r"test_metrics.json: damaged, not JSON"),
             ("sensitivity.json", '{"entries": 3}', r"sensitivity.json: damaged, not a sensitivity table"),
             ("points.jsonl", '{"trial": "t", "step": 1, "val_accuracy": 0.5}\n', r"points.jsonl: row 1 has no bytes, "
                                                                                  r"ratio: damaged"),
             # a second bug hunt: wrong types were internal errors (int(None), float("abc"), 1 / 0)
             ("points.jsonl", '{"trial": "t", "step": 1, "bytes": null, "ratio": 0.1, "val_accuracy": 0.5}\n',
              r"points.jsonl: row 1: bytes: None is not a number: damaged"),
             ("points.jsonl", '{"trial": "t", "step": 1, "bytes": 9, "ratio": 0.1, "val_accuracy": "abc"}\n',
              r"points.jsonl: row 1: val_accuracy: 'abc' is not a number: damaged"),
             ("test_metrics.json", '{"ckpt/0": "high"}', r"test_metrics.json: damaged, ckpt/0: 'high' is not a number"),
             ("space.json", good.replace('"classes": 10', '"classes": 0'), r"space.json: damaged, classes: 0 is not"),
             ("space.json", good.replace('"classes": 10', '"classes": "ten"'), r"space.json: damaged, classes: 'ten'"),
             ("space.json", json.dumps({**json.loads(good), "space": {**json.loads(good)["space"], "budget": [1]}}),
              r"space.json: damaged, budget: \[1\] is not a budget"),
             # a third: NaN took the whole front (every comparison with it is false), Infinity an OverflowError,
             # budgets the space refuses a math domain error half-way through the files, a list an unhashable key
             ("points.jsonl", '{"trial": "t", "step": 1, "bytes": 9, "ratio": 0.01, "val_accuracy": NaN}\n',
              r"points.jsonl: row 1: val_accuracy: nan is out of range: damaged"),
             ("points.jsonl", '{"trial": "t", "step": 1, "bytes": Infinity, "ratio": 0.01, "val_accuracy": 0.5}\n',
              r"points.jsonl: row 1: bytes: inf is out of range: damaged"),
             ("points.jsonl", '{"trial": "t", "step": 1, "bytes": -9, "ratio": 0.01, "val_accuracy": 0.5}\n',
              r"points.jsonl: row 1: bytes: -9 is out of range: damaged"),
             ("points.jsonl", '{"trial": "t", "step": 1, "bytes": 9, "ratio": 0.01, "val_accuracy": 0.5, '
                              '"checkpoint": ["a"]}\n', r"points.jsonl: row 1: checkpoint: \['a'\] is not a folder name"),
             ("test_metrics.json", '{"ckpt/0": NaN}', r"test_metrics.json: damaged, ckpt/0: nan is not a number"),
             *[("space.json", json.dumps({**json.loads(good), "space": {**json.loads(good)["space"], "budget": b}}),
                r"space.json: damaged, budget: .* is not a budget \(bytes >= 1 or a ratio in \(0, 1\]\)")
               for b in ({"bytes": -5}, {"ratio": float("nan")}, {"ratio": 1e308}, {"bytes": 0})],
             ("sensitivity.json", json.dumps({"entries": [{"layer": "fc", "operator": "pruning", "params": {},
                                                           "saved": "x"}]}),
              r"sensitivity.json: damaged, not a sensitivity table \(TypeError: entry 'fc'/'pruning': saved: 'x'"),
             ("sensitivity.json", json.dumps({"base_metric": "0.9", "entries": []}),
              r"sensitivity.json: damaged, not a sensitivity table \(TypeError: base_metric: '0.9' is not a number")]
    import re

    for name, text, message in cases:
        before = (run_dir / name).read_text() if (run_dir / name).exists() else None
        (run_dir / name).write_text(text)
        assert cli.main(["pareto", "--sensitivity", str(run_dir)]) == 2, name
        (line,) = stderr_lines(capsys)
        assert re.search(message, line) and line.startswith("mutate: error: "), line
        if before is None:
            (run_dir / name).unlink()
        else:
            (run_dir / name).write_text(before)


def test_a_damaged_checkpoint_is_one_line_of_export_naming_it(run_dir, tmp_path, capsys):
    """A checkpoint cut short (a full disk, a copy) was an internal error saying Keras' "File not found";
    like the run's other damaged files it is one line naming it, exit 2, nothing written."""
    (run_dir / "ckpt" / "1").mkdir(parents=True)  # point 0 is the smaller one
    for text in ("not a zip", ""):
        (run_dir / "ckpt" / "1" / "model.keras").write_text(text)
        assert cli.main(["export", str(run_dir), "--point", "0", "--out", str(tmp_path / "m.keras")]) == 2
        assert stderr_lines(capsys) == [f"mutate: error: {run_dir}/ckpt/1/model.keras: damaged, not a Keras model "
                                        "file (a .keras file is a zip archive holding config.json); point t0/100 "
                                        "cannot be exported"]
        assert not (tmp_path / "m.keras").exists()
    import zipfile

    with zipfile.ZipFile(run_dir / "ckpt" / "1" / "model.keras", "w") as z:  # a zip, but no model (was KeyError)
        z.writestr("weights.h5", b"")
    assert cli.main(["export", str(run_dir), "--point", "0", "--out", str(tmp_path / "m.keras")]) == 2
    assert "damaged, not a Keras model file" in stderr_lines(capsys)[0]


def test_a_points_file_that_is_a_folder_is_damaged_not_empty(run_dir, capsys):
    (run_dir / "points.jsonl").unlink()
    (run_dir / "points.jsonl").mkdir()
    assert cli.main(["pareto", str(run_dir)]) == 2
    assert stderr_lines(capsys) == [f"mutate: error: {run_dir / 'points.jsonl'}: not a file: damaged"]


def test_the_fronts_files_are_written_all_or_none(run_dir, capsys):
    """pareto.png a folder: csv and json were rewritten, html kept the old front, and the note said none were."""
    assert cli.main(["pareto", str(run_dir)]) == 0
    capsys.readouterr()
    files = {name: (run_dir / name).read_bytes() for name in ("pareto.csv", "pareto.json", "pareto.html")}
    (run_dir / "pareto.png").unlink()
    (run_dir / "pareto.png").mkdir()
    runs.append_point(run_dir, {"trial": "t1", "step": 50, "bytes": 100, "ratio": 0.1, "val_accuracy": 0.5,
                                "genome": [], "genome_summary": "dense", "checkpoint": "ckpt/2"})
    assert cli.main(["pareto", str(run_dir)]) == 0
    assert "could not write the front's files" in capsys.readouterr().err
    assert {name: (run_dir / name).read_bytes() for name in files} == files
    assert sorted(p.name for p in run_dir.glob("pareto*")) == ["pareto.csv", "pareto.html", "pareto.json", "pareto.png"]


@pytest.mark.parametrize("args, message", [
    (["--point", "5"], "--point 5: the front has 2 points, numbered 0 to 1"),
    (["--max-size", "10"], "--max-size 10: the smallest front point has 200 bytes"),
    (["--min-accuracy", "0.99"], "--min-accuracy 0.99: the best front point reaches 0.9500"),
    (["--point", "0"], "point t0/100: its checkpoint"),
])
def test_export_bad_input_exits_2(run_dir, tmp_path, capsys, args, message):
    assert cli.main(["export", str(run_dir), *args, "--out", str(tmp_path / "m.keras")]) == 2
    (line,) = stderr_lines(capsys)
    assert line.startswith(f"mutate: error: {run_dir}: ") and message in line, line
    assert not (run_dir / cli.INTERNAL_ERROR_FILE).exists()


def test_export_refuses_an_existing_or_misnamed_out(run_dir, tmp_path, capsys):
    taken = tmp_path / "taken.keras"
    taken.write_text("x")
    assert cli.main(["export", str(run_dir), "--point", "0", "--out", str(taken)]) == 2
    assert stderr_lines(capsys) == [f"mutate: error: {taken}: exists; pass --force (from Python: force=True) to overwrite it"]
    assert cli.main(["export", str(run_dir), "--point", "0", "--out", str(tmp_path / "m.h5")]) == 2
    assert stderr_lines(capsys) == [f"mutate: error: --out {tmp_path / 'm.h5'}: name a .keras or .tflite file, or a "
                                    "folder without a suffix (a SavedModel)"]


def test_bad_input_still_exits_2(tmp_path, monkeypatch, capsys):
    assert cli.main(["pareto", str(tmp_path)]) == 2
    assert stderr_lines(capsys) == [f"mutate: error: {tmp_path}: not a mutate run directory (no space.json)"]
    assert cli.main(["search"]) == 2
    assert stderr_lines(capsys) == ["mutate: error: mutate search: give a SPACE.yaml, or --resume RUN_DIR (not both)"]
    monkeypatch.setattr(commands, "pareto", raiser(BadInput("x.yaml: key: wrong")))
    assert cli.main(["pareto", "anything"]) == 2
    assert stderr_lines(capsys) == ["mutate: error: x.yaml: key: wrong"]


def test_a_damaged_space_json_is_bad_input(run_dir, capsys):
    (run_dir / runs.SPACE_FILE).write_text("{not json")
    assert cli.main(["search", "--resume", str(run_dir)]) == 2
    (line,) = stderr_lines(capsys)
    assert line.startswith(f"mutate: error: {run_dir / runs.SPACE_FILE}: not a space recorded by mutate"), line
    (run_dir / runs.SPACE_FILE).write_text(json.dumps([1]))
    with pytest.raises(spaces.SpaceError, match="not a space recorded by mutate"):
        runs.load_recorded_space(run_dir)


def test_verbose_reraises(run_dir, monkeypatch):
    monkeypatch.setattr(report, "pareto", raiser(KeyError("accuracy")))
    with pytest.raises(KeyError, match="accuracy"):
        cli.main(["--verbose", "pareto", str(run_dir)])
    assert not (run_dir / cli.INTERNAL_ERROR_FILE).exists()
    monkeypatch.undo()
    with pytest.raises(MissingInput, match="not a mutate run directory"):
        cli.main(["--verbose", "pareto", str(run_dir.parent)])


def test_a_user_builder_is_bad_input_but_a_builtin_one_failing_is_a_bug(monkeypatch):
    from mutate.search import builders
    from mutate.data import digits

    data = digits()
    with pytest.raises(BadInput, match="x.yaml: model.builder: module 'tests.test_errors' has no function 'nope'"):
        builders.build_model({"builder": "tests.test_errors:nope"}, data, "x.yaml")
    with pytest.raises(BadInput, match="x.yaml: model.builder: tests.test_errors:not_a_model returned str, not a "):
        builders.build_model({"builder": "tests.test_errors:not_a_model"}, data, "x.yaml")
    with pytest.raises(BadInput, match=r"x.yaml: model.builder: mlp raised ValueError: .* \(called with "
                                       r"model.activation='no_such_activation'\)$"):
        builders.build_model({"builder": "mlp", "activation": "no_such_activation"}, data, "x.yaml")
    monkeypatch.setitem(builders.BUILTIN, "mlp", raiser(KeyError("internal")))
    with pytest.raises(KeyError, match="internal"):
        builders.build_model({"builder": "mlp"}, data, "x.yaml")


def test_a_runs_user_modules_are_imported_before_its_checkpoints_load(tmp_path, monkeypatch):
    """`mutate export` and `pareto --sizes` load checkpoints whose classes a user module registers."""
    import sys
    from types import SimpleNamespace

    import keras

    from mutate.search import builders

    (tmp_path / "user_models_x.py").write_text(
        "import keras\n\n@keras.saving.register_keras_serializable('user_models_x')\n"
        "class Thing(keras.Model):\n    pass\n\ndef build(data):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    space = SimpleNamespace(model={"builder": "user_models_x:build"}, data={"name": "digits"}, where="x.yaml")
    builders.import_user_modules(space)
    assert "user_models_x" in sys.modules and keras.saving.get_registered_object("user_models_x>Thing") is not None
    gone = SimpleNamespace(model={"builder": "mlp"}, data={"name": "no_such_module_x:load"}, where="x.yaml")
    with pytest.raises(BadInput, match="x.yaml: data.name: cannot import module 'no_such_module_x'"):
        builders.import_user_modules(gone)


def test_a_builder_module_next_to_the_space_file_is_importable(tmp_path, monkeypatch):
    """`models.py` beside `space.yaml` imports without PYTHONPATH; the folder is appended (never shadowing an
    installed module) to sys.path and to PYTHONPATH, which an embedded Ray's trials inherit."""
    import os
    import sys

    from mutate.search import builders
    from mutate.search import space as space_mod

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    (tmp_path / "beside_models_x.py").write_text("from mutate.search.builders import mlp as build\n")
    (tmp_path / "json.py").write_text("raise RuntimeError('shadowed the standard library')\n")
    yaml_file = tmp_path / "space.yaml"
    yaml_file.write_text("model: {builder: 'beside_models_x:build', hidden: [8]}\ndata: {name: digits}\n"
                         "mutations: {layers: [dense_1], operators: {pruning: {sparsity: [0.5]}}}\n"
                         "budget: {ratio: 0.9}\n")
    space = space_mod.load(yaml_file)
    with pytest.raises(BadInput, match="cannot import module 'beside_models_x'"):
        builders.import_callable("beside_models_x:build", "model.builder", space.where)
    builders.import_user_modules(space)
    assert sys.path[-1] == str(tmp_path) and os.environ["PYTHONPATH"] == os.pathsep.join(["/somewhere/else",
                                                                                             str(tmp_path)])
    import json  # noqa: F401 - the standard library's, not the file beside the space

    builders.import_user_modules(space)  # idempotent
    assert sys.path.count(str(tmp_path)) == 1 and os.environ["PYTHONPATH"].count(str(tmp_path)) == 1
    assert builders.import_callable("beside_models_x:build", "model.builder", space.where) is builders.mlp


def test_a_model_mutate_could_not_reload_or_one_ending_in_softmax_is_refused_before_the_search(tmp_path,
                                                                                             monkeypatch):
    """An unregistered subclassed model ran the whole search, then failed loading its front (internal error,
    no front printed); a model ending in a softmax was trained and scored as logits, silently."""
    import sys

    from mutate.search import driver
    from mutate.search import space as space_mod

    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "odd_models_x.py").write_text(
        "import keras\n"
        "class Unregistered(keras.Model):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = keras.layers.Dense(16, name='fc')\n"
        "        self.out = keras.layers.Dense(10, name='out')\n"
        "    def call(self, x):\n"
        "        return self.out(self.fc(x))\n"
        "def unregistered(data):\n"
        "    m = Unregistered()\n"
        "    m(data.x_train[:2])\n"
        "    return m\n"
        "def softmax(data):\n"
        "    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, name='fc'),\n"
        "                             keras.layers.Dense(10, activation='softmax', name='out')])\n"
        "def narrow(data):\n"
        "    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, name='fc'),\n"
        "                             keras.layers.Dense(7, name='out')])\n"
        "@keras.saving.register_keras_serializable('odd_models_x')\n"
        "class Scaled(keras.layers.Layer):\n"
        "    def __init__(self, units, scale=2.0, **kw):\n"
        "        super().__init__(**kw)\n"
        "        self.units, self.scale, self.fc = units, scale, keras.layers.Dense(units, name='fc')\n"
        "    def call(self, x):\n"
        "        return self.fc(x) * self.scale\n"
        "    def get_config(self):\n"
        "        return {**super().get_config(), 'units': self.units, **self.extra()}\n"
        "    def extra(self):\n"
        "        return {'scale': self.scale}\n"
        "class Forgets(Scaled):\n"
        "    def get_config(self):\n"
        "        return keras.layers.Layer.get_config(self)\n"
        "class Drops(Scaled):\n"
        "    def extra(self):\n"
        "        return {}\n"
        "keras.saving.register_keras_serializable('odd_models_x')(Forgets)\n"
        "keras.saving.register_keras_serializable('odd_models_x')(Drops)\n"
        "def _with(layer):\n"
        "    return keras.Sequential([keras.Input((64,)), layer, keras.layers.Dense(10, name='out')])\n"
        "def scaled(data):\n"
        "    return _with(Scaled(16, scale=3.0, name='s'))\n"
        "def forgets(data):\n"
        "    return _with(Forgets(16, name='s'))\n"
        "def drops(data):\n"
        "    return _with(Drops(16, scale=3.0, name='s'))\n"
        "def lam(data):\n"
        "    return _with(keras.layers.Lambda(lambda t: t * 2.0))\n"
        "class Eager(keras.Model):\n"
        "    def __init__(self, **kw):\n"
        "        super().__init__(**kw)\n"
        "        self.fc = keras.layers.Dense(16, name='fc')\n"
        "    def call(self, x):\n"
        "        import numpy as np\n"
        "        return self.fc(np.asarray(x) * 1.0)\n"
        "keras.saving.register_keras_serializable('odd_models_x')(Eager)\n"
        "def eager(data):\n"
        "    return _with(Eager(name='e'))\n"
        "def brackets(data):\n"
        "    return _with(keras.layers.Dense(16, name='fc[1]'))\n"
        "def onehot():\n"
        "    import numpy as np\n"
        "    from mutate import data\n"
        "    d = data.digits()\n"
        "    eye = np.eye(10, dtype='int64')\n"
        "    return data.Dataset('onehot', d.x_train, eye[d.y_train], d.x_test, eye[d.y_test], 10)\n")
    yaml_file = tmp_path / "space.yaml"
    cases = (("unregistered", "digits", r"odd_models_x.Unregistered, which is not registered with Keras"),
             ("softmax", "digits", r"outputs are probabilities \(each row sums to 1: a softmax\)"),
             # a head of 7 for 10 classes, and one-hot labels: every trial failed in Keras' loss (internal error)
             ("narrow", "digits", r"output for 8 rows has shape \(8, 7\); labels of shape \(8,\) with "
                                  r"num_classes=10 need \(8, 10\): one logit per class and label$"),
             ("mlp", "'odd_models_x:onehot'", r"output for 8 rows has shape \(8, 10\); labels of shape \(8, 10\) "
                                              r"with .* \(the labels look one-hot: give class ids, np.argmax"),
             # a get_config missing an argument, and a Lambda: the first exploit failed, after the search ran
             ("forgets", "digits", r"that Keras cannot load back from a .keras file, as every exploit and the "
                                   r"test set do \(TypeError: .*\); give each class of yours a get_config"),
             ("lam", "digits", r"cannot load back .*\(ValueError: Requested the deserialization of a `Lambda`"),
             # NumPy in call: Keras' load builds the model on symbolic inputs, fails, warns, loads no weight
             ("eager", "digits", r"loads back from a .keras file with 2 of its 4 weights: Keras builds a loaded "),
             # a get_config leaving out a setting loaded another model, silently
             ("drops", "digits", r"loads back from a .keras file computing other outputs \(largest difference "
                                 r"[0-9.]+\): a get_config of yours leaves out a setting"))
    for builder, data_name, message in cases:
        module = "mutate.search.builders" if builder == "mlp" else "odd_models_x"
        yaml_file.write_text(f"model: {{builder: '{module}:{builder}'}}\ndata: {{name: {data_name}}}\n"
                             "mutations: {layers: [fc], operators: {pruning: {sparsity: [0.5]}}}\n"
                             "budget: {ratio: 0.9}\n")
        with pytest.raises(BadInput, match=rf"space.yaml: model.builder: {module}:{builder} built a model .*{message}"):
            driver.prepare(space_mod.load(yaml_file))
    # the same class with a whole get_config round-trips, and is accepted
    yaml_file.write_text("model: {builder: 'odd_models_x:scaled'}\ndata: {name: digits}\n"
                         "mutations: {layers: [out], operators: {pruning: {sparsity: [0.5]}}}\nbudget: {ratio: 0.99}\n")
    assert list(driver.prepare(space_mod.load(yaml_file)).allowed) == ["out"]
    # a model that fails in Keras' own training step, before any mutation (TensorFlow refuses the layer name
    # as a scope in a traced step): one line from the sensitivity table's warm-up, not an internal error
    import keras

    from mutate.search import sensitivity

    yaml_file.write_text("model: {builder: 'odd_models_x:brackets'}\ndata: {name: digits}\n"
                         "mutations: {layers: ['fc[1]'], operators: {pruning: {sparsity: [0.5]}}, warmup_steps: 2}\n"
                         "budget: {ratio: 0.9}\n")
    space = space_mod.load(yaml_file)
    prepared = driver.prepare(space)
    if keras.backend.backend() == "tensorflow":
        with pytest.raises(BadInput, match=r"space.yaml: model.builder: odd_models_x:brackets built a model that "
                                           r"Keras could not train or evaluate as it was built, before any "
                                           r"mutation \(ValueError: 'fc\[1\]' is not a valid scope name"):
            sensitivity.measure(space, prepared.allowed, prepared.sizes, out=lambda line: None)
        # the failed call left no Keras name scope open: a model made afterwards has its plain paths (CI once
        # failed 27 later tests whose paths all began with "sequential_9/")
        after = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="later")])
        assert [k.path for k in mutate.compressible(after)] == ["later"]
    # an error that is not the model's stays what it is (an internal error, with its traceback)
    boom = RuntimeError("mutate's own bug")
    assert sensitivity._model_failed(space, boom) is boom


def test_resume_refuses_overrides_and_a_trial_asking_for_more_than_the_machine_has_is_one_line(tmp_path, capfd):
    """--resume with --set/--strategy silently ignored them; resources.gpus=1 on a machine without a GPU left
    every trial PENDING forever."""
    from types import SimpleNamespace

    from mutate import commands
    from mutate.search import runner

    with pytest.raises(BadInput, match="--set and --strategy cannot be combined with --resume"):
        commands.search(None, overrides=["training.steps=800"], resume=tmp_path)
    with pytest.raises(BadInput, match="--set and --strategy cannot be combined with --resume"):
        commands.search(None, strategy="greedy", resume=tmp_path)
    # the same from Python (`mutate.run_search`)
    with pytest.raises(BadInput, match="give a dict of key paths to values or a list of 'KEY.PATH=VALUE'"):
        mutate.run_search("s.yaml", overrides=5)
    with pytest.raises(BadInput, match="give a space's YAML file, or resume=RUN_DIR"):
        mutate.run_search()
    with pytest.raises(BadInput, match="--set and --strategy cannot be combined with --resume"):
        mutate.run_search(resume=tmp_path, overrides={"training.steps": 800})
    with pytest.raises(BadInput, match=r"nope.yaml: no such search space file"):
        mutate.run_search(tmp_path / "nope.yaml", overrides={"training.steps": 800})
    space = SimpleNamespace(resources={"cpus": 1, "gpus": 1, "tpu": 0}, where="s.yaml")
    with pytest.raises(BadInput, match=r"^s.yaml: resources.gpus: 1 per trial, but the Ray node on this machine "
                                       r"has 0 GPU: no trial could start$"):
        runner._check_resources(space, {"CPU": 2.0}, embedded=True)
    runner._check_resources(space, {"CPU": 2.0}, embedded=False)  # a cluster may grow: a warning only
    assert "resources.gpus: 1 per trial, but the Ray cluster has 0 GPU" in capfd.readouterr().err
    runner._check_resources(SimpleNamespace(resources={"cpus": 2, "gpus": 0, "tpu": 0}, where="s.yaml"),
                            {"CPU": 2.0}, embedded=True)


def test_a_ray_that_refuses_the_space_stops_the_table_and_leaves_no_folder(tmp_path, monkeypatch):
    """Resources the node lacks were refused only after the whole sensitivity table (warm-up and every entry,
    ~28 s on digits), and the storage folder the search had made stayed behind, empty."""
    from mutate.search import runner, sensitivity

    outcome = {}
    measure = sensitivity.measure

    def blas_threads():
        from threadpoolctl import threadpool_info

        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas_threads()

    def spy(*args, **kwargs):
        outcome["blas"] = blas_threads()  # one thread while Ray may fork (OpenBLAS' fork handler hung a search)
        try:
            outcome["table"] = measure(*args, **kwargs)
        except sensitivity.Stopped as e:
            outcome["stopped"] = e
            raise

    def refuse(space, run_dir, address=None, verbose=False):
        raise BadInput(f"{space.where}: resources.gpus: 1 per trial, but the Ray node on this machine has 0 GPU: "
                       "no trial could start")

    monkeypatch.setattr(sensitivity, "measure", spy)
    monkeypatch.setattr(runner, "start_ray", refuse)
    storage = tmp_path / "new" / "runs"
    with pytest.raises(BadInput, match="no trial could start"):
        commands.search(ROOT / "search_spaces" / "digits_mlp.yaml", overrides=[
            f"storage={storage}", "resources.gpus=1", "mutations.warmup_steps=5000", "training.steps=6000"])
    assert "stopped" in outcome and "table" not in outcome  # ended within the warm-up, not after it
    assert set(outcome["blas"]) <= {1} and (outcome["blas"] or not before) and blas_threads() == before
    assert not (tmp_path / "new").exists() and tmp_path.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(BadInput, match="no trial could start"):  # a storage folder the user had stays
        commands.search(ROOT / "search_spaces" / "digits_mlp.yaml", overrides=[f"storage={kept}", "resources.gpus=1"])
    assert kept.is_dir() and not any(kept.iterdir())


def test_a_user_dataset_is_checked_and_normalised_before_anything_is_written(tmp_path, monkeypatch, capsys):
    """Bad user data failed mid-search as an internal error (or trained on something else): one line naming
    the file and key, exit 2, no run directory. Legitimate variants are normalised."""
    import sys

    import numpy as np

    from mutate.data import Dataset, digits
    from mutate.search import builders

    d = digits()
    ok = builders.checked_dataset(Dataset("d", d.x_train.tolist(), d.y_train.reshape(-1, 1).astype(float),
                                          d.x_test, d.y_test[:, None], np.int64(10)), "s.yaml: data.name: f")
    assert ok.y_train.shape == (len(d.y_train),) and ok.y_train.dtype == np.int64 and ok.y_test.ndim == 1
    assert type(ok.num_classes) is int and isinstance(ok.x_train, np.ndarray)  # (N, 1) labels: a classifier
    nan = d.x_train.copy()
    nan[3, 4] = np.nan
    bad = {"x_train holds NaN or Inf": dict(x_train=nan),
           "y_train holds labels 0..9, outside 0..4 \\(num_classes=5\\)": dict(num_classes=5),
           "x_train has 1,347 rows but y_train has 1,340": dict(y_train=d.y_train[:-7]),
           "test split has 0 row\\(s\\)": dict(x_test=d.x_test[:0], y_test=d.y_test[:0]),
           "x_train rows have shape \\(64,\\) but x_test rows \\(63,\\)": dict(x_test=d.x_test[:, :63]),
           "y_test holds non-integer labels": dict(y_test=d.y_test + 0.5),
           "num_classes=2.5 is not a positive integer": dict(num_classes=2.5)}
    for message, change in bad.items():
        fields = {"name": "d", "x_train": d.x_train, "y_train": d.y_train, "x_test": d.x_test, "y_test": d.y_test,
                  "num_classes": 10, **change}
        with pytest.raises(BadInput, match=f"^s.yaml: data.name: f returned a Dataset whose {message}"):
            builders.checked_dataset(Dataset(**fields), "s.yaml: data.name: f")
    # through the CLI: a loader beside the YAML whose labels exceed num_classes
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "beside_data_y.py").write_text(
        "from mutate.data import Dataset, digits\n"
        "def five():\n    d = digits()\n    return Dataset('five', d.x_train, d.y_train, d.x_test, d.y_test, 5)\n")
    (tmp_path / "space.yaml").write_text(
        "model: {builder: mlp, hidden: [8]}\ndata: {name: 'beside_data_y:five'}\nstorage: runs\n"
        "mutations: {layers: [dense_1], operators: {pruning: {sparsity: [0.5]}}}\nbudget: {ratio: 0.9}\n")
    assert cli.main(["search", str(tmp_path / "space.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mutate: error: space.yaml: data.name: beside_data_y:five returned a Dataset whose y_train holds "
                   "labels 0..9, outside 0..4 (num_classes=5)"], err
    assert not (tmp_path / "runs").exists()


def test_a_builtin_loaders_relative_files_resolve_against_the_yaml_and_overrides_from_python(tmp_path):
    import numpy as np

    from mutate.commands import _dotted, _plain
    from mutate.search import space as space_mod

    body = {"model": {"builder": "mlp"}, "mutations": {"layers": ["dense_1"],
                                                       "operators": {"pruning": {"sparsity": [0.5]}}},
            "budget": {"ratio": 0.5}}
    here = tmp_path / "spaces" / "s.yaml"
    s = space_mod.from_dict({**body, "data": {"name": "fashion_mnist", "data_dir": "../data"}}, path=here)
    assert s.data["data_dir"] == str(tmp_path / "data")  # as the README says (it was the working directory's)
    s = space_mod.from_dict({**body, "data": {"name": "shakespeare", "archive": "/abs/s.tar.gz"}}, path=here)
    assert s.data["archive"] == "/abs/s.tar.gz"
    s = space_mod.from_dict({**body, "data": {"name": "mine:load", "data_dir": "rel"}}, path=here)
    assert s.data["data_dir"] == "rel"  # a user loader's arguments are its own
    # mutate.run_search's dict overrides: nested mappings set the keys they name; paths and NumPy values convert
    sets = {"search": {"population": np.int64(2), "strategy": "greedy"}, "storage": tmp_path / "r",
            "model.hidden": np.array([4, 2])}
    import json

    assert [f"{k}={json.dumps(v, default=_plain(k))}" for k, v in _dotted(sets)] == [
        "search.population=2", 'search.strategy="greedy"', f'storage="{tmp_path / "r"}"', "model.hidden=[4, 2]"]
    with pytest.raises(BadInput, match="overrides: search.population=<object"):
        mutate.run_search(SPACE, overrides={"search": {"population": object()}})
    with pytest.raises(BadInput, match="digits_mlp.yaml: search.population: "):
        mutate.run_search(SPACE, overrides={"search": {"population": 0}})  # checked before anything is written


def test_progress_zero_prints_no_progress_lines(tmp_path, monkeypatch):
    from mutate.search import runner

    lines = []
    monkeypatch.setattr(runner, "_emit", lines.append)
    for interval, expect in ((0, 0), (1e-9, 2)):
        lines.clear()
        points = runner._Points(str(tmp_path), budget=1000, interval=interval)
        points.on_step_end(0, [])
        points.on_step_end(1, [])
        points.on_experiment_end([])  # the last line too: --progress 0 printed it
        assert len(lines) == (expect and expect + 1), (interval, lines)


def test_a_resume_runs_on_the_recorded_backend_and_a_dead_address_fails_fast(tmp_path, monkeypatch):
    """--resume of a JAX run from a shell without KERAS_BACKEND ran its new trials on TensorFlow; an address
    where nothing listens made Ray retry for about 14 minutes."""
    import os
    import socket
    import sys
    import time
    from types import SimpleNamespace

    import keras  # noqa: F401 - imported, on TensorFlow, as after any earlier test

    from mutate.search import runner

    # setenv first so that the teardown restores the variable's absence: a bare delenv of an unset variable
    # records nothing, and the later setenv("torch") then restored the "jax" the code set, so every later test
    # of this worker (and their child processes: a MirroredStrategy check) ran on JAX
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    monkeypatch.delenv("KERAS_BACKEND")
    (tmp_path / "space.json").write_text(json.dumps({"space": {}, "backend": "jax"}))
    with pytest.raises(BadInput, match=r"the search ran on Keras' jax backend and this process runs tensorflow; "
                                       r"resume it with KERAS_BACKEND=jax$"):
        commands._resume_backend(tmp_path)  # Keras is imported here, on TensorFlow
    monkeypatch.delitem(sys.modules, "keras")  # as in a fresh `mutate search --resume` (Keras not imported yet)
    commands._resume_backend(tmp_path)
    assert os.environ["KERAS_BACKEND"] == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    with pytest.raises(BadInput, match="this process runs torch; resume it with KERAS_BACKEND=jax"):
        commands._resume_backend(tmp_path)

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    space = SimpleNamespace(where="s.yaml", ray={"address": None})
    t0 = time.perf_counter()
    with pytest.raises(BadInput, match=rf"^--address 127.0.0.1:{port}: cannot join a Ray cluster \(nothing answers "
                                       rf"at 127.0.0.1:{port}: "):
        runner._init_ray(space, f"127.0.0.1:{port}", verbose=False)
    with pytest.raises(BadInput, match=r"^s.yaml: ray.address nosuchhost.invalid:6379: cannot join a Ray cluster"):
        runner._init_ray(SimpleNamespace(where="s.yaml", ray={"address": "nosuchhost.invalid:6379"}), None, False)
    assert time.perf_counter() - t0 < 30


def test_a_resumed_search_counts_the_time_budget_over_its_sessions_and_a_bare_interrupt_offers_no_resume(
        tmp_path, capsys):
    """Found by a bug hunt: a search interrupted (Ctrl-C) and resumed stopped at its time budget (Tune restores
    the spent part) and said "interrupted ... --resume continues it", exit 130, in a loop: only the last
    session's wall was compared with the budget. And Ctrl-C before any report named a --resume of the folder
    it then removed."""
    from mutate import commands

    d = runs.prepare_run_dir(spaces.load(SPACE, [f"storage={tmp_path / 'runs'}", "search.time_budget_s=90"]))
    with pytest.raises(KeyboardInterrupt):  # first session: Ctrl-C after 50 s
        commands._session_end(d, {"unfinished": 2, "trials": 2, "points": 8, "wall_s": 50.0,
                                  "interrupted": True}, 90.0, 0.0, False)
    assert runs.read_spent(d) == 50.0 and "--resume" in capsys.readouterr().out
    # the resumed session stops at 45 s: 95 s in all, the budget (no signal: Tune's budget stopped it)
    assert commands._session_end(d, {"unfinished": 2, "trials": 2, "points": 20, "wall_s": 45.0,
                                     "interrupted": False}, 90.0, runs.read_spent(d), True) == 95.0
    assert "stopped by search.time_budget_s (90 s, 95 s spent)" in capsys.readouterr().out
    runs.write_timing(d, wall_s=45.0, compute_s=80.0, slots=2, spent_s=95.0)
    assert cli.main(["search", "--resume", str(d)]) == 2
    assert "95 s spent" in stderr_lines(capsys)[0]
    # a second bug hunt: a session killed outright (kill -9) recorded nothing, so its time was missing from the
    # sum and the next one, stopped by Tune's restored budget, read as an interrupt (exit 130) forever; now no
    # signal means the budget, whose seconds are recorded as spent at least
    assert commands._session_end(d, {"unfinished": 1, "trials": 2, "points": 9, "wall_s": 30.0,
                                     "interrupted": False}, 90.0, 25.0, True) == 90.0
    assert "stopped by search.time_budget_s (90 s, 90 s spent)" in capsys.readouterr().out
    # off the main thread Tune installs no handler: the clock decides, as before
    with pytest.raises(KeyboardInterrupt):
        commands._session_end(d, {"unfinished": 2, "trials": 2, "points": 8, "wall_s": 20.0,
                                  "interrupted": None}, 90.0, 0.0, True)
    capsys.readouterr()
    with pytest.raises(KeyboardInterrupt):  # a fresh search with no point: nothing to resume
        commands._session_end(d, {"unfinished": 2, "trials": 2, "points": 0, "wall_s": 3.0,
                                  "interrupted": True}, None, 0.0, False)
    out = capsys.readouterr().out
    assert "nothing kept" in out and "--resume" not in out


def test_parallel_slots_follow_fractional_cpus_and_gpus_and_local_is_the_embedded_ray(monkeypatch):
    """Found by a bug hunt: resources.cpus 1.5 on 2 CPUs ran one trial at a time while the summary said 2 slots
    (int(1.5) = 1), and `--address local` (Ray's word for a new local instance) was taken for a cluster that
    may grow: a GPU it lacked left trials pending forever instead of the one-line refusal."""
    from types import SimpleNamespace

    import ray

    from mutate.search import runner

    def space(cpus, gpus=0, population=4):
        return SimpleNamespace(resources={"cpus": cpus, "gpus": gpus, "tpu": 0}, search={"population": population},
                               ray={"address": None, "dashboard": False}, where="s.yaml")

    assert runner.slots(space(1.5), {"CPU": 2.0}) == 1
    assert runner.slots(space(0.5), {"CPU": 2.0}) == 4
    assert runner.slots(space(0.5, population=3), {"CPU": 2.0}) == 3
    assert runner.slots(space(1), {"CPU": 16.0, "GPU": 2.0}) == 4
    assert runner.slots(space(1, gpus=1), {"CPU": 16.0, "GPU": 2.0}) == 2
    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(init=kw))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(runner, "_check_resources", lambda s, r, embedded: seen.update(embedded=embedded))
    monkeypatch.setitem(runner._RAY, "started", False)
    monkeypatch.setitem(runner._RAY, "resources", None)
    environ = dict(os.environ)
    try:
        runner._init_ray(space(1, gpus=1), "local", False)
    finally:
        os.environ.clear()
        os.environ.update(environ)
    assert seen["embedded"] is True and "address" not in seen["init"]


@pytest.mark.parametrize("value", ["-5", "nan", "inf", "soon"])
def test_progress_seconds_must_be_finite_and_not_negative(value, capsys):
    """Found by a bug hunt: `--progress -5`, `nan` and `inf` were taken silently (a negative one meant no lines)."""
    with pytest.raises(SystemExit) as e:
        cli.main(["search", str(SPACE), "--progress", value])
    assert e.value.code == 2
    assert f"argument --progress: '{value}': seconds as a finite number >= 0" in capsys.readouterr().err


def test_a_time_budget_that_ends_before_any_report_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch):
    """Found by a bug hunt: search.time_budget_s shorter than the actors' start exited 0 with no point and left
    a run folder nothing could read."""
    from mutate import commands
    from mutate.search import runner

    monkeypatch.setattr(commands, "_strategy_while_ray_starts", lambda *a, **k: (None, 0.0, 0.0))
    monkeypatch.setattr(runner, "run", lambda *a, **k: {"wall_s": 20.0, "compute_s": 0.0, "points": 0, "trials": 2,
                                                        "failed": [], "actor_setup_s": [], "unfinished": 2,
                                                        "slots": 2})
    storage = tmp_path / "runs"
    with pytest.raises(BadInput, match=r"digits_mlp.yaml: search.time_budget_s: 20: no trial reported within it"):
        commands.search(SPACE, overrides=[f"storage={storage}", "search.time_budget_s=20"])
    assert not storage.exists()


@pytest.mark.parametrize("signalled", [False, True])
def test_the_search_knows_a_signal_from_its_time_budget_and_puts_the_sigint_handler_back(
        tmp_path, monkeypatch, signalled):
    """Found by a bug hunt: Ray Tune's SIGINT handler stayed installed after `fit` when no signal came, so a
    Ctrl-C during the test evaluation (or later in a notebook) was swallowed; and a stop was told from the
    time budget by the clock only, which a session killed outright (no record of its time) fooled. Here a
    stand-in `fit` installs a handler as Tune does and, when `signalled`, runs it (Tune's handler puts the
    earlier one back); the summary says which, the handler before `run` is in place after it, and the time
    spent is recorded while it runs."""
    import signal
    import time

    from mutate.search import runner

    def tune_handler(sig, frame):  # what Tune's handler does on a signal: stop, and put the earlier one back
        signal.signal(signal.SIGINT, before)

    class Tuner:
        def fit(self):
            signal.signal(signal.SIGINT, tune_handler)
            cb = runner._Points(str(d), 100, 0.0, spent_before=40.0)
            cb.setup()
            cb.recorded -= runner.SPENT_EVERY_S  # a record is due
            cb.on_step_end(0, [])
            if signalled:
                tune_handler(signal.SIGINT, None)
            return []

    before = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(runner, "_init_ray", lambda *a: None)
    monkeypatch.setattr(runner, "_tuner", lambda *a: Tuner())
    space = spaces.load(SPACE, [f"storage={tmp_path}"])
    d = runs.prepare_run_dir(space)
    t0 = time.time()
    summary = runner.run(space, run_dir=d, budget=100, strategy=None, verbose=True, spent_before=40.0)
    assert summary["interrupted"] is signalled
    assert signal.getsignal(signal.SIGINT) is before
    assert 40.0 <= runs.read_spent(d) <= 40.0 + (time.time() - t0) + 0.1


def test_a_damaged_file_sizes_entry_is_converted_again_not_printed(run_dir):
    """`pareto --sizes` printed a cached entry whatever it held (ValueError, AttributeError in the table)."""
    from mutate.results import formats

    good = {"counted": 100, "keras": 900, "tflite": 500, "tflite_gzip": 400}
    refused = {"counted": 100, "keras": 900, "tflite": None, "tflite_gzip": None, "tflite_refused": "Flex ops"}
    damaged = [{"counted": "x", "keras": 1, "tflite": 1, "tflite_gzip": 1}, 5, {}, {**good, "tflite_gzip": None},
               {**refused, "tflite_refused": None}]
    names = [f"gone/{i}" for i in range(len(damaged))]  # no model.keras: a damaged entry leaves nothing
    (run_dir / formats.SIZES_FILE).write_text(json.dumps({"ok": good, "no": refused, **dict(zip(names, damaged))}))
    assert formats.file_sizes(run_dir, ["ok", "no", *names]) == {"ok": good, "no": refused}


def test_a_checkpoint_whose_class_is_no_longer_registered_is_one_line_naming_file_and_class(tmp_path):
    """A user renamed their model's registration after the search: `export` and `pareto --sizes` stopped with
    an internal error (Keras' "Could not locate class", or mutate's own for a compressed copy of the class)."""
    import keras

    @keras.saving.register_keras_serializable("gone_pkg_x")
    class GoneNet(keras.Model):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.fc = keras.layers.Dense(4, name="fc")

        def call(self, x):
            return self.fc(x)

    plain = GoneNet()
    plain(np.zeros((1, 3), "float32"))
    plain.save(tmp_path / "plain.keras")
    mutate.compress(plain, {"fc": ("pruning", {"sparsity": 0.5})}, mutate.Schedule(0, 4, 2))
    plain.save(tmp_path / "compressed.keras")  # a mutated checkpoint names the class through mutate's wrapper
    space = spaces.from_dict({"model": {"builder": "gone_pkg_x:build"}, "data": {"name": "digits"},
                              "mutations": {"layers": ["fc"], "operators": {"pruning": {"sparsity": [0.5]}}},
                              "budget": {"ratio": 0.9}})
    assert isinstance(runs.load_checkpoint(tmp_path / "plain.keras", space), GoneNet)  # registered: loads
    keras.saving.get_custom_objects().pop("gone_pkg_x>GoneNet")
    with pytest.raises(BadInput, match=r"plain.keras: its model holds class 'GoneNet', which no imported module "
                                       r"registers with Keras now \(the run's model.builder: gone_pkg_x:build\)"):
        runs.load_checkpoint(tmp_path / "plain.keras", space)
    with pytest.raises(BadInput, match=r"compressed.keras: its model holds class '[^']*GoneNet', which no imported "):
        runs.load_checkpoint(tmp_path / "compressed.keras")
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(Exception) as caught:  # any other load error is not the user's class: it propagates
        runs.load_checkpoint(tmp_path / "junk.keras")
    assert not isinstance(caught.value, BadInput)


def test_a_glob_on_a_layer_the_model_never_calls_says_so():
    """Found by a bug hunt: a subclassed model's unused Dense was reported as "a Dense that cannot be compressed"
    though mutate compresses Dense layers: it was never built, so it holds no kernel."""
    import keras

    from mutate.operator.surgery import compressible
    from mutate.search import driver

    class WithSpare(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(4, name="fc")
            self.spare = keras.layers.Dense(4, name="spare")

        def call(self, x):
            return self.fc(x)

    model = WithSpare()
    model(np.zeros((1, 3), "float32"))
    space = spaces.from_dict({"model": {"builder": "mlp"}, "data": {"name": "digits"},
                              "mutations": {"layers": ["fc"], "operators": {"pruning": {"sparsity": [0.5]}}},
                              "budget": {"ratio": 0.9}})
    with pytest.raises(BadInput, match=r"mutations.layers: 'spare' matches 'spare', a Dense the model never calls "
                                       r"\(it was not built, so it holds no kernel\)"):
        driver._glob_matches(space, "mutations.layers", ["spare"], model, compressible(model))
    with pytest.raises(BadInput, match=r"'fc/\*' matches no compressible kernel; the model's are fc"):
        driver._glob_matches(space, "mutations.layers", ["fc/*"], model, compressible(model))


def test_a_16_bit_global_dtype_policy_is_refused_before_the_search_plans_for_the_wrong_model():
    """Found by a bug hunt: under `keras.config.set_dtype_policy("bfloat16")` the driver sized and measured a
    16-bit model (budget, sensitivity table, greedy's plan) while the trials, whose Keras keeps the default
    per thread and process, trained float32 models."""
    import keras

    from mutate.search import driver

    keras.config.set_dtype_policy("bfloat16")
    try:
        with pytest.raises(BadInput, match=r"digits_mlp.yaml: keras.config.dtype_policy\(\) is 'bfloat16' in this "
                                           r"thread, but the search's trials .* with Keras' default 'float32'"):
            driver.prepare(spaces.load(SPACE))
    finally:
        keras.config.set_dtype_policy("float32")
