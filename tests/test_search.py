"""Real searches on digits through the CLI: PBT end to end, export, a SIGKILLed driver resumed, and trials
that crash or diverge while the rest of the search goes on."""

import json
import re
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "digits_mlp.yaml"
MUTATE = [sys.executable, "-m", "mutate.cli"]
SMALL = ["--set", "training.steps=300", "--set", "training.report_every=50", "--set", "search.population=2",
         "--set", "model.hidden=[32,32]", "--set", "mutations.warmup_steps=50", "--set", "mutations.window=50",
         "--set", "search.perturbation_interval=100", "--set", "budget.ratio=0.5", "--progress", "5"]


ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def run(args, **kw):
    return subprocess.run([*MUTATE, *args], capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=600, **kw)


def start(args):
    """`run` without waiting: the process, its output piped as text."""
    return subprocess.Popen([*MUTATE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=ENV)


def finish(proc):
    """Wait for a `start`ed process; what `run` returns."""
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "points.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    storage = tmp_path_factory.mktemp("runs")
    res = run(["search", str(SPACE), *SMALL, "--set", f"storage={storage}"])
    assert res.returncode == 0, res.stderr[-3000:]
    return storage / "digits_mlp", res


def test_search_reports_every_point_and_prints_the_front(finished):
    run_dir, res = finished
    points = rows(run_dir)
    assert len(points) >= 2 * 6  # an exploit that rewinds a trial adds its repeated steps as new points
    assert {p["step"] for p in points} == {50, 100, 150, 200, 250, 300}
    saved = [p["checkpoint"] for p in points if p["checkpoint"]]
    assert len(set(saved)) == len(saved)
    for i, p in enumerate(points):  # a model is not written when an earlier point of its actor dominates it
        if not p["checkpoint"]:
            assert any(q["pid"] == p["pid"] and q["bytes"] <= p["bytes"] and q["val_accuracy"] >= p["val_accuracy"]
                       and (q["bytes"] < p["bytes"] or q["val_accuracy"] > p["val_accuracy"]) for q in points[:i])
    for p in points:
        assert 0 < p["ratio"] <= 3 and 0 <= p["val_accuracy"] <= 1
        assert "accuracy" not in p, "no test evaluation per report"
    assert any(p["genome"] for p in points), "no mutation was ever spliced in"
    # population 2 on 2 slots: an exploit pauses a trial with none waiting; its actor is kept for it (reused),
    # never stopped and replaced by a new process (runner._PopulationVariants)
    assert len({p["pid"] for p in points}) == 2, sorted({p["pid"] for p in points})
    # each actor's first report carries its start (imports, data, first model), summed up in timing.json
    setups = {p["pid"]: p["actor_setup_s"] for p in points if "actor_setup_s" in p}
    assert len(setups) == 2 and all(v > 0 for v in setups.values()), setups
    timing = json.loads((run_dir / "timing.json").read_text())
    assert timing["actors"] == 2 and timing["actor_setup_s"] == pytest.approx(sum(setups.values()) / 2, abs=0.06)
    assert "2 actor(s) started" in res.stdout
    # lean: only the validation front keeps its model checkpoint, and only it was evaluated on the test set
    front = json.loads((run_dir / "pareto.json").read_text())["front"]
    kept = {str(f.relative_to(run_dir)) for f in (run_dir / "models").glob("*/step_*")}
    assert kept == {f["checkpoint"] for f in front}
    tests = json.loads((run_dir / "test_metrics.json").read_text())
    assert set(tests) == kept and all(f["test_accuracy"] == tests[f["checkpoint"]] for f in front)
    sens = json.loads((run_dir / "sensitivity.json").read_text())
    assert sens["base_metric"] is not None and len(sens["entries"]) == 29  # 11 levels on each hidden layer, 7 on logits
    out = res.stdout
    assert "sensitivity: 29 (layer, operator, level) entries" in out and "test set: evaluated the" in out
    assert "disk: " in out
    assert "search done" in out and "on the front" in out and "hypervolume" in out
    quiet = [line for line in out.splitlines() if not line.lstrip().startswith("[")]  # progress lines aside
    assert "INFO" not in out and "Traceback" not in out and len(quiet) < 40, out
    for name in ("pareto.csv", "pareto.json", "pareto.png"):
        assert (run_dir / name).is_file()
    assert (run_dir / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    timing = json.loads((run_dir / "timing.json").read_text())
    assert 0 < timing["compute_s"] <= timing["slots"] * timing["wall_s"] and timing["slots"] >= 1
    assert f"({timing['overhead_pct']:.0f}% of wall)" in out
    assert timing["sensitivity_s"] > 0 and timing["test_s"] > 0 and timing["total_s"] > timing["wall_s"]


def test_export_reevaluates_and_reloads(finished, tmp_path):
    import keras

    import mutate  # noqa: F401 (registers the layers an exported model holds)
    from mutate.data import digits

    run_dir, _ = finished
    out = tmp_path / "best.keras"
    res = run(["export", str(run_dir), "--point", "0", "--out", str(out)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert out.is_file() and "exported" in res.stdout
    # the other commands are independent of each other: run at once
    started = {"lite": start(["export", str(run_dir), "--point", "0", "--out", str(tmp_path / "best.tflite")]),
               "sized": start(["pareto", str(run_dir), "--sizes"]),
               "again": start(["export", str(run_dir), "--point", "0", "--out", str(out)]),
               "missing": start(["export", str(run_dir), "--point", "99", "--out", str(tmp_path / "x.keras")]),
               "not_a_run": start(["pareto", str(tmp_path)])}
    front = json.loads((run_dir / "pareto.json").read_text())["front"]
    d = digits()
    acc = (keras.saving.load_model(out).predict(d.x_test, verbose=0).argmax(1) == d.y_test).mean()
    assert abs(acc - front[0]["test_accuracy"]) < 1e-6
    done = {k: finish(p) for k, p in started.items()}
    lite = done["lite"]
    assert lite.returncode == 0, lite.stderr[-3000:]
    line = next(s for s in lite.stdout.splitlines() if s.strip().startswith("litert file:"))
    litert_acc, keras_acc = (float(v) for v in re.search(r"accuracy (\d\.\d+) \(Keras (\d\.\d+)\)", line).groups())
    assert litert_acc == keras_acc and (tmp_path / "best.tflite").stat().st_size < 0.5 * 340_008
    sized = done["sized"]
    assert sized.returncode == 0, sized.stderr[-3000:]
    cached = json.loads((run_dir / "file_sizes.json").read_text())
    assert len(cached) == len(front) and all(0 < s["tflite_gzip"] < s["tflite"] for s in cached.values())
    assert "gzip(.tflite)" in sized.stdout
    again = done["again"]
    assert again.returncode == 2 and "pass --force" in again.stderr and "Traceback" not in again.stderr
    missing = done["missing"]
    assert missing.returncode == 2 and "--point 99: the front has" in missing.stderr
    assert not (tmp_path / "x.keras").exists()
    not_a_run = done["not_a_run"]
    assert not_a_run.returncode == 2 and "not a mutate run directory" in not_a_run.stderr


def test_a_bad_space_exits_2_with_one_line(tmp_path):
    res = run(["search", str(SPACE), "--set", "search.population=0", "--set", f"storage={tmp_path}"])
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == ["mutate: error: digits_mlp.yaml: search.population: expected an int "
                                               ">= 1, got 0"]
    assert not any(tmp_path.iterdir()), "a failed validation must not leave a run directory"


def test_sigkilled_driver_resumes_and_keeps_every_point(tmp_path):
    """In a folder whose path holds glob characters, which Ray Tune's restore globs unescaped (resumed through
    a link: `tests/test_embedded_ray.py::test_a_run_path_with_glob_characters_is_restored_through_a_plain_link`)."""
    storage = tmp_path / "runs [1]"
    proc = subprocess.Popen([*MUTATE, "search", str(SPACE), *SMALL, "--set", f"storage={storage}"], cwd=ROOT,
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    run_dir = storage / "digits_mlp"
    deadline = time.time() + 300
    while time.time() < deadline:
        if (run_dir / "points.jsonl").is_file() and len(rows(run_dir)) >= 4:
            break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started, mid-search
    proc.wait()
    before = {p["checkpoint"] for p in rows(run_dir)}
    assert len(rows(run_dir)) >= 4
    res = run(["search", "--resume", str(run_dir)])
    assert res.returncode == 0, res.stderr[-3000:]
    points = rows(run_dir)
    assert before <= {p["checkpoint"] for p in points}
    assert {p["step"] for p in points} == {50, 100, 150, 200, 250, 300}
    assert len({p["trial"] for p in points}) == 2
    last = {}
    for p in points:
        last[p["trial"]] = max(last.get(p["trial"], 0), p["step"])
    assert set(last.values()) == {300}, "every trial finished"
    assert "on the front" in res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs [1]"], "the resume's link is removed"


def test_pbt_with_room_for_every_trial_keeps_one_actor_per_trial_and_never_swaps(tmp_path):
    """Population 2 on 2 CPUs (tests/actor_reuse_probe.py, a pure-Python trainable): member 0 exploits member 1
    again and again. Plain Tune PBT makes a running trial yield its slot whenever another is paused (the
    exploited one restarting), which swaps actors (9-11 own-checkpoint resumes per run here, and some runs
    ran both trials on one actor); the runner's scheduler never yields when every trial has room, and an
    exploited trial restarts on its own actor."""
    res = subprocess.run([sys.executable, str(ROOT / "tests" / "actor_reuse_probe.py"), str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["exploits"] >= 1 and out["resumes"] == 0 and len(out["pids"]) == 2, out


# the same search as SMALL + a random strategy, started from Python (`mutate.run_search`, dict overrides)
API_SEARCH = """
import logging, os, sys, mutate
import numpy as np
sets = {"training.steps": 300, "training.report_every": 50, "search.population": 1, "model.hidden": [32, 32],
        "mutations.warmup_steps": 50, "mutations.window": 50, "search.perturbation_interval": 100,
        "budget.ratio": 0.5, "search.seed": 3, "storage": sys.argv[2]}
import ray  # Ray configures its loggers when imported: the search silences them and puts them back
env, level = dict(os.environ), logging.getLogger("ray").level
np.random.seed(123)
run = mutate.run_search(sys.argv[1], overrides=sets, strategy="random", progress=5)
print("RUN", run.dir, len(run.points()), len(run.pareto_front()))
# the caller's process as it was: NumPy's generator (the search seeds its own), the environment variables the
# search sets (PYTHONBREAKPOINT: Ray's), Ray's loggers
print("STATE", np.random.rand() == np.random.RandomState(123).rand(),
      all(os.environ.get(k) == env.get(k) for k in mutate.commands._CALLER_ENV),  # (TensorFlow's import sets others)
      logging.getLogger("ray").level == level)
# a second search in the same process (a notebook) starts its own Ray: its trials see its environment and its
# resources are checked (the first search's Ray, still up, once made this one wait forever)
try:
    mutate.run_search(sys.argv[1], overrides={**sets, "resources.cpus": 64}, progress=0)
except mutate.errors.BadInput as e:
    print("SECOND", e)
# a Ray the user started: its workers predate the search, and yet the trials import the module beside the YAML
# and run in this working directory (the loader opens a relative path)
os.chdir(sys.argv[3])
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
run = mutate.run_search("user.yaml", overrides={**sets, "training.steps": 100}, progress=0)
print("THIRD", len(run.points()))
ray.shutdown()
"""

USER_MODULE = """
import numpy as np
from mutate.data import Dataset
from mutate.search.builders import mlp as build

def load():
    with np.load("user_digits.npz") as z:  # relative: the trial's working directory must be the driver's
        return Dataset("user", z["x"][:1000], z["y"][:1000], z["x"][1000:], z["y"][1000:], num_classes=10)
"""


def test_seeded_random_strategy_with_one_trial_is_reproducible_from_the_cli_and_python(tmp_path):
    args = ["search", str(SPACE), *SMALL, "--strategy", "random", "--set", "search.population=1",
            "--set", "search.seed=3", "--set", f"storage={tmp_path / 'a'}"]
    # the two searches run at once (each starts its own embedded Ray), as two users' searches on one machine
    user = tmp_path / "user"
    user.mkdir()
    (user / "user_module_q.py").write_text(USER_MODULE)
    (user / "user.yaml").write_text("model: {builder: 'user_module_q:build', hidden: [16]}\n"
                                    "data: {name: 'user_module_q:load'}\nstorage: runs\n"
                                    "mutations: {layers: ['dense_*'], operators: {kmeans: {k: [4]}}}\n")
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(user / "user_digits.npz", x=(digits.data / 16).astype("float32"), y=digits.target)
    api = subprocess.Popen([sys.executable, "-c", API_SEARCH, str(SPACE), str(tmp_path / "b"), str(user)], cwd=ROOT,
                           env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first, second = finish(start(args)), finish(api)
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:] + second.stderr[-2000:]
    assert f"RUN {tmp_path / 'b' / 'digits_mlp'}" in second.stdout and "search done in" in second.stdout
    assert ("SECOND digits_mlp.yaml: resources.cpus: 64 per trial, but the Ray node on this machine has "
            in second.stdout), second.stdout[-2000:]
    assert "STATE True True True" in second.stdout and "THIRD 2" in second.stdout, second.stdout[-2000:]
    keys = ("step", "bytes", "genome", "val_accuracy")
    a = [{k: p[k] for k in keys} for p in rows(tmp_path / "a" / "digits_mlp")]
    b = [{k: p[k] for k in keys} for p in rows(tmp_path / "b" / "digits_mlp")]
    assert a == b and len(a) == 6 and any(p["genome"] for p in a)


# One search, four trials (tests/faulty.py:crashing_mlp): trial 0 raises whenever it is built, trial 1's loss
# becomes NaN at its 61st batch (its first report, at step 50, is fine), trial 2 raises the first time it is
# built, trial 3 is healthy.
FAULTY = [*SMALL, "--set", "training.steps=200", "--set", "search.population=4", "--set", "search.max_failures=1",
          "--set", "mutations.warmup_steps=100", "--set", "model.builder=tests.faulty:crashing_mlp",
          "--set", "model.crash_trial=0", "--set", "model.nan_trial=1", "--set", "model.nan_after=60",
          "--set", "model.flaky_trial=2"]


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    storage = tmp_path_factory.mktemp("faulty")
    res = run(["search", str(SPACE), *FAULTY, "--set", f"storage={storage}",
               "--set", f"model.marker={storage / 'crashed-once'}"])
    run_dir = storage / "digits_mlp"
    assert len(trial_ids(run_dir)) == 4, (res.stdout[-3000:], res.stderr[-3000:])
    return run_dir, res


def trial_ids(run_dir):
    return sorted(p.name.removeprefix("trial_") for p in run_dir.glob("trial_*"))


def failure_lines(res):
    return [line.strip() for line in res.stdout.splitlines() if line.startswith("  trial ") and " failed: " in line]


def test_a_trial_that_always_crashes_fails_with_its_reason_and_the_search_goes_on(faulty):
    run_dir, res = faulty
    assert res.returncode == 0, res.stderr[-3000:]  # the others finished: a usable front
    crash, nan, *healthy = trial_ids(run_dir)
    assert "2 of 4 trials failed" in res.stdout, res.stdout
    lines = failure_lines(res)
    assert len(lines) == 2 and lines[0] == (f"trial {crash} failed: BadInput: digits_mlp.yaml: model.builder: "
                                            "tests.faulty:crashing_mlp raised RuntimeError: crashing builder: "
                                            "trial 0 always fails on purpose"), lines
    # Ray's own record: retried once (search.max_failures=1), then ERROR, with the reason in error.txt
    error = (run_dir / f"trial_{crash}" / "error.txt").read_text()
    assert error.count("Failure # ") == 2 and "trial 0 always fails on purpose" in error.splitlines()[-1]
    progress = [line for line in res.stdout.splitlines() if line.startswith("[") and "trials" in line]
    assert "0 running, 2 done, 2 failed" in progress[-1], progress[-1]  # ERROR is what `failed` counts
    assert f"trial {crash} failed: BadInput" in res.stdout.split("search done")[0]  # reported when it failed
    assert crash not in {p["trial"] for p in rows(run_dir)}


def test_a_trial_whose_loss_becomes_nan_fails_once_and_writes_no_nan_point(faulty):
    import re

    run_dir, res = faulty
    crash, nan, *healthy = trial_ids(run_dir)
    lines = failure_lines(res)
    # NaN activations after dense_1 make every weight they reach NaN within the step (dense_1's kernel first, in
    # layer order), whatever the loss does on this CPU (a fused ReLU may hide them from the loss): the weight
    # check names the first one.
    reason = (r"weights became NaN/Inf by step 100: layer 'dense_1' kernel holds [\d,]+ NaN/Inf values "
              r"\(nan at \[0, 0\]\) \(genome dense\)")
    assert re.fullmatch(f"trial {nan} failed: NonFiniteLoss: not retried: {reason}", lines[1]), lines
    # the first failure is the NaN itself; its retry stops in setup, before any training
    error = (run_dir / f"trial_{nan}" / "error.txt").read_text()
    assert error.count("Failure # ") == 2, error[-3000:]
    assert re.search(f"NonFiniteLoss: {reason}", error), error[-3000:]
    assert re.fullmatch(reason, (run_dir / "diverged" / f"{nan}.txt").read_text())
    points = rows(run_dir)
    assert [p["step"] for p in points if p["trial"] == nan] == [50]  # reported before it diverged, never after
    for p in points:
        assert all(math.isfinite(p[k]) for k in ("val_accuracy", "score", "ratio")), p


def test_a_trial_that_crashes_once_is_retried_and_finishes(faulty):
    run_dir, res = faulty
    crash, nan, flaky, healthy = trial_ids(run_dir)
    assert (run_dir.parent / "crashed-once").exists(), "the builder never failed"
    assert not any(f"trial {flaky} failed" in line for line in failure_lines(res)), res.stdout
    error = (run_dir / f"trial_{flaky}" / "error.txt").read_text()  # Ray's record of the one failure
    assert error.count("Failure # ") == 1 and "failing once on purpose" in error, error[-3000:]
    assert max(p["step"] for p in rows(run_dir) if p["trial"] == flaky) == 200


def test_the_healthy_trials_finish_and_keep_their_front(faulty):
    import mutate

    run_dir, res = faulty
    crash, nan, *healthy = trial_ids(run_dir)
    run = mutate.load_run(run_dir)
    last = {}
    for p in run.points():
        last[p.trial] = max(last.get(p.trial, 0), p.step)
    assert {t: last.get(t) for t in healthy} == {t: 200 for t in healthy}, last
    assert run.pareto_front() and {p.trial for p in run.pareto_front()} <= {nan, *healthy}
    assert "on the front" in res.stdout and (run_dir / "pareto.json").is_file()
    assert "Traceback" not in res.stdout + res.stderr


def test_a_nan_weight_in_a_mutable_layer_is_one_line_and_exit_2(tmp_path):
    res = run(["search", str(SPACE), "--set", "model.builder=tests.faulty:nan_weight_mlp",
               "--set", "model.hidden=[32,32]", "--set", f"storage={tmp_path}"])
    assert res.returncode == 2, res.stderr[-3000:]
    assert res.stderr.strip().splitlines() == [
        "mutate: error: digits_mlp.yaml: model.builder: tests.faulty:nan_weight_mlp built a model whose mutable "
        "layer 'dense_2' kernel holds 1 NaN/Inf value (nan at [0, 0]); the operators cannot factor it"]
    assert "Traceback" not in res.stdout and not any(tmp_path.iterdir()), "nothing may be written"
