"""Genome bookkeeping and the explore policy (pure Python, milliseconds)."""

import random

import pytest

from mutate.search import policy
from mutate.search.genome import Mutation, current, from_json, pending, summary, to_json

OPS = {"low_rank": {"rank": [32, 16, 8], "layers": ["dense_*"]}, "pruning": {"sparsity": [0.5, 0.9]}}


def test_genome_json_round_trip_and_summary():
    g = (Mutation("dense_1", "low_rank", {"rank": 16}, 100), Mutation("logits", "pruning", {"sparsity": 0.9}))
    assert from_json(to_json(g)) == g
    assert summary(g) == "dense_1:low_rank(r=16) logits:pruning(s=0.9)"
    assert summary(()) == "dense"
    tightened = (*g, Mutation("dense_1", "low_rank", {"rank": 8}))
    assert current(tightened)["dense_1"].params == {"rank": 8}


def test_pending_requires_a_prefix_and_ignores_steps():
    a = Mutation("dense_1", "low_rank", {"rank": 16})
    b = Mutation("logits", "pruning", {"sparsity": 0.9})
    assert pending((a.applied(300),), (a, b)) == (b,)
    with pytest.raises(ValueError, match="does not extend"):
        pending((b.applied(5),), (a, b))


def test_targets_narrow_operators_per_layer():
    allowed = policy.targets(OPS, ["dense_*", "logits"], ["flatten", "dense_1", "dense_2", "logits"])
    assert allowed == {"dense_1": ["low_rank", "pruning"], "dense_2": ["low_rank", "pruning"], "logits": ["pruning"]}


def test_notches_move_one_level_in_each_direction():
    m = Mutation("dense_1", "low_rank", {"rank": 16})
    assert [t.params for t in policy.notches(OPS, m, +1)] == [{"rank": 8}]
    assert [t.params for t in policy.notches(OPS, m, -1)] == [{"rank": 32}]
    assert [t.params for t in policy.notches(OPS, Mutation("dense_1", "pruning", {"sparsity": 0.5}), +1)] == [
        {"sparsity": 0.9}]
    assert policy.notches(OPS, Mutation("dense_1", "low_rank", {"rank": 8}), +1) == []


def test_random_genome_is_seeded_and_ordered():
    allowed = {"dense_1": ["low_rank", "pruning"], "dense_2": ["pruning"], "logits": ["pruning"]}
    g1 = policy.random_genome(OPS, allowed, random.Random(7), first_step=100, last_step=500)
    g2 = policy.random_genome(OPS, allowed, random.Random(7), first_step=100, last_step=500)
    assert g1 == g2 and len({m.layer for m in g1}) == len(g1) >= 1
    steps = [m.step for m in g1]
    assert steps == sorted(steps) and all(100 <= s <= 500 for s in steps)


def test_strategy_choice_follows_the_trial_resources():
    from mutate.search.devices import strategy_for

    assert strategy_for(0, 0) == "default" and strategy_for(1, 0) == "default" and strategy_for(0.5, 0) == "default"
    assert strategy_for(2, 0) == "mirrored" and strategy_for(4, 0) == "mirrored"
    assert strategy_for(0, 1) == "tpu" and strategy_for(8, 4) == "tpu"
    with pytest.raises(ValueError, match="gpus=-1"):
        strategy_for(-1, 0)


def test_uniform_genomes_deal_one_operator_and_level_to_every_allowed_layer():
    allowed = policy.targets(OPS, ["dense_*", "logits"], ["dense_1", "dense_2", "logits"])
    genomes = policy.uniform_genomes(OPS, allowed, random.Random(0), 7, step=300)
    assert len(genomes) == 7
    combos = set()
    for g in genomes:
        ops = {m.operator for m in g}
        assert len(ops) == 1 and len({tuple(sorted(m.params.items())) for m in g}) == 1
        op = ops.pop()
        assert [m.layer for m in g] == [name for name in allowed if op in allowed[name]]
        assert all(m.step == 300 for m in g)
        combos.add((op, tuple(g[0].params.items())))
    assert len(combos) == 5  # 3 low_rank ranks + 2 sparsities: the grid is dealt out before any repeat
    assert genomes == policy.uniform_genomes(OPS, allowed, random.Random(0), 7, step=300)


def test_a_stack_that_extends_a_layers_operator_is_a_stack_move():
    ops = {"pruning": {"sparsity": [0.9, 0.95]}, "pruning+kmeans": {"sparsity": [0.9, 0.95], "k": [16, 8]}}
    genome = (Mutation("a", "pruning", {"sparsity": 0.9}, 10),)
    moves = policy.moves(ops, {"a": ["pruning", "pruning+kmeans"]}, genome)
    stacks = [m for kind, m in moves if kind == "stack"]
    assert stacks == [Mutation("a", "pruning+kmeans", {"k": k, "sparsity": 0.9}) for k in (16, 8)]
    switches = [m for kind, m in moves if kind == "switch"]
    assert switches == [Mutation("a", "pruning+kmeans", {"k": k, "sparsity": 0.95}) for k in (16, 8)]
    # a stacked layer tightens either stage by a notch
    stacked = (Mutation("a", "pruning+kmeans", {"k": 16, "sparsity": 0.9}, 10),)
    tight = [m for kind, m in policy.moves(ops, {"a": ["pruning+kmeans"]}, stacked) if kind == "tighten"]
    assert tight == [Mutation("a", "pruning+kmeans", {"k": 8, "sparsity": 0.9}),
                     Mutation("a", "pruning+kmeans", {"k": 16, "sparsity": 0.95})]
