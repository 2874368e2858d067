"""The population search: Ray Tune's `Tuner` with `PopulationBasedTraining`, whose explore step is a
compression mutation. The only module that imports Ray.

Each trial runs a `mutate.trial.TrialRunner`. Its config holds the *wanted* genome; the checkpoint holds
the model (``.keras``, any architecture) and the *applied* genome, so an exploiting trial restores the
cloned trial's exact architecture, then splices in the mutation that explore appended, mid-training.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from ray import tune
from ray.tune.schedulers import PopulationBasedTraining

from mutate import policy
from mutate.genome import from_json, to_json
from mutate.runs import append_point, read_points
from mutate.space import Space, from_dict


def _space_of(config: dict[str, Any]) -> Space:
    path = Path(config["space_path"]) if config.get("space_path") else None
    return from_dict(config["space"], path=path)


class MutationTrainable(tune.Trainable):
    """A Ray Tune trainable: one report = ``training.report_every`` steps, then measure and checkpoint."""

    def setup(self, config: dict[str, Any]) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        from mutate.trial import TrialRunner

        self._runner_cls = TrialRunner
        self.space = _space_of(config)
        self.runner = TrialRunner(self.space, seed=config["member"]["seed"])

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Reuse this actor for another trial: keep the loaded data, start a fresh model."""
        self.config = new_config
        self.runner = self._runner_cls(self.space, seed=new_config["member"]["seed"], data=self.runner.data)
        return True

    def step(self) -> dict[str, Any]:
        t = self.space.training
        self.runner.apply(from_json(self.config["member"]["genome"]))
        self.runner.train(t["report_every"])
        result = self.runner.measure()
        # unique per report: after an exploit a trial may report the same step again with another model
        folder = (Path(self.config["run_dir"]) / "models" / self.trial_id
                  / f"step_{result['step']:07d}_{uuid.uuid4().hex[:8]}")
        self.runner.save(folder)
        result["checkpoint"] = str(folder.relative_to(self.config["run_dir"]))
        result["done"] = self.runner.step >= t["steps"]
        return result

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        self.runner.save(checkpoint_dir)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        self.runner.restore(checkpoint_dir)


_OUT: list[Callable[[str], None]] = [print]


def _emit(line: str) -> None:
    """Send a progress line to the console chosen by `run` (not pickled with the Tuner's callbacks)."""
    _OUT[0](line)


class _Points(tune.Callback):
    """Appends one row per reported result to ``points.jsonl`` and prints one progress line per interval."""

    def __init__(self, run_dir: str, budget: int, interval: float) -> None:
        self.run_dir, self.budget, self.interval = run_dir, budget, interval
        self.t0 = time.time()
        self.last = 0.0
        self.best: tuple[float, dict[str, Any]] | None = None
        self.count = 0

    def setup(self, **info: Any) -> None:
        """Called when a run starts or resumes: restart the clock and the counters."""
        self.t0 = time.time()
        self.last = 0.0

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        _emit(self.line(trials))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any) -> None:
        keys = ("step", "bytes", "ratio", "fits_budget", "score", "genome", "genome_summary", "accuracy",
                "val_accuracy", "perplexity", "val_perplexity", "checkpoint", "train_seconds")
        row = {"trial": trial.trial_id, **{k: result[k] for k in keys if k in result},
               "time_this_iter_s": result.get("time_this_iter_s"), "wall_s": round(time.time() - self.t0, 3)}
        append_point(Path(self.run_dir), row)
        self.count += 1
        if row["fits_budget"] and (self.best is None or row["score"] > self.best[0]):
            self.best = (row["score"], row)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.time()
        if now - self.last >= self.interval:
            self.last = now
            _emit(self.line(trials))

    def line(self, trials: list) -> str:
        states = [t.status for t in trials]
        best = "none yet"
        if self.best is not None:
            r = self.best[1]
            metric = f"acc {r['accuracy']:.4f}" if "accuracy" in r else f"ppl {r['perplexity']:.1f}"
            best = f"{metric} at {r['bytes']:,} B ({r['ratio']:.3f} of dense)"
        return (f"[{time.time() - self.t0:6.0f}s] trials {states.count('RUNNING')} running, "
                f"{states.count('TERMINATED')} done, {states.count('ERROR')} failed | points {self.count} | "
                f"best under budget ({self.budget:,} B): {best}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        reason = (trial.error_file and Path(trial.error_file).read_text().strip().splitlines() or ["?"])[-1]
        _emit(f"[{time.time() - self.t0:6.0f}s] trial {trial.trial_id} failed: {reason[:300]}")


def _trial_name(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def _init_ray(space: Space, address: str | None, verbose: bool) -> None:
    import ray

    if ray.is_initialized():
        return
    level = logging.INFO if verbose else logging.ERROR
    if not verbose:  # failures are reported by our own one-line progress output
        for name in ("ray", "ray.tune", "ray.train", "ray.air"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    address = address if address is not None else space.ray["address"]
    if address:
        ray.init(address=address, logging_level=level, log_to_driver=verbose)
    else:  # an embedded Ray on loopback, dashboard off unless asked for
        ray.init(include_dashboard=space.ray["dashboard"], dashboard_host="127.0.0.1", logging_level=level,
                 log_to_driver=verbose, _node_ip_address="127.0.0.1", configure_logging=True)


def _members(space: Space, allowed: dict[str, list[str]]) -> list[dict[str, Any]]:
    """The initial population: per trial a seed and a genome (PBT: one mutation planned after warm-up;
    random: a whole random genome with planned steps)."""
    s, mut, steps = space.search, space.mutations, space.training["steps"]
    rng = random.Random(s["seed"])
    out = []
    for i in range(s["population"]):
        if s["strategy"] == "random":
            genome = policy.random_genome(mut["operators"], allowed, rng, first_step=mut["warmup_steps"],
                                          last_step=max(mut["warmup_steps"], steps - mut["window"]))
        else:
            first = policy.draw(mut["operators"], allowed, rng)
            genome = (first.applied(mut["warmup_steps"]),) if first is not None else ()
        out.append({"index": i, "seed": s["seed"] * 1000 + i, "genome": to_json(genome)})
    return out


def _explore_fn(space: Space, allowed: dict[str, list[str]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    mut = space.mutations
    rng = random.Random(f"explore-{space.search['seed']}")

    def explore(config: dict[str, Any]) -> dict[str, Any]:
        genome = from_json(config["member"]["genome"])
        proposal = policy.propose(mut["operators"], allowed, genome, rng, mut["max_mutations"])
        if proposal is not None:
            config["member"] = {**config["member"], "genome": to_json((*genome, proposal))}
        return config

    return explore


def _tuner(space: Space, run_dir: Path, allowed: dict[str, list[str]], budget: int, restore: bool,
           interval: float) -> tune.Tuner:
    s, t, r = space.search, space.training, space.resources
    iters = t["steps"] // t["report_every"]
    trainable = tune.with_resources(MutationTrainable, {"cpu": r["cpus"], "gpu": r["gpus"],
                                                         **({"TPU": r["tpu"]} if r["tpu"] else {})})
    if restore:
        return tune.Tuner.restore(str(run_dir), trainable=trainable, resume_unfinished=True, resume_errored=True)
    scheduler = None
    perturb = max(1, s["perturbation_interval"] // t["report_every"])
    if s["strategy"] == "pbt":
        scheduler = PopulationBasedTraining(
            time_attr="training_iteration", perturbation_interval=perturb,
            quantile_fraction=s["quantile_fraction"], custom_explore_fn=_explore_fn(space, allowed),
            resample_probability=0.0, log_config=False)
    param_space = {"member": tune.grid_search(_members(space, allowed)), "space": space.raw,
                   "space_path": str(space.path) if space.path else None, "run_dir": str(run_dir)}
    return tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(metric="score", mode="max", scheduler=scheduler, reuse_actors=True,
                                    time_budget_s=s["time_budget_s"], trial_name_creator=_trial_name,
                                    trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(
            name=run_dir.name, storage_path=str(run_dir.parent), verbose=0,
            stop={"training_iteration": iters},
            callbacks=[_Points(str(run_dir), budget, interval)],
            failure_config=tune.FailureConfig(max_failures=s["max_failures"]),
            # PBT may clone any trial's last checkpoint, even a finished trial's: keep them all.
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=perturb, checkpoint_at_end=True)))


def run(space: Space, *, run_dir: Path, allowed: dict[str, list[str]], budget: int, resume: bool = False,
        address: str | None = None, verbose: bool = False, interval: float = 10.0,
        out: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) a search into ``run_dir``; returns a summary with wall time and compute time.

    Args:
        space: the validated space.
        run_dir: where points, models and Ray's state go (must be shared by every node of a cluster).
        allowed: layer name -> operators allowed on it (see `mutate.policy.targets`).
        budget: the size budget in bytes.
        resume: continue the search stored in ``run_dir`` (`Tuner.restore`).
        address: a Ray cluster to join (``auto`` or HOST:PORT); None starts an embedded local Ray.
        verbose: show Ray's own logs.
        interval: seconds between progress lines.
        out: where progress lines go.
    """
    if not verbose:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    _OUT[0] = out
    t0 = time.time()
    if verbose:
        _init_ray(space, address, verbose)
        results = _tuner(space, run_dir, allowed, budget, resume, interval).fit()
    else:  # Ray's own console output goes to ray_output.log in the run directory; our lines still show
        with open(run_dir / "ray_output.log", "a", encoding="utf-8") as log, \
                contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            _init_ray(space, address, verbose)
            results = _tuner(space, run_dir, allowed, budget, resume, interval).fit()
    wall = time.time() - t0
    points = read_points(run_dir)
    errors = [str(r.error).strip().splitlines()[-1][:200] for r in results if r.error is not None]
    compute = sum(p.get("time_this_iter_s") or 0.0 for p in points)
    return {"wall_s": wall, "compute_s": compute, "points": len(points), "errors": errors}
