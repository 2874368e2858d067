"""The sensitivity table against a direct factor-and-evaluate, and the explore's moves applied to real trials."""

from pathlib import Path

import numpy as np
import pytest

import mutate
from mutate.search import policy, sensitivity, space as spaces
from mutate.search.genome import Mutation
from mutate.search.strategies import Context, greedy_solutions
from mutate.search.table import TABLE_FILE
from mutate.search.trial import EVAL_BATCH, TrialRunner

SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "digits_mlp.yaml"
OVERRIDES = ["model.hidden=[32, 32]", "mutations.warmup_steps=40", "mutations.window=20", "mutations.frequency=5",
             "mutations.operators.low_rank.rank=[8, 4]", "mutations.operators.pruning.sparsity=[0.5, 0.9]",
             "mutations.operators.kmeans.k=[8]", "mutations.operators.pruning+kmeans={sparsity: [0.9], k: [8]}",
             "budget.ratio=0.2"]


@pytest.fixture(scope="module")
def space():
    return spaces.load(SPACE, OVERRIDES)


@pytest.fixture(scope="module")
def table(space):
    allowed = policy.targets(space.mutations["operators"], space.mutations["layers"], ["dense_1", "dense_2", "logits"])
    return sensitivity.measure(space, allowed, subset=100, out=lambda line: None), allowed


def test_every_entry_matches_a_direct_compress_and_splice_of_that_layer(space, table):
    t, allowed = table
    assert t.measured and t.subset == 100 and len(t.entries) == sum(
        len(policy.levels(space.mutations["operators"], op)) for ops in allowed.values() for op in ops)
    r = TrialRunner(space, seed=space.search["seed"] * 1000)
    r.train(space.mutations["warmup_steps"])
    x, y = r.x_val[:100], r.y_val[:100]
    base = r.model.evaluate(x, y, batch_size=EVAL_BATCH, verbose=0, return_dict=True)
    assert t.base_metric == pytest.approx(base["accuracy"], abs=1e-9)
    sched = mutate.Schedule(begin_step=0, end_step=10, frequency=5)
    original = r.model.get_weights()
    for e in t.entries[::3]:  # every third entry: each layer and operator appears
        if mutate.blending_kernels(r.model) or any(k.state != "dense" for k in mutate.compressible(r.model)):
            mutate.densify(r.model, "*")
            r.model.set_weights(original)
        spliced = mutate.strip(mutate.compress(r.model, {e.layer: (e.operator, e.params)}, sched), force=True)
        spliced.compile(loss=r.model.loss, metrics=["accuracy"])
        res = spliced.evaluate(x, y, batch_size=EVAL_BATCH, verbose=0, return_dict=True)
        assert e.metric == pytest.approx(res["accuracy"], abs=1e-9), e
        assert e.loss == pytest.approx(res["loss"], rel=1e-4), e
        assert mutate.model_size(spliced).bits // 8 == r.dense_bytes - e.saved, e


def test_loosen_switch_stack_and_undo_are_applied_and_sized_as_predicted(space, table):
    t, allowed = table
    r = TrialRunner(space, seed=3)
    r.train(10)
    steps = [Mutation("dense_2", "low_rank", {"rank": 4}),
             Mutation("dense_2", "low_rank", {"rank": 8}),     # loosen
             Mutation("dense_2", "pruning", {"sparsity": 0.9}),  # switch
             Mutation("dense_2", "pruning+kmeans", {"k": 8, "sparsity": 0.9}),  # stack: quantize the kept values
             Mutation("dense_2", "dense", {})]                 # undo
    genome = ()
    for m in steps:
        genome = (*genome, m)
        assert r.apply(genome) == [m]
        r.train(25)  # past the 20-step window: spliced
        row = r.measure()
        assert row["bytes"] == t.predicted_bytes(r.genome), (m, row)
        assert np.isfinite(row["val_accuracy"])
    assert row["genome_summary"] == "dense" and row["bytes"] == r.dense_bytes
    assert type(r.model.get_layer("dense_2")).__name__ == "Dense"


def test_a_greedy_solution_trains_to_the_size_it_predicted_under_the_budget(space, table):
    t, allowed = table
    r = TrialRunner(space, seed=0)
    ctx = Context(space.mutations["operators"], allowed, r.budget, t)
    best = greedy_solutions(t, allowed, r.budget, count=1)[0]
    r.train(10)
    r.apply(tuple(m.applied(10) for m in best))
    r.train(25)
    row = r.measure()
    assert row["fits_budget"] and row["bytes"] == t.predicted_bytes(best) <= ctx.budget


def test_a_litert_budget_scores_the_litert_file_of_the_genome(space, tmp_path):
    litert = spaces.load(SPACE, [*OVERRIDES, "budget.unit=litert"])
    r = TrialRunner(litert, seed=3)
    stored = TrialRunner(space, seed=3)
    assert abs(r.dense_bytes - stored.dense_bytes) < 2_000  # a dense file is its weights plus a small graph
    r.train(10)
    r.apply((Mutation("dense_1", "pruning", {"sparsity": 0.9}, 10),))
    r.train(5)  # still blending: the file is that of the spliced model it will become
    row = r.measure()
    seconds = r.litert_seconds
    assert row["unit"] == "litert" and row["bytes"] == r.litert_bytes() and r.litert_seconds == seconds  # cached
    copy = mutate.strip(r.model, force=True)
    # the same file up to names (a loaded copy's tensors may be named a few characters differently)
    assert abs(row["bytes"] - mutate.export_model(copy, tmp_path / "m.tflite").bytes) < 64
    assert row["bytes"] > mutate.model_size(copy).bits // 8  # the graph's ops come on top of the arrays
    # the dense reference, measured on the fresh model, is the trained dense model's file (the converter stores
    # equal arrays once: the fresh model's zero biases made it smaller)
    stored.train(10)
    assert abs(r.dense_bytes - mutate.export_model(stored.model, tmp_path / "d.tflite").bytes) < 64


def test_a_litert_budget_below_what_the_space_reaches_is_one_line(space, table, capsys):
    from mutate.commands import _litert_plan_budget
    from mutate.errors import BadInput

    t, allowed = table
    litert = spaces.load(SPACE, [*OVERRIDES, "budget.unit=litert", "budget.ratio=0.9"])
    r = TrialRunner(litert, seed=3)
    assert greedy_solutions(t, allowed, _litert_plan_budget(litert, allowed, r.budget, t, runner=r), 1)
    assert "the strategies plan for" in capsys.readouterr().out
    # at 20% of this small MLP's file, the unpacking graph alone is over the budget: refused, not a dense search
    tight = spaces.load(SPACE, [*OVERRIDES, "budget.unit=litert"])
    r = TrialRunner(tight, seed=3)
    with pytest.raises(BadInput, match=r"digits_mlp.yaml: budget.ratio: 0.2: [\d,]+ B of LiteRT file, less the "
                                       r"graph's [\d,]+ B leaves -?[\d,]+ B for the arrays, below the smallest model"):
        _litert_plan_budget(tight, allowed, r.budget, t, runner=r)


def test_the_table_is_the_seeds_while_ray_starts_and_draws_from_pythons_random(space, tmp_path, monkeypatch):
    """The table is measured in a thread while the main thread starts Ray, which draws from Python's global
    `random` (a port); Keras draws every unseeded initializer from it too. The table's model is built before
    Ray starts, so a start drawing many numbers gives the same table (and greedy's start) as one drawing none
    (it once gave a different warm-up model from run to run)."""
    import json
    import random

    from mutate import commands
    from mutate.search import driver, runner

    def measured(name, draws):
        monkeypatch.setattr(runner, "start_ray", lambda *a, **k: [random.random() for _ in range(draws)])
        greedy = spaces.load(SPACE, [*OVERRIDES, "search.strategy=greedy"])
        p = driver.prepare(greedy)
        (tmp_path / name).mkdir()
        commands._strategy_while_ray_starts(greedy, tmp_path / name, p.allowed, p.budget, p.sizes, False, None,
                                            False, lambda line: None)
        entries = json.loads((tmp_path / name / TABLE_FILE).read_text())["entries"]
        return [{k: v for k, v in e.items() if k != "seconds"} for e in entries]

    assert measured("racing", 200_000) == measured("quiet", 0)
