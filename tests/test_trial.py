"""TrialRunner: mutations spliced mid-training, tightening, and a restore across genomes (no Ray)."""

from pathlib import Path

import math
import numpy as np
import pytest

from mutate.search import space as spaces
from mutate.search.genome import Mutation
import mutate
from mutate.search.trial import TrialRunner
from tests.helpers import state

SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "digits_mlp.yaml"


@pytest.fixture(scope="module")
def space():
    return spaces.load(SPACE, ["mutations.window=20", "mutations.frequency=5", "model.hidden=[32, 32]"])


def test_mutation_blends_then_splices_then_tightens(space):
    r = TrialRunner(space, seed=0)
    r.train(30)
    dense = r.measure()
    assert dense["genome_summary"] == "dense" and dense["ratio"] == 1.0 and not dense["fits_budget"]
    assert dense["score"] < -1
    g = (Mutation("dense_1", "low_rank", {"rank": 4}),)
    r.apply(g)
    assert mutate.kernel(r.model, "dense_1").state == "blending" and r.genome[0].step == 30
    r.train(20)
    assert mutate.kernel(r.model, "dense_1").state == "spliced" and r.model.get_layer("dense_1").kernel is None
    spliced = r.measure()
    assert spliced["bytes"] < dense["bytes"]
    r.apply((*g, Mutation("dense_1", "low_rank", {"rank": 2})))
    r.train(20)
    assert tuple(state(r.model, "dense_1").packed["left"].shape) == (64, 2)
    assert r.measure()["genome_summary"] == "dense_1:low_rank(r=2)"


def test_planned_mutations_wait_for_their_step(space):
    r = TrialRunner(space, seed=0)
    planned = (Mutation("logits", "pruning", {"sparsity": 0.5}, step=40),)
    assert r.apply(planned) == [] and r.genome == ()
    r.train(40)
    assert len(r.apply(planned)) == 1 and r.genome[0].step == 40


def test_restore_takes_another_trials_architecture_and_weights(space, tmp_path):
    donor = TrialRunner(space, seed=1)
    donor.train(10)
    donor.apply((Mutation("dense_2", "kmeans", {"k": 4}), Mutation("dense_1", "low_rank", {"rank": 4})))
    donor.train(10)  # mid-blend: alpha and step are part of the checkpoint
    donor.save(tmp_path / "ck")
    x = donor.x_val[:16]
    expected = donor.model.predict(x, verbose=0)

    clone = TrialRunner(space, seed=2)
    clone.train(5)
    clone.restore(tmp_path / "ck")
    assert clone.genome == donor.genome and clone.step == donor.step == 20
    assert [type(layer).__name__ for layer in clone.model.layers] == [type(layer).__name__ for layer in donor.model.layers]
    np.testing.assert_array_equal(clone.model.predict(x, verbose=0), expected)
    assert state(clone.model, "dense_1").current_alpha() == state(donor.model, "dense_1").current_alpha()
    clone.apply((*donor.genome, Mutation("logits", "pruning", {"sparsity": 0.9})))
    clone.train(30)
    assert clone.measure()["genome_summary"] == "dense_2:kmeans(k=4) dense_1:low_rank(r=4) logits:pruning(s=0.9)"


# Whether a NaN kernel makes the loss NaN depends on the CPU's kernels: oneDNN's fused MatMul+BiasAdd+ReLU on
# AVX-512 maps NaN to 0 (the model then trains at chance level with a finite loss), AVX2 machines keep NaN. A
# linear activation keeps NaN on every CPU, so the two parameters cover both paths on any one machine; the
# weight check must name the weight either way.
@pytest.mark.parametrize("activation", ["relu", "linear"])
def test_a_nan_weight_stops_the_trial_within_one_report_whatever_the_kernel_does(activation):
    from mutate.search.trial import NonFiniteLoss

    r = TrialRunner(spaces.load(SPACE, ["model.hidden=[16]", f"model.activation={activation}"]), seed=0)
    kernel = r.model.get_layer("dense_1").kernel
    kernel.assign(np.full(kernel.shape, np.nan, np.float32))
    with pytest.raises(NonFiniteLoss, match=r"^weights became NaN/Inf by step 20: layer 'dense_1' kernel holds "
                                            r"1,024 NaN/Inf values \(nan at \[0, 0\]\) \(genome dense\)$"):
        r.train(20)


@pytest.mark.filterwarnings("ignore:The model does not have any trainable weights")
def test_a_nan_loss_with_finite_weights_stops_the_trial_with_the_reason():
    from mutate.search.trial import NonFiniteLoss

    # Frozen weights cannot turn NaN, so only the loss check can see this one (NaN inputs; a linear activation
    # keeps the NaN on every CPU, see above).
    r = TrialRunner(spaces.load(SPACE, ["model.hidden=[16]", "model.activation=linear"]), seed=0)
    r.model.trainable = False
    r._compile()
    r.x = np.full_like(r.x, np.nan)
    with pytest.raises(NonFiniteLoss, match=r"^training loss became nan at step 20 \(genome dense\)$"):
        r.train(20)


def test_a_learning_rate_that_blows_up_stops_the_trial_within_one_report():
    from mutate.search.trial import NonFiniteLoss

    r = TrialRunner(spaces.load(SPACE, ["model.hidden=[16]", "training.optimizer=sgd"]), seed=0)
    r.model.optimizer.learning_rate.assign(1e30)  # beyond what a space accepts: weights overflow in a few steps
    with pytest.raises(NonFiniteLoss, match=r"^(weights became NaN/Inf|training loss became (nan|inf)) "
                                            r"(by|at) step 20"):
        r.train(20)


def test_a_tpu_trial_builds_under_tpu_strategy_and_compiles_with_steps_per_execution(monkeypatch):
    """No TPU here: TensorFlow's TPU calls are stubbed (a one-device strategy stands in for TPUStrategy); the
    resolver, connect and initialise run in order, the model is built in the strategy's scope, compiled with
    training.steps_per_execution, and a blend inside executions of 8 still reaches alpha 0 at its step."""
    import tensorflow as tf

    from mutate.errors import BadInput
    from mutate.search.devices import make_strategy

    with pytest.raises(BadInput, match="resources.tpu"):  # no TPU on this machine: one line
        make_strategy("tpu", backend="tensorflow")
    calls, resolver, stand_in = [], object(), tf.distribute.OneDeviceStrategy("/cpu:0")
    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", lambda: calls.append("resolve") or resolver)
    monkeypatch.setattr(tf.config, "experimental_connect_to_cluster", lambda r: calls.append(("connect", r)))
    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system", lambda r: calls.append(("init", r)))
    monkeypatch.setattr(tf.distribute, "TPUStrategy", lambda r: calls.append(("strategy", r)) or stand_in)
    sp = spaces.load(SPACE, ["mutations.window=20", "mutations.frequency=5", "model.hidden=[32, 32]",
                             "resources.tpu=1", "training.steps_per_execution=8", "training.report_every=48"])
    r = TrialRunner(sp, seed=0)
    monkeypatch.undo()  # Keras checks isinstance(strategy, tf.distribute.TPUStrategy) when it trains
    assert calls == ["resolve", ("connect", resolver), ("init", resolver), ("strategy", resolver)]
    assert r.strategy is stand_in and r.model.steps_per_execution == 8
    r.apply((Mutation("dense_1", "low_rank", {"rank": 4}, None),))
    r.train(48)  # the window (20 steps from step 0, updates every 5) inside executions of 8
    assert r.step == 48 and r.genome[-1].layer == "dense_1" and not mutate.blending_kernels(r.model)
    assert mutate.kernel(r.model, "dense_1").state == "spliced"


def test_an_actor_resumes_a_stashed_runner_as_a_restore_from_disk_would(space, tmp_path):
    """A reused actor keeps the runners it saved before switching trials; resuming one of those checkpoints
    takes the stashed runner (no rebuild, no retrace) and trains on exactly as a restore from disk does, and
    both as a trial that never paused (the checkpoint holds the optimizer's state)."""
    def config(seed):
        return _actor_config(seed, tmp_path)

    t = _actor(space, tmp_path)
    t.runner.apply((Mutation("dense_1", "low_rank", {"rank": 4}, None),))
    t.runner.train(30)  # the blend ends at step 20: spliced, recompiled
    t.runner.train(10)  # the optimizer's moments fill in; the checkpoint holds them
    t.save_checkpoint(str(tmp_path / "a"))
    assert (tmp_path / "a" / "optimizer.npz").is_file()
    saved = t.runner
    t.reset_config(config(1))  # the actor runs another trial: a fresh model, built when first used
    assert t._runner is None and t.runner is not saved and t.runner.step == 0
    t.runner.train(5)
    t.reset_config(config(0))
    t.load_checkpoint(str(tmp_path / "a"))  # trial 0 resumes here: the stashed runner
    assert t.runner is saved and t.runner.step == 40
    t.runner.train(10)
    from_disk = TrialRunner(space, seed=0, shared=t._shared, build=False)
    from_disk.restore(tmp_path / "a")
    from_disk.train(10)
    never_paused = TrialRunner(space, seed=0, shared=t._shared)
    never_paused.apply((Mutation("dense_1", "low_rank", {"rank": 4}, None),))
    for n in (30, 10, 10):
        never_paused.train(n)
    for a, b, c in zip(t.runner.model.weights, from_disk.model.weights, never_paused.model.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), atol=1e-5)
    t.reset_config(config(0))
    t.load_checkpoint(str(tmp_path / "a"))  # taken once: now restored from disk
    assert t.runner is not saved and t.runner.step == 40 and t.runner.genome == from_disk.genome


def test_a_large_model_is_not_stashed(space, monkeypatch, tmp_path):
    from mutate.search import runner as search_runner

    monkeypatch.setattr(search_runner, "STASH_MAX_BYTES", 1000)  # the digits MLP holds ~80 KB of variables
    t = _actor(space, tmp_path)
    t.save_checkpoint(str(tmp_path / "a"))
    t.reset_config(dict(t.config))
    assert t._stash == {}
    t.load_checkpoint(str(tmp_path / "a"))
    assert t.runner.model is not None and t.runner.step == 0


def test_a_trial_trains_at_its_members_learning_rate_without_retracing(space, tmp_path):
    """PBT's explore perturbs a member's learning rate: the actor sets it on the optimizer's rate variable
    before each report (no retrace), and the report records it."""
    t = _actor(space, tmp_path)
    t.runner.train(5)
    traced = t.runner.model.train_function
    t.config = {**t.config, "member": {**t.config["member"], "learning_rate": 0.02}}
    result = t.step()
    assert result["learning_rate"] == 0.02 and t.runner.model.train_function is traced
    assert float(np.asarray(t.runner.model.optimizer.learning_rate)) == pytest.approx(0.02)

    overrides = ["mutations.window=20", "mutations.frequency=5", "model.hidden=[32, 32]"]
    runners = [TrialRunner(spaces.load(SPACE, [*overrides, f"training.learning_rate={lr}"]), seed=3)
               for lr in (0.02, 0.001)]
    moved = TrialRunner(space, seed=3)
    moved.set_learning_rate(0.02)
    for r in (*runners, moved):
        r.train(20)
    weights = [[np.asarray(w) for w in r.model.weights] for r in (*runners, moved)]
    for a, b in zip(weights[0], weights[2]):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert any(np.abs(a - b).max() > 1e-3 for a, b in zip(weights[1], weights[2]))


def test_explore_appends_the_move_and_perturbs_the_cloned_learning_rate(monkeypatch):
    from mutate.search import runner
    from mutate.search.genome import from_json, to_json
    from mutate.search.strategies import PBT
    from tests.test_strategies import ctx

    genome = (Mutation("a", "low_rank", {"rank": 32}, 100),)
    monkeypatch.setattr(runner, "_STRATEGY", [PBT(ctx(1000, learning_rate_factors=(0.5,)))])  # over budget
    out = runner._explore({"member": {"seed": 1, "genome": to_json(genome), "learning_rate": 0.004}})
    assert out["member"]["learning_rate"] == pytest.approx(0.002) and out["member"]["seed"] == 1
    assert len(from_json(out["member"]["genome"])) == 2
    old = runner._explore({"member": {"seed": 1, "genome": to_json(genome)}})  # a run from before the rate moved
    assert "learning_rate" not in old["member"]


def test_pbt_exploits_within_a_niche():
    """With budget fractions, a trial's quantiles are computed among the trials of its own niche."""
    from types import SimpleNamespace

    from mutate.search.runner import NichedPBT

    class Trial:
        def __init__(self, fraction):
            self.config = {"member": {"fraction": fraction}}

        def is_finished(self):
            return False

    def trial(fraction, score):
        return Trial(fraction), SimpleNamespace(last_score=score)

    pbt = NichedPBT(time_attr="training_iteration", perturbation_interval=1, quantile_fraction=0.25,
                    custom_explore_fn=lambda c: c)
    whole = [trial(1.0, s) for s in (0.90, 0.91, 0.92, 0.93)]
    half = [trial(0.5, s) for s in (0.80, 0.85)]
    pbt._trial_state = dict(whole + half)
    lower, upper = pbt._quantiles()  # the whole population: the half-budget trials are the worst
    assert lower == [half[0][0], half[1][0]]
    pbt._niche = 0.5
    assert pbt._quantiles() == ([half[0][0]], [half[1][0]])
    pbt._niche = 1.0
    assert pbt._quantiles() == ([whole[0][0]], [whole[3][0]])
    assert len(pbt._trial_state) == 6  # restored


def test_a_members_score_counts_against_its_niches_target(space):
    r = TrialRunner(space, seed=0)
    r.apply((Mutation("dense_1", "kmeans", {"k": 4}), Mutation("dense_2", "kmeans", {"k": 4}),
             Mutation("logits", "kmeans", {"k": 4})))
    r.train(25)
    whole = r.measure()
    assert whole["fits_budget"] and whole["score"] == whole["val_accuracy"] and whole["target"] == r.budget
    assert math.isfinite(whole["val_loss"]) and whole["val_loss"] > 0  # breaks front ties (pareto.front)
    r.fraction = whole["bytes"] / r.budget / 2  # a niche at half this model's size
    half = r.measure()
    assert half["fits_budget"] and half["score"] < -1 and half["target"] < whole["bytes"]


def _actor_config(seed, tmp_path):
    from mutate.search.genome import to_json

    return {"member": {"seed": seed, "genome": to_json(())}, "run_dir": str(tmp_path)}


def _actor(space, tmp_path):
    """A search actor's trainable (its methods, without Ray's actor) set up for trial seed 0."""
    from mutate.search.runner import MutationTrainable

    t = object.__new__(MutationTrainable)
    t._refuse_diverged = lambda c: None
    t.space, t._runner_cls, t._stash, t.config = space, TrialRunner, {}, _actor_config(0, tmp_path)
    t._reported = []
    t._trial_info = None  # Ray's trial id: "default"
    t._runner = TrialRunner(space, seed=0)
    t._shared = t._runner.shared()
    return t


def test_an_actor_writes_no_model_for_a_report_its_earlier_points_dominate():
    """A report whose point an earlier report of the same actor dominates can never be on the validation
    front: its model is not written (each write cost 20-70 ms of a 0.3 s digits report). Ties are kept."""
    from mutate.search.runner import MutationTrainable

    t = object.__new__(MutationTrainable)
    t._reported = []
    acc = [(1000, 0.80), (1000, 0.80), (1000, 0.79), (1000, 0.85), (900, 0.70), (950, 0.70), (1100, 0.85), (800, 0.9)]
    assert [t._dominated({"bytes": b, "val_accuracy": a}) for b, a in acc] == [
        False, False, True, False, False, True, True, False]
    assert sorted(t._reported) == [(800, 0.9)]  # its own front: the last point dominates every other
    t._reported = []
    ppl = [(1000, 50.0), (1000, 60.0), (900, 40.0), (1000, 45.0)]  # perplexity: lower is better
    assert [t._dominated({"bytes": b, "val_perplexity": p}) for b, p in ppl] == [False, True, False, True]


def test_the_progress_line_shows_the_best_validation_accuracy_under_the_whole_budget(tmp_path, monkeypatch):
    """A niche member under the budget but over its own target scores below every fitting score; the
    progress line still ranks points by validation accuracy under the whole budget."""
    from mutate.search import runner

    monkeypatch.setattr(runner, "_STRATEGY", [None])
    points = runner._Points(str(tmp_path), budget=1000, interval=1e9)
    trial = type("T", (), {"trial_id": "t0"})()
    for i, (acc, score, size) in enumerate([(0.90, -1.5, 900), (0.85, 0.85, 800), (0.95, -2.0, 1100)]):
        points.on_trial_result(0, [], trial, {"step": i, "bytes": size, "ratio": 0.09, "fits_budget": size <= 1000,
                                              "score": score, "genome": "[]", "genome_summary": "dense",
                                              "val_accuracy": acc})
    assert "val acc 0.9000 at 900 B" in points.line([])


def test_the_progress_line_agrees_with_the_run_on_ties_counts_a_resumed_run_and_names_stopped_trials(
        tmp_path, monkeypatch):
    """Of two points with the same validation accuracy the line named the first reported where
    `Run.best_under_budget` names the smaller; a resumed run read "points 0 | ... none yet"; trials the time
    budget stopped were counted "done"."""
    from types import SimpleNamespace

    from mutate.results.report import load_run
    from mutate.search import runner

    monkeypatch.setattr(runner, "_STRATEGY", [None])
    points = runner._Points(str(tmp_path), budget=1000, interval=1e9, iters=4)
    trial = SimpleNamespace(trial_id="t0")
    for step, size in [(1, 900), (2, 700), (3, 800)]:
        points.on_trial_result(0, [], trial, {"step": step, "bytes": size, "ratio": size / 10000, "fits_budget": True,
                                              "score": 0.9, "genome": "[]", "genome_summary": "dense",
                                              "val_accuracy": 0.9})
    assert "val acc 0.9000 at 700 B" in points.line([])
    (tmp_path / "space.json").write_text('{"space": {"budget": {"bytes": 1000}}}')
    assert load_run(tmp_path).best_under_budget().size == 700
    resumed = runner._Points(str(tmp_path), budget=1000, interval=1e9, iters=4)
    resumed.setup()
    trials = [SimpleNamespace(status="TERMINATED", last_result={"training_iteration": 4}),
              SimpleNamespace(status="TERMINATED", last_result={"training_iteration": 2}),
              SimpleNamespace(status="RUNNING", last_result={})]
    line = resumed.line(trials)
    assert "trials 1 running, 1 done, 1 stopped early, 0 failed | points 3 |" in line, line
    assert "val acc 0.9000 at 700 B" in line


def test_the_run_keeps_the_checkpoint_of_the_lower_loss_point_among_equals(tmp_path, monkeypatch):
    """One genome reporting the same size and validation accuracy twice: the front (and the checkpoint kept
    on disk) follows the lower validation loss, as `mutate.results.pareto.front` does after the search."""
    from mutate.search import runner

    monkeypatch.setattr(runner, "_STRATEGY", [None])
    points = runner._Points(str(tmp_path), budget=1000, interval=1e9)
    trial = type("T", (), {"trial_id": "t0"})()
    for step, loss in [(1, 0.5), (2, 0.3), (3, 0.4)]:
        (tmp_path / f"ck{step}").mkdir()
        points.on_trial_result(0, [], trial, {"step": step, "bytes": 900, "ratio": 0.09, "fits_budget": True,
                                              "score": 0.9, "genome": "[]", "genome_summary": "dense",
                                              "val_accuracy": 0.9, "val_loss": loss, "checkpoint": f"ck{step}"})
    assert [p.step for p in points.front] == [2]
    assert sorted(d.name for d in tmp_path.iterdir() if d.name.startswith("ck")) == ["ck2"]
    from mutate.results.report import load_run

    (tmp_path / "space.json").write_text('{"space": {}}')
    assert [p.step for p in load_run(tmp_path).pareto_front()] == [2]


def test_max_copies_is_1_by_default_null_turns_it_off_and_it_takes_an_int_of_at_least_one():
    from mutate.search import space as spaces

    assert spaces.load(SPACE, []).search["max_copies"] == 1
    assert spaces.load(SPACE, ["search.max_copies=null"]).search["max_copies"] is None
    assert spaces.load(SPACE, ["search.max_copies=2"]).search["max_copies"] == 2
    assert spaces.load(SPACE, ["search.max_copies=1"]).search["max_copies"] == 1
    for bad in ("0", "true", "1.5", "two"):
        with pytest.raises(spaces.SpaceError, match=f"search.max_copies: expected an int >= 1, got '?(?i:{bad})"):
            spaces.load(SPACE, [f"search.max_copies={bad}"])


def test_pbt_exploits_no_trial_before_its_burn_in():
    """search.burn_in_steps (auto: warm-up + window; 0, the default, Ray's plain PBT): before it, an exploit
    ranks members still training the dense model by their seeds' noise."""
    from types import SimpleNamespace

    from mutate.search import space as spaces
    from mutate.search.runner import NichedPBT, burn_in

    base = ["training.report_every=50", "mutations.warmup_steps=300", "mutations.window=100"]
    assert burn_in(spaces.load(SPACE, base)) == 0  # off by default (measured no better)
    assert burn_in(spaces.load(SPACE, [*base, "search.burn_in_steps=auto"])) == 8
    assert burn_in(spaces.load(SPACE, [*base, "search.burn_in_steps=120"])) == 3
    with pytest.raises(spaces.SpaceError, match="search.burn_in_steps"):
        spaces.load(SPACE, [*base, "search.burn_in_steps=-1"])

    exploited = []

    class PBT(NichedPBT):  # Ray's PBT, its bookkeeping stubbed: which reports reach the exploit step
        def _save_trial_state(self, state, time, result, trial):
            state.last_train_time = time

        def _quantiles(self):
            return [], []

        def _checkpoint_or_exploit(self, trial, controller, upper, lower):
            exploited.append((trial.name, self._trial_state[trial].last_train_time))

    pbt = PBT(time_attr="training_iteration", perturbation_interval=2, burn_in_period=8, quantile_fraction=0.25,
              custom_explore_fn=lambda c: c, metric="score", mode="max")
    class Trial:
        def __init__(self, name):
            self.name, self.config, self.status = name, {"member": {"fraction": 1.0}}, "RUNNING"

    trials = [Trial(f"t{i}") for i in range(4)]
    controller = SimpleNamespace(get_trials=lambda: trials, get_live_trials=lambda: trials, search_alg=None)
    pbt._trial_state = {t: SimpleNamespace(last_perturbation_time=0, last_train_time=0) for t in trials}
    for it in range(1, 13):
        for i, t in enumerate(trials):
            pbt.on_trial_result(controller, t, {"training_iteration": it, "score": 0.5 + 0.1 * i})
    assert exploited and min(step for _, step in exploited) == 8  # first considered at the burn-in, then every 2


def test_an_exploit_during_the_warm_up_explores_from_the_trials_own_planned_genome(monkeypatch):
    """Before the clone has applied any mutation, the exploiting trial takes its dense weights (and a perturbed
    learning rate) but explores from its own plan; afterwards from the clone's genome."""
    from types import SimpleNamespace

    from ray.tune.schedulers import PopulationBasedTraining

    from mutate.search.runner import NichedPBT

    mine = [{"layer": "fc", "operator": "kmeans", "params": {"k": 16}, "step": 800}]
    theirs = [{"layer": "fc", "operator": "low_rank", "params": {"rank": 4}, "step": 800}]
    from mutate.search import runner
    from mutate.search.genome import from_json

    peers = []

    def explore(self, trial, clone):  # Ray's: the clone's config with a move added and the rate perturbed
        peers.append(list(runner._PEERS[0]))  # what `_explore` hands `Strategy.propose`
        member = clone.config["member"]
        return {"member": {**member, "genome": [*member["genome"], move], "learning_rate": 1.25e-3}}, {}

    move = {"layer": "out", "operator": "pruning", "params": {}, "step": None}
    monkeypatch.setattr(PopulationBasedTraining, "_get_new_config", explore)
    pbt = NichedPBT(time_attr="training_iteration", perturbation_interval=2, metric="score", mode="max",
                    custom_explore_fn=lambda c: c)
    class Trial:
        def __init__(self, config):
            self.config = config

    trial = Trial({"member": {"genome": mine, "learning_rate": 1e-3, "fraction": 1.0}})
    clone = Trial({"member": {"genome": theirs}})
    for applied, expect in (([], [*mine, move]), ([theirs[0]], [*theirs, move])):
        pbt._trial_state = {clone: SimpleNamespace(last_result={"genome": applied})}
        new, _ = pbt._get_new_config(trial, clone)
        assert new["member"]["genome"] == expect and new["member"]["learning_rate"] == 1.25e-3
        # the other members' genomes (the clone's, not the exploiting trial's own), only during the explore
        assert peers.pop() == [from_json(theirs)] and runner._PEERS[0] == []


def test_a_resumed_run_replays_what_its_trials_observed_into_the_strategy(tmp_path, monkeypatch):
    """Found by a bug hunt: the table's corrections (what trials taught it) lived only in the driver, and a
    resumed search restored the table from sensitivity.json without them. The resumed run's points are
    observed again, in order, as they were reported."""
    from types import SimpleNamespace

    from mutate.search import runner

    seen: list = []
    strategy = SimpleNamespace(observe=lambda genome, metric, settled, step: seen.append((genome, metric, settled,
                                                                                          step)))
    monkeypatch.setattr(runner, "_STRATEGY", [strategy])
    points = runner._Points(str(tmp_path), budget=1000, interval=1e9, window=10)
    genome = [{"layer": "d", "operator": "pruning", "params": {"sparsity": 0.5}, "step": 5}]
    for step, acc in [(10, 0.8), (20, 0.85)]:
        points.on_trial_result(0, [], SimpleNamespace(trial_id="t0"),
                               {"step": step, "bytes": 900, "ratio": 0.09, "fits_budget": True, "score": acc,
                                "genome": genome, "genome_summary": "d:pruning", "val_accuracy": acc})
    assert [(m, s, step) for _, m, s, step in seen] == [(0.8, False, 10), (0.85, True, 20)]
    live = list(seen)
    seen.clear()
    (tmp_path / "space.json").write_text('{"space": {"budget": {"bytes": 1000}}}')
    runner._Points(str(tmp_path), budget=1000, interval=1e9, window=10).setup()
    assert seen == live


def test_a_fitting_language_model_scores_above_every_model_over_its_target():
    """The floor under which over-target reports score was -1e9 for a language model: a fitting model at
    perplexity 1e10 (a loss of 23 nats) scored below every model over its target."""
    from mutate.search.trial import MAX_LOSS, member_score

    worst_fit = member_score(-math.exp(MAX_LOSS), 900, 1000, MAX_LOSS, lm=True)
    assert member_score(-1e10, 900, 1000, 23.0, lm=True) == -23.0  # minus the loss: the perplexity's order
    assert member_score(-20.0, 900, 1000, math.log(20.0), lm=True) > member_score(-30.0, 900, 1000, math.log(30.0),
                                                                                  lm=True)
    assert worst_fit > member_score(-1e10, 1001, 1000, 23.0, lm=True)
    for size, loss in ((1001, 0.1), (5000, 1.0), (10 ** 9, 0.0)):
        assert member_score(-10.0, size, 1000, loss, lm=True) < worst_fit
        assert member_score(0.9, size, 1000, loss, lm=False) < member_score(0.0, 1000, 1000, 9.0, lm=False)
    assert member_score(-10.0, 2000, 1000, 1.0, lm=True) > member_score(-10.0, 3000, 1000, 1.0, lm=True)
    assert member_score(0.5, 2000, 1000, 1.0, lm=False) > member_score(0.5, 2000, 1000, 2.0, lm=False)


def test_a_trial_splices_at_a_planned_step_between_reports_and_trains_a_last_partial_report(tmp_path):
    """Found by a client's hunt: with 500 steps and reports every 200 the trials stopped at step 400, and a
    mutation planned at the warm-up's end (100) was spliced at the next report (200), not where the
    sensitivity table had measured it. Now the last report comes at ``training.steps`` and a mutation
    splices at its planned step."""
    from mutate.search import runner
    from mutate.search.genome import to_json

    space = spaces.load(SPACE, ["mutations.window=20", "mutations.frequency=5", "model.hidden=[32, 32]",
                                "training.steps=130", "mutations.warmup_steps=70"])
    assert runner.reports(space) == 3
    t = _actor(space, tmp_path)
    planned = (Mutation("dense_1", "low_rank", {"rank": 4}, 70),)
    t.config = {**t.config, "member": {**t.config["member"], "genome": to_json(planned)}}
    results = [t.step() for _ in range(3)]
    assert [(r["step"], r["done"]) for r in results] == [(50, False), (100, False), (130, True)]
    assert t.runner.genome[0].step == 70 and mutate.kernel(t.runner.model, "dense_1").state == "spliced"
    assert results[0]["genome_summary"] == "dense" and results[1]["genome_summary"] == "dense_1:low_rank(r=4)"
    again = t.step()  # restored at its last step (a resumed trial whose end was not recorded): trains nothing
    assert (again["step"], again["done"]) == (130, True)


def test_an_actor_runs_the_drivers_keras_backend_or_says_why_it_cannot():
    """A Ray the user started runs its workers in the environment it had then: the actor sets the search's
    backend before Keras is imported, and refuses in one line when Keras already runs on another."""
    import keras

    from mutate.errors import BadInput
    from mutate.search import runner

    runner._use_backend(None)  # a run recorded by an earlier version: the worker's environment decides
    runner._use_backend(keras.backend.backend())
    other = "jax" if keras.backend.backend() != "jax" else "tensorflow"
    with pytest.raises(BadInput, match=f"this Ray worker imported Keras on '{keras.backend.backend()}' before the "
                                       f"trial, but the search runs on '{other}': start Ray with KERAS_BACKEND={other}"):
        runner._use_backend(other)
