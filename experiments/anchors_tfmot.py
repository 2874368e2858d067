"""TFMOT anchors (magnitude pruning, weight clustering) for LeNet-300-100, in their own virtual environment.

    .venv/bin/python experiments/anchors_tfmot.py [--quick] [--seeds N]

TensorFlow Model Optimization works only with tf_keras, so it is never a dependency of mutate: the first run
creates ``~/.cache/mutate/venv-tfmot`` (under ``$MUTATE_CACHE`` when set) and pip-installs the pinned
``TFMOT_PACKAGES`` there. The dataset is loaded here with mutate's own loaders and handed to
``_tfmot_worker.py`` as an .npz, so the worker needs neither scikit-learn nor mutate; the worker trains under
the shared ``protocol.py`` and returns rows that ``method_comparison.py`` merges through `run_tfmot`. As a
script it prints a table and writes ``anchors_tfmot.csv`` (``anchors_tfmot_quick.csv`` with --quick).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from mutate.data import CACHE, digits, fashion_mnist  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import protocol  # noqa: E402

TFMOT_PACKAGES = ("tensorflow-cpu==2.21.0", "tf_keras==2.21.0", "tensorflow-model-optimization==0.8.1")
"""Pinned: TFMOT 0.8.1 with the tf_keras that matches TensorFlow 2.21."""

VENV = CACHE / "venv-tfmot"
STAMP = ".mutate-install-complete"
"""Written into the venv after a successful install, holding the pins; without it the venv is rebuilt."""

WORKER = Path(__file__).resolve().with_name("_tfmot_worker.py")
FIELDS = ("model", "seed", "method", "level", "accuracy", "bits", "ratio")

Row = dict[str, Any]


def venv_python(venv: Path = VENV) -> Path:
    """The interpreter of ``venv``."""
    return venv / "bin" / "python"


def worker_env() -> dict[str, str]:
    """The environment of every process in the TFMOT venv: tf_keras as tf.keras, no C++ start-up chatter."""
    return {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` quietly, capturing its output."""
    return subprocess.run(cmd, capture_output=True, text=True, env=worker_env())


def _installed(venv: Path) -> bool:
    """Whether ``venv`` holds exactly the pinned versions (true for a finished install without our stamp)."""
    if not venv_python(venv).is_file():
        return False
    check = ("from importlib.metadata import version; import tensorflow_model_optimization, tf_keras; "
             f"print(' '.join(n + '==' + version(n) for n in {[p.split('==')[0] for p in TFMOT_PACKAGES]!r}))")
    done = _run([str(venv_python(venv)), "-c", check])
    return done.returncode == 0 and done.stdout.split() == list(TFMOT_PACKAGES)


def ensure_venv(venv: Path = VENV, *, log: Callable[[str], None] = print) -> Path:
    """Create ``venv`` with the pinned TFMOT packages unless its stamp says it is complete; returns its python.

    A venv without the stamp is checked for the pinned versions (a stamp is then written) or else deleted and
    installed again, so an interrupted install is redone.

    Raises:
        RuntimeError: ``python -m venv`` or ``pip install`` failed (names the command and pip's last line).
    """
    stamp = venv / STAMP
    pins = "\n".join(TFMOT_PACKAGES)
    if stamp.is_file() and stamp.read_text() == pins:
        return venv_python(venv)
    if not _installed(venv):
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        log(f"installing {' '.join(TFMOT_PACKAGES)} into {venv} (a few minutes, once)")
        for cmd in ([sys.executable, "-m", "venv", str(venv)],
                    [str(venv_python(venv)), "-m", "pip", "install", "--quiet", *TFMOT_PACKAGES]):
            done = _run(cmd)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
                raise RuntimeError(f"`{' '.join(cmd)}` failed: {last}")
    stamp.write_text(pins)
    return venv_python(venv)


def save_dataset(mode: str, path: Path) -> str:
    """Write the protocol's dataset for ``mode`` to ``path`` as an uncompressed .npz; returns its name."""
    data = digits() if protocol.LENET[mode].dataset == "digits" else fashion_mnist(flatten=True)
    np.savez(path, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test)
    return data.name


def run_worker(python: Path, npz: Path, mode: str, seeds: int, out: Path, log: Callable[[str], None]) -> None:
    """Run `_tfmot_worker.py` in the TFMOT venv, passing its progress lines on to ``log``.

    Raises:
        RuntimeError: the worker failed (with the tail of its stderr).
    """
    cmd = [str(python), str(WORKER), "--data", str(npz), "--mode", mode, "--seeds", str(seeds), "--out", str(out)]
    with tempfile.TemporaryFile("w+") as err:
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=worker_env()) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                log(line.rstrip())
        if proc.returncode != 0:
            err.seek(0)
            tail = "\n".join(err.read().strip().splitlines()[-15:])
            raise RuntimeError(f"TFMOT worker exited with {proc.returncode}:\n{tail}")


def run_tfmot(mode: str = "full", seeds: int = 1, *, log: Callable[[str], None] = print) -> list[Row]:
    """Train the TFMOT anchors of LeNet-300-100 under ``protocol.LENET[mode]`` for seeds 0 .. seeds-1.

    Args:
        mode: "full" (Fashion-MNIST) or "quick" (digits).
        seeds: number of seeds.
        log: receives the install line and the worker's progress lines.

    Returns:
        Rows with keys ``model`` ("lenet"), ``seed``, ``method`` (dense_tfkeras, tfmot_prune, tfmot_cluster),
        ``level`` (sparsity as float, k as int, "" for dense), ``accuracy`` (test), ``bits`` (stored bits of
        the whole model) and ``ratio`` (dense bits / bits).
    """
    if mode not in protocol.LENET:
        raise ValueError(f"mode must be one of {sorted(protocol.LENET)}, got {mode!r}")
    python = ensure_venv(log=log)
    with tempfile.TemporaryDirectory(prefix="mutate-tfmot-") as tmp:
        npz, out = Path(tmp) / "data.npz", Path(tmp) / "rows.json"
        save_dataset(mode, npz)
        run_worker(python, npz, mode, seeds, out, log)
        rows = json.loads(out.read_text())
    return [{key: row[key] for key in FIELDS} for row in rows]


def write_csv(rows: list[Row], path: Path) -> None:
    """Write ``rows`` with the columns of `FIELDS`."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def table(rows: list[Row]) -> str:
    """Mean ± std of accuracy per (method, level), with bits and ratio of the first seed."""
    lines = [f"{'method':<14} {'level':>5} {'accuracy':>17} {'bits':>10} {'ratio':>7}"]
    keys = list(dict.fromkeys((r["method"], r["level"]) for r in rows))
    for method, level in keys:
        group = [r for r in rows if r["method"] == method and r["level"] == level]
        acc = np.array([r["accuracy"] for r in group])
        lines.append(f"{method:<14} {str(level):>5} {acc.mean():>9.4f} ±{acc.std():.4f} {group[0]['bits']:>10} "
                     f"{group[0]['ratio']:>6.1f}x")
    return "\n".join(lines)


def main() -> None:
    """Run the anchors, print the table and write the CSV next to this script."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits and the quick protocol (a smoke run)")
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    p = protocol.LENET[mode]
    t0 = time.perf_counter()
    rows = run_tfmot(mode, args.seeds, log=lambda line: print(line, flush=True))
    out = Path(__file__).with_name("anchors_tfmot_quick.csv" if args.quick else "anchors_tfmot.csv")
    write_csv(rows, out)
    print(f"\n{p.dataset}, {args.seeds} seed(s); dense {p.dense_epochs} epochs, then {p.blend_epochs} + "
          f"{p.tune_epochs} at lr {p.tune_lr}; batch {p.batch}")
    print(table(rows))
    print(f"{time.perf_counter() - t0:.0f} s; rows in {out.name}")


if __name__ == "__main__":
    main()
