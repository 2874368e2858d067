"""The population search: Ray Tune's `Tuner` with `PopulationBasedTraining`, whose explore step is a
compression mutation. The only module that imports Ray.

Each trial runs a `mutate.search.trial.TrialRunner`. Its config holds the *wanted* genome; the checkpoint holds
the model (``.keras``, any architecture) and the *applied* genome, so an exploiting trial restores the
cloned trial's exact architecture, then splices in the mutation that explore appended, mid-training.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
import uuid
from types import SimpleNamespace
from pathlib import Path
from typing import Any, Callable, Mapping

from ray import tune
from ray.tune.schedulers import PopulationBasedTraining
from ray.tune.search import BasicVariantGenerator

from mutate.errors import BadInput, NonFiniteLoss
from mutate.search.genome import Genome, from_json, pending, to_json
from mutate.results.pareto import Point, front
from mutate.results.runs import append_point, divergence, read_points, record_divergence, write_spent
from mutate.search.space import Space, from_dict
from mutate.search.strategies import Strategy, settled, table_metric


def _use_backend(backend: str | None) -> None:
    """Run this actor's Keras on the driver's backend (``backend``; None: a run started by an earlier version,
    whose trials got it from their environment). A Ray the user started runs its workers in the environment
    it had then, which may name another backend: set before Keras is imported here.

    Raises:
        BadInput: Keras was imported in this worker on another backend already.
    """
    if backend is None:
        return
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = backend
        return
    import keras

    if keras.backend.backend() != backend:
        raise BadInput(f"this Ray worker imported Keras on {keras.backend.backend()!r} before the trial, but the "
                       f"search runs on {backend!r}: start Ray with KERAS_BACKEND={backend} in its environment")


def _space_of(config: dict[str, Any]) -> Space:
    path = Path(config["space_path"]) if config.get("space_path") else None
    return from_dict(config["space"], path=path)


STASH, STASH_MAX_BYTES = 2, 256 * 2**20
"""Runners an actor keeps after it saved them and switched trials (see `MutationTrainable.load_checkpoint`),
and the largest model (bytes of its variables) it keeps: a large model's extra copies could exhaust an
accelerator's memory, so those are restored from disk."""


class MutationTrainable(tune.Trainable):
    """A Ray Tune trainable: one report = ``training.report_every`` steps (the last one: to ``training.steps``),
    then measure and checkpoint.

    PBT pauses trials when the population outnumbers the slots, and an actor then switches between trials
    (``reuse_actors``). Restoring a checkpoint from disk rebuilds the model and retraces its training
    function (about a second for a small MLP); so an actor keeps the last `STASH` runners it saved before
    switching, and a checkpoint whose token one of them holds resumes on it (its optimizer state as it was,
    as a restore from disk restores it: checkpoints hold the optimizer's state; `tests/test_trial.py` checks
    both give the same weights, and the weights of a run that never paused).
    """

    _setup_s: float | None = None  # seconds the actor's `setup` took, until its first report carries them

    def setup(self, config: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        self._refuse_diverged(config)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        _use_backend(config.get("backend"))
        from mutate.search import builders
        from mutate.search.trial import TrialRunner

        self._runner_cls = TrialRunner
        self.space = _space_of(config)
        # the modules beside the YAML: an embedded Ray's workers inherit them through PYTHONPATH, a Ray the
        # user started before the search (its workers' environment fixed then) needs them added here
        builders.importable_beside(self.space)
        self._stash: dict[str, Any] = {}
        self._reported: list[tuple[int, float]] = []  # this actor's front of (bytes, validation metric)
        self._runner = TrialRunner(self.space, seed=config["member"]["seed"])
        self._shared = self._runner.shared()
        # the actor's start (Keras and its backend imported, data loaded, first model built): its first
        # report carries it, for the search's overhead line
        self._setup_s = time.perf_counter() - t0

    @property
    def runner(self) -> Any:
        """The trial's runner, built when first needed (a reused actor that restores a checkpoint next
        would throw a fresh model away)."""
        if self._runner is None:
            self._runner = self._runner_cls(self.space, seed=self.config["member"]["seed"], shared=self._shared)
        return self._runner

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Reuse this actor for another trial: keep the loaded data; stash the runner if it equals a saved
        checkpoint."""
        self._refuse_diverged(new_config)
        old = self._runner
        if old is not None and old.token is not None and _variable_bytes(old.model) <= STASH_MAX_BYTES:
            self._stash[old.token] = old
            while len(self._stash) > STASH:
                self._stash.pop(next(iter(self._stash)))
        self.config = new_config
        self._runner = None
        return True

    def _refuse_diverged(self, config: dict[str, Any]) -> None:
        """A retry of a trial that diverged fails at once: from its last checkpoint (same weights, data order
        and genome) it would only diverge again, so Ray's retries (`FailureConfig`) cost no training."""
        reason = divergence(Path(config["run_dir"]), self.trial_id)
        if reason is not None:
            raise NonFiniteLoss(f"not retried: {reason}")

    def step(self) -> dict[str, Any]:
        t = self.space.training
        try:
            member = self.config["member"]
            self.runner.set_learning_rate(member.get("learning_rate", t["learning_rate"]))
            self.runner.fraction = _fraction(self.config)
            self._train_to(min(self.runner.step + t["report_every"], t["steps"]), from_json(member["genome"]))
            result = self.runner.measure()
        except NonFiniteLoss as e:
            record_divergence(Path(self.config["run_dir"]), self.trial_id, str(e))
            raise
        if self._dominated(result):  # never on the validation front: its model is not written (a point that
            result["checkpoint"] = ""  # this actor reported before is as small and more accurate)
        else:
            # unique per report: after an exploit a trial may report the same step again with another model
            folder = (Path(self.config["run_dir"]) / "models" / self.trial_id
                      / f"step_{result['step']:07d}_{uuid.uuid4().hex[:8]}")
            self.runner.save(folder)
            result["checkpoint"] = str(folder.relative_to(self.config["run_dir"]))
        result["done"] = self.runner.step >= t["steps"]
        if self._setup_s is not None:
            result["actor_setup_s"], self._setup_s = round(self._setup_s, 2), None
        return result

    def _train_to(self, end: int, wanted: Genome) -> None:
        """Train to step ``end`` (the next report's; the last report's is ``training.steps``, which need not
        be a multiple of ``report_every``), splicing in each mutation of ``wanted`` at its planned step, also
        one planned between two reports (a warm-up that is no multiple of ``report_every``)."""
        if end <= self.runner.step:  # restored at its last step (a resumed trial whose end was not recorded)
            return
        while True:
            self.runner.apply(wanted)
            later = pending(self.runner.genome, wanted)
            due = later[0].step if later and later[0].step is not None and later[0].step < end else end
            self.runner.train(due - self.runner.step)
            if self.runner.step >= end:
                return

    def _dominated(self, result: dict[str, Any]) -> bool:
        """Whether a point this actor reported before (in any of the trials it ran) is at most as large and
        strictly better, or strictly smaller and as good: then ``result`` can never join the validation
        front (`mutate.results.pareto.front`), and no `export` or test evaluation will load its model.
        Equal points are kept (the front breaks their tie on the validation loss). The actor's own front
        of (bytes, metric) is updated with ``result`` otherwise."""
        higher = "val_accuracy" in result
        size, metric = int(result["bytes"]), float(result["val_accuracy" if higher else "val_perplexity"])

        def beats(a: tuple[int, float], b: tuple[int, float]) -> bool:
            better = a[1] > b[1] if higher else a[1] < b[1]
            return a[0] <= b[0] and (better or a[1] == b[1]) and (a[0] < b[0] or better)

        if any(beats(q, (size, metric)) for q in self._reported):
            return True
        self._reported = [q for q in self._reported if not beats((size, metric), q)] + [(size, metric)]
        return False

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        self.runner.save(checkpoint_dir, token=uuid.uuid4().hex, optimizer=True)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        import json

        token = json.loads((Path(checkpoint_dir) / "state.json").read_text()).get("token")
        stashed = self._stash.pop(token, None) if token else None
        if stashed is not None and stashed.token == token:  # what a restore from disk would leave, in place
            import keras

            stashed.seed = int(self.config["member"]["seed"])
            keras.utils.set_random_seed(stashed.seed)
            self._runner = stashed
            return
        if self._runner is None:  # the model comes from the checkpoint: build none first
            self._runner = self._runner_cls(self.space, seed=self.config["member"]["seed"], shared=self._shared,
                                            build=False)
        self._runner.restore(checkpoint_dir)


def _variable_bytes(model: Any) -> int:
    """Bytes of a model's variables (weights and optimizer state)."""
    import numpy as np

    variables = list(model.weights) + list(getattr(getattr(model, "optimizer", None), "variables", []) or [])
    return sum(int(np.prod(v.shape)) * np.dtype(str(v.dtype)).itemsize for v in variables)


_OUT: list[Callable[[str], None]] = [print]


def _emit(line: str) -> None:
    """Send a progress line to the console chosen by `run` (not pickled with the Tuner's callbacks)."""
    _OUT[0](line)


_STRATEGY: list[Strategy | None] = [None]
_SIGINT: list[Any] = [None]
"""The SIGINT handler Ray Tune installed for this search's `fit` (seen by `_Points.setup`): when `fit` returns
with another one in place, Tune's handler ran (Ctrl-C, or Tune's SIGUSR1 stop) and put back the one before it."""

SPENT_EVERY_S = 5.0
"""Seconds between the driver's records of the time the search has spent (``spent.txt``): a driver killed
outright (kill -9, a lost terminal) leaves a record at most this old, and a resumed search with
``search.time_budget_s`` counts the earlier sessions from it (Ray Tune restores its own remaining budget)."""


class _Points(tune.Callback):
    """Appends one row per reported result to ``points.jsonl``, tells the strategy what it measured, deletes
    the model checkpoint of every point that falls off the validation front, and prints one progress line per
    interval."""

    def __init__(self, run_dir: str, budget: int, interval: float, window: int = 0, iters: int = 0,
                 spent_before: float | None = None) -> None:
        self.run_dir, self.budget, self.interval, self.window = run_dir, budget, interval, window
        self.iters = iters  # reports in a whole trial: a finished trial that made fewer was stopped
        self.spent_before = spent_before  # earlier sessions' seconds (None: the time is not recorded)
        self.t0 = time.time()
        self.last = 0.0
        self.recorded = 0.0
        self.count = 0
        self.front: list[Point] = []

    def setup(self, **info: Any) -> None:
        """Called when a run starts or resumes: restart the clock; count the points and rebuild the front
        from those already reported (a resumed run's line read "points 0 | best under budget: none yet")."""
        self.t0 = time.time()
        self.last = 0.0
        self.recorded = self.t0
        self.front = []
        if threading.current_thread() is threading.main_thread():
            _SIGINT[0] = signal.getsignal(signal.SIGINT)
        rows = read_points(Path(self.run_dir))
        strategy = _STRATEGY[0]
        for row in rows:
            self._track(Point.from_row(row), delete=False)
            if strategy is not None:  # a resumed run: the table relearns what its trials observed
                self._observe(strategy, row)
        self.count = len(rows)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.interval > 0:  # 0: no progress lines, the last one included
            _emit(self.line(trials))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        # pid: the actor process that trained it (a reused actor keeps it); val_loss breaks front ties
        keys = ("step", "bytes", "ratio", "fits_budget", "score", "genome", "genome_summary", "val_accuracy",
                "val_loss", "val_perplexity", "checkpoint", "train_seconds", "backend", "unit", "litert_seconds",
                "learning_rate", "target", "pid", "actor_setup_s")
        row = {"trial": trial.trial_id, **{k: result[k] for k in keys if k in result},
               "time_this_iter_s": result.get("time_this_iter_s"), "wall_s": round(time.time() - self.t0, 3)}
        append_point(Path(self.run_dir), row)
        self.count += 1
        strategy = _STRATEGY[0]
        if strategy is not None:
            self._observe(strategy, row)
        self._track(Point.from_row(row), delete=True)

    def _observe(self, strategy: Any, row: dict[str, Any]) -> None:
        genome = from_json(row["genome"])
        strategy.observe(genome, table_metric(row), settled=settled(genome, row["step"], self.window),
                         step=row["step"])

    def _track(self, p: Point, delete: bool) -> None:
        """Keep the validation front; remove the checkpoints of points that are not (or no longer) on it."""
        lm = "val_perplexity" in p.row
        candidates = [*self.front, p]  # `front` keeps the earlier of equals (or the lower validation loss)
        self.front = front(candidates, higher_is_better=not lm)
        dropped = [q for q in candidates if not any(q is r for r in self.front)]
        if delete:
            for q in dropped:
                if q.checkpoint:
                    shutil.rmtree(Path(self.run_dir) / q.checkpoint, ignore_errors=True)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.time()
        if self.spent_before is not None and now - self.recorded >= SPENT_EVERY_S:
            self.recorded = now
            with contextlib.suppress(OSError):  # a full disk: the trials' own writes fail and say so
                write_spent(Path(self.run_dir), self.spent_before + now - self.t0)
        if self.interval > 0 and now - self.last >= self.interval:  # 0: no progress lines
            self.last = now
            _emit(self.line(trials))

    def best(self) -> Point | None:
        """The best validation metric under the whole budget (a niche's score counts against its own
        target), chosen as `Run.best_under_budget` chooses it after the search: the best front point that fits
        (of equals, the smallest, then the lowest validation loss, then the first reported)."""
        fits = [p for p in self.front if p.size <= self.budget]
        return fits[-1] if fits else None

    def line(self, trials: list) -> str:
        states = [t.status for t in trials]
        stopped = sum(1 for t in trials if t.status == "TERMINATED" and self.iters
                      and int((getattr(t, "last_result", None) or {}).get("training_iteration") or 0) < self.iters)
        best = "none yet"
        point = self.best()
        if point is not None:
            r = point.row
            metric = (f"val acc {r['val_accuracy']:.4f}" if "val_accuracy" in r
                      else f"val ppl {r['val_perplexity']:.1f}")
            best = f"{metric} at {r['bytes']:,} B ({r['ratio']:.3f} of dense)"
        done = f"{states.count('TERMINATED') - stopped} done, " + (f"{stopped} stopped early, " if stopped else "")
        return (f"[{time.time() - self.t0:6.0f}s] trials {states.count('RUNNING')} running, "
                f"{done}{states.count('ERROR')} failed | points {self.count} | "
                f"best under budget ({self.budget:,} B): {best}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        text = Path(trial.error_file).read_text() if trial.error_file else ""
        _emit(f"[{time.time() - self.t0:6.0f}s] trial {trial.trial_id} failed: {reason(text)}")


_HEADER = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Exit|Interrupt|Failure)\b.*?: ")


def reason(error: Any) -> str:
    """One line for a failed trial: its exception's line (the last ``SomeError: message`` line of the
    traceback; a message spanning lines, such as Keras' advice ending in example code, read as its last
    line of code before), without the exception's module path, at most 300 characters. A header that only
    introduces (``InvalidArgumentError: Graph execution error:``) gives way to the line after it; TensorFlow's
    node lines (``[[{{node ...}}]] [Op:...]``) are skipped. No such line: the last line."""
    lines = [line.strip() for line in str(error).strip().splitlines()
             if line.strip() and not line.strip().startswith("[[")]
    if not lines:
        return "unknown error"
    heads = [i for i, line in enumerate(lines) if _HEADER.match(line)]
    line = lines[heads[-1]] if heads else lines[-1]
    if heads and line.endswith(":") and heads[-1] + 1 < len(lines):
        line = lines[heads[-1] + 1]
    return re.sub(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Z]\w*: )", "", line)[:300]


def _trial_name(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


_RAY: dict[str, Any] = {"started": False, "checked": None}
"""``started``: the running Ray was started (or joined) by this process's search, and `stop_ray` ends it;
``checked``: the space whose resources were checked against a Ray the user had started."""


_RAY_LOGGERS = ("ray", "ray.tune", "ray.train", "ray.air")


def _init_ray(space: Space, address: str | None, verbose: bool) -> None:
    import ray

    if ray.is_initialized():
        if not _RAY["started"] and _RAY["checked"] is not space:  # the user's own ray.init: used as it is
            _RAY["checked"] = space
            _check_resources(space, ray.cluster_resources(), embedded=False)
            _RAY["resources"] = dict(ray.cluster_resources())
        return
    level = logging.INFO if verbose else logging.ERROR
    if not verbose:  # failures are reported by our own one-line progress output; `stop_ray` puts them back
        _RAY["levels"] = {name: logging.getLogger(name).level for name in _RAY_LOGGERS}
        for name in _RAY_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL)
    named = "--address" if address is not None else f"{space.where}: ray.address"
    address = address if address is not None else space.ray["address"]
    if address == "local":  # Ray's word for a new local instance: the embedded Ray below
        address = None
    if address:
        _reachable(address, named)
        try:
            ray.init(address=address, logging_level=level, log_to_driver=verbose, runtime_env=_runtime_env())
        except (ConnectionError, ValueError, TimeoutError) as e:  # no cluster there: the user's address
            raise BadInput(f"{named} {address}: cannot join a Ray cluster ({str(e).splitlines()[0]})") from None
    else:  # an embedded Ray on loopback, dashboard off unless asked for
        # Its processes inherit this environment, so trials get the backend without a runtime_env: a job
        # runtime_env makes Ray start a fresh worker per actor (about 0.7 s more on 2 cores) where it
        # could hand the actor a worker it prestarted during `ray.init`.
        os.environ.update(_runtime_env()["env_vars"])
        with _loopback_only():
            ray.init(include_dashboard=space.ray["dashboard"], dashboard_host="127.0.0.1", logging_level=level,
                     log_to_driver=verbose, _node_ip_address="127.0.0.1", configure_logging=True)
    _RAY["started"] = True
    _check_resources(space, ray.cluster_resources(), embedded=not address)
    _RAY["resources"] = dict(ray.cluster_resources())


def _reachable(address: str, named: str) -> None:
    """Fail fast when nothing listens at a HOST:PORT address: Ray itself retries such an address for about
    14 minutes (20 tries of ~41 s) before giving up.

    Raises:
        BadInput: the host does not resolve or refuses or ignores a connection within 5 s.
    """
    import socket

    where = address.split("://", 1)[-1]
    host, sep, port = where.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return  # `auto`, or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise BadInput(f"{named} {address}: cannot join a Ray cluster (nothing answers at {host}:{port}: "
                       f"{e.strerror or e})") from None


def stop_ray() -> None:
    """End the Ray a search of this process started (an embedded node) or joined, so that the next search in
    the same process (`mutate.run_search` twice in a notebook) starts its own: its trials then see the
    environment it set (``PYTHONPATH`` for the modules beside its YAML) and its resources are checked. A Ray
    the user started is left running."""
    if _RAY["started"]:
        import ray

        ray.shutdown()
        _RAY["started"] = False
    for name, level in _RAY.pop("levels", {}).items():
        logging.getLogger(name).setLevel(level)


def _check_resources(space: Space, have: dict[str, float], embedded: bool) -> None:
    """A trial asking for more than the Ray cluster has would wait forever (Tune keeps it PENDING): say so.
    On a cluster joined by address, an autoscaler may still add nodes, so only a warning line is printed.

    Raises:
        BadInput: an embedded Ray (this machine) lacks what one trial asks for.
    """
    r = space.resources
    asked = {"cpus": ("CPU", r["cpus"]), "gpus": ("GPU", r["gpus"]), "tpu": ("TPU", r["tpu"])}
    for key, (name, want) in asked.items():
        if want and want > have.get(name, 0):
            where = "node on this machine" if embedded else "cluster"
            message = f"resources.{key}: {want!r} per trial, but the Ray {where} has {have.get(name, 0):g} {name}"
            if embedded:
                raise BadInput(f"{space.where}: {message}: no trial could start")
            print(f"mutate: warning: {message}; trials wait until the cluster grows", file=sys.__stderr__, flush=True)


def _runtime_env() -> dict[str, Any]:
    """Every trial runs on the driver's Keras backend (``KERAS_BACKEND``, as Keras resolved it here), in the
    driver's working directory: Tune moves each trial into its trial folder unless ``RAY_CHDIR_TO_TRIAL_DIR``
    is 0, and a user's loader or builder that opened a relative path (found before the search, from where
    `mutate search` ran) then failed in every trial."""
    import keras

    return {"env_vars": {"KERAS_BACKEND": keras.backend.backend(), "RAY_CHDIR_TO_TRIAL_DIR": "0"}}


_SINGLE_NODE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def _loopback_only() -> Any:
    """Make the Ray started inside listen on 127.0.0.1 only.

    On Linux, Ray 2.60 turns a node address of 127.0.0.1 into the machine's outbound address
    (`ray._private.services.resolve_ip_for_localhost`), and its gRPC servers (GCS, raylet, object manager,
    workers) then listen on all interfaces. With Ray's single-node mode (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``,
    the default on macOS and Windows) the node address stays 127.0.0.1 and every server binds to it. Ray reads
    the variable when it is imported, so the constant is set here too; both are restored afterwards (the
    processes started meanwhile keep it in their environment), so a later ``ray.init(address=...)`` in this
    process can still join a cluster.
    """
    from ray._private import ray_constants

    saved_env, saved_flag = os.environ.get(_SINGLE_NODE), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_SINGLE_NODE] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_SINGLE_NODE, None)
        else:
            os.environ[_SINGLE_NODE] = saved_env


def _members(space: Space, strategy: Strategy) -> list[dict[str, Any]]:
    """The initial population: per trial a seed and the genome the strategy proposes for it."""
    s = space.search
    genomes = strategy.initial(s["population"])
    fractions = strategy.fractions(s["population"])
    rate = float(space.training["learning_rate"])
    return [{"index": i, "seed": s["seed"] * 1000 + i, "genome": to_json(g), "learning_rate": rate,
             "fraction": f} for i, (g, f) in enumerate(zip(genomes, fractions))]


def _fraction(config: dict[str, Any] | None) -> float:
    """A trial config's niche (``member.fraction``; 1.0 in runs recorded before niches)."""
    return float(((config or {}).get("member") or {}).get("fraction", 1.0))


class NichedPBT(PopulationBasedTraining):
    """PopulationBasedTraining whose exploit stays within a niche (``search.budget_fractions``): a trial
    aiming at half the budget clones the best trial of its own niche, never the best at the whole budget
    (which would always score higher and absorb every smaller lineage). With one niche it is plain PBT.

    It also tells `_PopulationVariants` when a paused trial will want an actor again (`keeps_actors`), so
    that Tune keeps the paused trial's actor for it instead of stopping it."""

    _niche: float | None = None
    _controller: Any = None
    _exploiting = False

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._controller = tune_controller
        _PBT[0] = self
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        self._controller = tune_controller
        _PBT[0] = self
        self._niche = _fraction(trial.config)
        try:
            decision = super().on_trial_result(tune_controller, trial, result)
        finally:
            self._niche = None
        # PBT yields a trial's slot at each perturbation while another trial is pending or paused; when the
        # cluster holds every unfinished trial at once, the waiting one has (or is starting) its own actor,
        # and a yield only hands this actor to it and stops the one starting (seen at a search's start)
        if decision == self.PAUSE and trial.status == "RUNNING" and _room_for_all(tune_controller.get_trials()):
            return self.CONTINUE
        return decision

    def _get_new_config(self, trial: Any, trial_to_clone: Any) -> tuple[dict, dict]:
        """The explored config of ``trial_to_clone`` (its genome plus a move, a perturbed learning rate); but
        while the clone has applied no mutation yet (the dense warm-up), ``trial`` keeps its own planned
        genome (plus the explored move): it takes the better dense weights, not another member's plan, so
        the first population's genomes (greedy's, the hedges) all get trained and compared once they have
        spliced. (Ray's exploit during the warm-up once replaced greedy's eventual winner by a copy of
        another member's genome on a difference of seed noise: experiments/README.md, sepnet.)"""
        state = self._trial_state.get(trial_to_clone)
        applied = (getattr(state, "last_result", None) or {}).get("genome")
        own = ((trial.config or {}).get("member") or {}).get("genome")
        clone_config = trial_to_clone.config or {}
        if applied == [] and own and "member" in clone_config:  # explore from the trial's own plan
            trial_to_clone = SimpleNamespace(config={**clone_config, "member": {**clone_config["member"],
                                                                                 "genome": own}})
        # the genomes the other members hold (the cloned trial's included): `Strategy.propose`'s peers
        _PEERS[0] = [from_json(((t.config or {}).get("member") or {}).get("genome")) for t in self._trial_state
                     if t is not trial]
        try:
            return super()._get_new_config(trial, trial_to_clone)
        finally:
            _PEERS[0] = []

    def _exploit(self, tune_controller: Any, trial: Any, trial_to_clone: Any) -> None:
        self._exploiting = True  # the exploiting trial is paused (its actor stopped) and restarts at once
        try:
            super()._exploit(tune_controller, trial, trial_to_clone)
        finally:
            self._exploiting = False

    def keeps_actors(self) -> bool:
        """True while an exploit pauses a trial or some trial is paused or pending: its actor will be wanted."""
        if self._exploiting:
            return True
        c = self._controller
        return c is not None and any(t.status in ("PAUSED", "PENDING") for t in c.get_trials())

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles the scheduler with the experiment
        state = self.__dict__.copy()
        state.pop("_controller", None)
        return state

    def _quantiles(self) -> tuple[list, list]:
        if self._niche is None:
            return super()._quantiles()
        everyone = self._trial_state
        self._trial_state = {t: st for t, st in everyone.items() if _fraction(t.config) == self._niche}
        try:
            return super()._quantiles()
        finally:
            self._trial_state = everyone


_PBT: list[NichedPBT | None] = [None]
_PEERS: list[list[Genome]] = [[]]


def _room_for_all(trials: list) -> bool:
    """Whether the cluster's resources hold every unfinished trial's at once."""
    import ray

    need: dict[str, float] = {}
    for t in trials:
        if t.status in ("RUNNING", "PENDING", "PAUSED"):
            for k, v in t.placement_group_factory.required_resources.items():
                need[k] = need.get(k, 0.0) + v
    have = ray.cluster_resources()
    return all(have.get(k, 0.0) >= v for k, v in need.items())


class _PopulationVariants(BasicVariantGenerator):
    """Tune's grid generator (the population), not finished while PBT will resume a paused trial.

    Tune keeps a stopped trial's actor for reuse only while the search may still want one: a trial staged
    to start, or a search algorithm that is not finished. A grid is finished once every member has been
    created, so a PBT exploit with no trial waiting for a slot (population <= slots: every exploit), or two
    trials pausing at once, stopped an actor, and the paused trial started a new one (a process, the
    TensorFlow import, a model build: ~6 s here), and some runs of the README job then ran on one actor to
    the end (each new actor was replaced by a reused one before it started). Reporting "not finished" while
    `NichedPBT` knows a paused trial will resume keeps the actor in Tune's cache until that trial takes it
    (with the no-yield rule of `NichedPBT.on_trial_result`: digits_mlp, population 2 on 2 CPUs, 45-49 s ->
    26-28 s; experiments/README.md, bench_search_overhead)."""

    def is_finished(self) -> bool:
        pbt = _PBT[0]
        return super().is_finished() and not (pbt is not None and pbt.keeps_actors())


def _explore(config: dict[str, Any]) -> dict[str, Any]:
    """PBT's explore: append the strategy's move to the exploiting trial's wanted genome (the clone's niche:
    PBT exploits within a niche) and perturb its learning rate (`Strategy.learning_rate`)."""
    strategy = _STRATEGY[0]
    if strategy is None:
        return config
    member = config["member"]
    genome = from_json(member["genome"])
    proposal = strategy.propose(genome, _fraction(config), peers=_PEERS[0])
    if proposal is not None:
        member = {**member, "genome": to_json((*genome, proposal))}
    if "learning_rate" in member:  # members of runs recorded before the rate was perturbed have none
        member = {**member, "learning_rate": strategy.learning_rate(float(member["learning_rate"]))}
    config["member"] = member
    return config


_ITERS: list[int | None] = [None]
"""Reports per trial of the search `run` runs: `reports`, or the stop rule a restored search recorded."""


def reports(space: Space) -> int:
    """Reports per trial: one every ``training.report_every`` steps, and one at ``training.steps``."""
    return math.ceil(space.training["steps"] / space.training["report_every"])


def burn_in(space: Space) -> int:
    """Reports before PBT may exploit a trial (``search.burn_in_steps``, 0 by default; ``auto``: the warm-up
    plus one blend window, when the first population's mutations have spliced). Before that every member is
    still training the dense model (or blending into its first genome), so an exploit ranks trials by their
    seeds' noise and may replace a seeded genome by a clone of another; waiting for ``auto`` did not help
    in the measurements (experiments/README.md, search_study: the winner unchanged within noise on two
    spaces, digits' hypervolume lower on 2 of 3 seeds: later exploits explore less), so it is opt-in."""
    b, m = space.search["burn_in_steps"], space.mutations
    steps = m["warmup_steps"] + m["window"] if b == "auto" else int(b)
    return math.ceil(steps / space.training["report_every"])


_GLOB = re.compile(r"[][*?]")


@contextlib.contextmanager
def _glob_safe(run_dir: Path):
    """The path Ray Tune restores ``run_dir`` from: Tune finds its saved state with `glob.glob` on the
    unescaped folder, so a path holding ``[``, ``]``, ``*`` or ``?`` restored no trial's state (a resumed
    search then failed every trial). Such a run is restored through a symbolic link of a plain name,
    ``.mutate-resume-NAME-HASH`` (the same at every resume of the run), made in the nearest enclosing folder
    whose path is plain (on a cluster's shared storage every node sees it) and removed afterwards (a session
    killed outright leaves it; the next resume reuses it); the trials still write into ``run_dir`` itself.

    Raises:
        BadInput: no such link can be made there (a read-only folder, a filesystem without links).
    """
    if not _GLOB.search(str(run_dir)):
        yield run_dir
        return
    import hashlib

    near = next(p for p in run_dir.parents if not _GLOB.search(str(p)))  # "/" at worst
    # one name per run, the same at every resume: Tune saves its trials' checkpoint paths under the folder it
    # restored from, and a PBT clone's path to another trial's checkpoint is not rewritten at the next resume
    digest = hashlib.sha256(str(run_dir).encode()).hexdigest()[:12]
    link = near / f".mutate-resume-{_GLOB.sub('_', run_dir.name)}-{digest}"
    try:
        if link.is_symlink() and link.resolve() == run_dir.resolve():
            link.unlink()  # left by a session killed outright
        link.symlink_to(run_dir, target_is_directory=True)
    except OSError as e:
        raise BadInput(f"{run_dir}: Ray Tune cannot restore a run whose path holds [, ], * or ?, and no link to it "
                       f"could be made in {near} ({e.strerror or e}): rename its folders, then resume") from None
    try:
        yield link
    finally:
        with contextlib.suppress(OSError):
            link.unlink()


def _tuner(space: Space, run_dir: Path, strategy: Strategy, budget: int, restore: bool,
           interval: float, spent_before: float | None = None, restore_from: Path | None = None) -> tune.Tuner:
    s, t, r = space.search, space.training, space.resources
    iters = _ITERS[0] = reports(space)
    trainable = tune.with_resources(MutationTrainable, {"cpu": r["cpus"], "gpu": r["gpus"],
                                                         **({"TPU": r["tpu"]} if r["tpu"] else {})})
    if restore:
        import pickle

        try:
            tuner = tune.Tuner.restore(str(restore_from or run_dir), trainable=trainable, resume_unfinished=True,
                                       resume_errored=True)
        except (pickle.UnpicklingError, EOFError) as e:  # cut short: the rest of the state is checked before
            raise BadInput(f"{run_dir / 'tuner.pkl'}: damaged ({type(e).__name__}: {e}); restore it from a copy "
                           "(`mutate pareto` and `mutate export` still read the run)") from None
        internal = getattr(tuner, "_local_tuner", None)  # the callbacks come back from tuner.pkl as pickled
        config = internal.get_run_config() if internal is not None else None
        stop = getattr(config, "stop", None)  # a run started by an earlier version stops where it said then
        if isinstance(stop, dict) and isinstance(stop.get("training_iteration"), int):
            _ITERS[0] = stop["training_iteration"]
        for cb in (config.callbacks if config is not None else None) or []:
            if isinstance(cb, _Points):
                cb.spent_before = spent_before
        return tuner
    scheduler = None
    perturb = max(1, s["perturbation_interval"] // t["report_every"])
    if strategy.explores:
        scheduler = NichedPBT(
            time_attr="training_iteration", perturbation_interval=perturb, burn_in_period=burn_in(space),
            quantile_fraction=s["quantile_fraction"], custom_explore_fn=_explore,
            resample_probability=0.0, log_config=False)
    import keras

    param_space = {"member": tune.grid_search(_members(space, strategy)), "space": space.raw,
                   "backend": keras.backend.backend(),
                   "space_path": str(space.path) if space.path else None, "run_dir": str(run_dir)}
    return tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(metric="score", mode="max", scheduler=scheduler, reuse_actors=True,
                                    search_alg=_PopulationVariants() if scheduler is not None else None,
                                    time_budget_s=s["time_budget_s"], trial_name_creator=_trial_name,
                                    trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(
            name=run_dir.name, storage_path=str(run_dir.parent), verbose=0,
            stop={"training_iteration": iters},
            callbacks=[_Points(str(run_dir), budget, interval, space.mutations["window"], iters, spent_before)],
            failure_config=tune.FailureConfig(max_failures=s["max_failures"]),
            # PBT may clone any trial's last checkpoint, even a finished trial's, and a resumed search restores
            # the one its last saved experiment state names (num_to_keep could delete it): keep them all while
            # the search runs; `mutate.results.runs.prune_checkpoints` removes the stale ones at the end.
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=perturb, checkpoint_at_end=True)))


def start_ray(space: Space, run_dir: Path, address: str | None = None, verbose: bool = False) -> None:
    """Start (or join) Ray before `run`, e.g. while the driver measures the sensitivity table; its console
    output goes to ``run_dir/ray_output.log`` unless ``verbose``."""
    if verbose:
        _init_ray(space, address, verbose)
        return
    with open(run_dir / "ray_output.log", "a", encoding="utf-8") as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        _init_ray(space, address, verbose)


def run(space: Space, *, run_dir: Path, budget: int, strategy: Strategy,
        resume: bool = False, address: str | None = None, verbose: bool = False, interval: float = 10.0,
        out: Callable[[str], None] = print, spent_before: float | None = None) -> dict[str, Any]:
    """Run (or resume) a search into ``run_dir``; returns a summary with wall time and compute time.

    Args:
        space: the validated space.
        run_dir: where points, models and Ray's state go (must be shared by every node of a cluster).
        budget: the size budget in bytes.
        strategy: proposes the first population and PBT's explore moves, and observes every report
            (`mutate.search.strategies`); it lives in this process only.
        resume: continue the search stored in ``run_dir`` (`Tuner.restore`).
        address: a Ray cluster to join (``auto`` or HOST:PORT); None starts an embedded local Ray.
        verbose: show Ray's own logs.
        interval: seconds between progress lines.
        out: where progress lines go.
        spent_before: seconds earlier sessions spent; with it, the time spent so far is recorded in
            ``spent.txt`` every `SPENT_EVERY_S` while the search runs (None: not recorded).

    Returns:
        ``wall_s``, ``compute_s``, ``points`` (reported points in the run), ``trials`` (how many),
        ``failed``: (trial id, one-line reason) for each trial that ended in error after its retries,
        ``actor_setup_s``: each actor's start in seconds (imports, data, first model; outside ``compute_s``),
        ``unfinished``: trials stopped before their last step (Ctrl-C, or ``search.time_budget_s``), and
        ``interrupted``: whether Tune stopped on a signal (Ctrl-C; None when that cannot be known: `fit` ran
        off the main thread, or Tune installed no handler). Tune's SIGINT handler stays installed after a
        `fit` that no signal stopped; the one before it is put back, so a Ctrl-C after the trials interrupts.
        On resume, ``compute_s`` and ``actor_setup_s`` count this session's reports only.
    """
    # Tune passes this to every trial, on any Ray (a user's own `ray.init` too): trials run in the driver's
    # working directory; `mutate.commands.search` puts the driver's environment back afterwards
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    if not verbose:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    _OUT[0] = out
    _STRATEGY[0] = strategy
    _PBT[0] = None
    earlier = len(read_points(run_dir)) if resume else 0  # a resumed run's earlier sessions are not timed here
    t0 = time.time()
    main = threading.current_thread() is threading.main_thread()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, getattr(signal, "SIGUSR1", None))
                if sig is not None} if main else {}
    _SIGINT[0] = None
    try:
        with _glob_safe(run_dir) if resume else contextlib.nullcontext(run_dir) as ray_dir:
            if verbose:
                _init_ray(space, address, verbose)
                results = _tuner(space, run_dir, strategy, budget, resume, interval, spent_before, ray_dir).fit()
            else:  # Ray's own console output goes to ray_output.log in the run directory; our lines still show
                with open(run_dir / "ray_output.log", "a", encoding="utf-8") as log, \
                        contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                    _init_ray(space, address, verbose)
                    results = _tuner(space, run_dir, strategy, budget, resume, interval, spent_before,
                                     ray_dir).fit()
    finally:
        during, after = _SIGINT[0], signal.getsignal(signal.SIGINT) if main else None
        for sig, handler in handlers.items():  # Tune leaves its handlers installed unless a signal came
            signal.signal(sig, handler)
    tune_handled = main and during is not None and during is not handlers.get(signal.SIGINT)
    interrupted = (after is not during) if tune_handled else None
    wall = time.time() - t0
    points = read_points(run_dir)
    failed = [(Path(r.path).name.removeprefix("trial_") if r.path else "?", reason(r.error))
              for r in results if r.error is not None]
    compute = sum(p.get("time_this_iter_s") or 0.0 for p in points[earlier:])
    setups = [p["actor_setup_s"] for p in points[earlier:] if "actor_setup_s" in p]
    # Tune stops gracefully on Ctrl-C (its own SIGINT handler) and at time_budget_s: fit() returns either way
    iters = _ITERS[0] or reports(space)
    unfinished = sum(1 for r in results
                     if r.error is None and int((r.metrics or {}).get("training_iteration") or 0) < iters)
    return {"wall_s": wall, "compute_s": compute, "points": len(points), "trials": len(results), "failed": failed,
            "actor_setup_s": setups, "unfinished": unfinished, "interrupted": interrupted,
            "slots": slots(space, _RAY.get("resources") or {})}


def slots(space: Space, resources: Mapping[str, float]) -> int:
    """Trials that run at once: the cluster's CPUs (and GPUs, when trials take some) divided by one trial's
    share, at most the population, at least 1 (``resources.cpus`` may be fractional: 1.5 of 2 CPUs is one
    slot, 0.5 four)."""
    r = space.resources
    cpus = float(resources.get("CPU") or 0) or float(os.cpu_count() or 1)
    fit = math.floor(cpus / r["cpus"] + 1e-9)
    if r.get("gpus"):
        fit = min(fit, math.floor(float(resources.get("GPU") or 0) / r["gpus"] + 1e-9))
    return max(1, min(space.search["population"], fit))
