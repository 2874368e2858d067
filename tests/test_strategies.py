"""Strategies without Ray or TensorFlow: the informed explore's moves, greedy's knapsack, uniform's filter."""

import random

import pytest

from mutate.search import policy
from mutate.search.genome import Mutation, choices, current
from mutate.search.strategies import (EPSILON, Context, Greedy, PBT, Uniform, greedy_solutions, hedged_solutions,
                                      make, settled)
from mutate.search.table import Entry, Table

OPS = {"low_rank": {"rank": [32, 16, 8]}, "pruning": {"sparsity": [0.5, 0.9]}}
ALLOWED = {"a": ["low_rank", "pruning"], "b": ["low_rank", "pruning"], "c": ["pruning"]}
DENSE = 10_000


def table() -> Table:
    """Per layer: saved bytes grow with compression, and so does the metric lost (c is cheap to prune)."""
    rows = []
    for layer, scale in (("a", 1.0), ("b", 2.0), ("c", 0.1)):
        for rank, saved, acc in ((32, 1000, 0.95), (16, 2000, 0.93), (8, 2500, 0.85)):
            if "low_rank" in ALLOWED[layer]:
                rows.append(Entry(layer, "low_rank", {"rank": rank}, int(saved * scale), acc, 0.2))
        for sparsity, saved, acc in ((0.5, 1200, 0.94), (0.9, 2600, 0.90)):
            rows.append(Entry(layer, "pruning", {"sparsity": sparsity}, int(saved * scale), acc, 0.2))
    return Table(rows, base_metric=0.96, base_loss=0.2, dense_bytes=DENSE)


def ctx(budget: int, **kw) -> Context:
    return Context(OPS, ALLOWED, budget, table(), max_mutations=8, warmup_steps=100, steps=1000, window=50, **kw)


def test_moves_include_add_tighten_loosen_undo_and_switch():
    genome = (Mutation("a", "low_rank", {"rank": 16}, 100),)
    kinds = {}
    for kind, m in policy.moves(OPS, ALLOWED, genome):
        kinds.setdefault(kind, []).append(m)
    assert {m.params["rank"] for m in kinds["tighten"]} == {8}
    assert {m.params["rank"] for m in kinds["loosen"]} == {32}
    assert kinds["undo"] == [Mutation("a", "dense", {})]
    assert {(m.layer, m.operator) for m in kinds["switch"]} == {("a", "pruning")}
    assert {m.layer for m in kinds["add"]} == {"b", "c"}
    assert current((*genome, Mutation("a", "dense", {}))) == {}  # an undo leaves the layer dense


def test_an_over_budget_trial_always_gets_a_byte_cutting_move():
    t = table()
    for seed in range(200):
        rng = random.Random(seed)
        genome = tuple(Mutation(layer, "pruning", {"sparsity": 0.5}, 100) for layer in ALLOWED if rng.random() < 0.5)
        budget = t.predicted_bytes(genome) - rng.randint(1, 3000)
        pbt = PBT(ctx(budget, seed=seed))
        for _ in range(5):  # with EPSILON's random draws too
            move = pbt.propose(genome)
            assert move is not None
            assert t.predicted_bytes((*genome, move)) < t.predicted_bytes(genome), (genome, move)


def test_over_budget_the_cheapest_move_that_fits_is_chosen():
    # dense a/b/c: 10,000 B; budget 8,500 B. Fitting single moves: a:low_rank(16) 2000 B at cost 0.03,
    # b:low_rank(32) 2000 B at 0.01, b:pruning(0.5) 2400 B at 0.02, ... the cheapest that fits: b:low_rank(32).
    pbt = PBT(ctx(8_500))
    picks = [pbt.propose(()) for _ in range(200)]
    best = Mutation("b", "low_rank", {"rank": 32})
    share = sum(m == best for m in picks) / len(picks)
    assert share == pytest.approx(1 - EPSILON, abs=0.08)


def test_under_budget_a_move_may_trade_bytes_back_for_accuracy():
    genome = (Mutation("a", "low_rank", {"rank": 8}, 100), Mutation("b", "low_rank", {"rank": 8}, 100))
    t = table()
    budget = t.predicted_bytes(genome) + 600  # room for a loosen of a (2500 -> 2000 saved), not an undo
    pbt = PBT(ctx(budget))
    moves = [pbt.propose(genome) for _ in range(100)]
    bigger = [m for m in moves if m is not None and t.predicted_bytes((*genome, m)) > t.predicted_bytes(genome)]
    assert bigger, moves
    assert all(t.predicted_bytes((*genome, m)) <= budget for m in moves if m is not None)
    assert Mutation("a", "low_rank", {"rank": 16}) in moves  # the loosen: cost 0.11 -> 0.03


def test_greedy_solutions_fit_the_budget_and_are_the_cheapest():
    t = table()
    import itertools

    options = {layer: [None] + [e for e in t.options(layer)] for layer in t.layers()}
    for budget in (9_000, 7_000, 5_500, 4_800):
        sols = greedy_solutions(t, ALLOWED, budget, count=4)
        assert sols and len(set(sols)) == len(sols)
        assert all(t.predicted_bytes(g) <= budget for g in sols)
        brute = []
        for combo in itertools.product(*options.values()):
            g = tuple(Mutation(e.layer, e.operator, e.params) for e in combo if e is not None)
            if t.predicted_bytes(g) <= budget:
                brute.append(t.predicted_cost(g))
        assert t.predicted_cost(sols[0]) == pytest.approx(min(brute))
        costs = [t.predicted_cost(g) for g in sols]
        assert all(a <= b + 1e-12 for a, b in zip(costs, costs[1:]))
        assert costs == pytest.approx(sorted(brute)[:len(costs)])


def test_greedy_population_and_pbt_seeding():
    c = ctx(6_000)
    pop = Greedy(c).initial(6)
    assert all(c.table.predicted_bytes(g) <= 6_000 and all(m.step == 100 for m in g) for g in pop)
    assert PBT(ctx(6_000, hedge=False)).initial(3) == pop[:3]
    hedged = PBT(c).initial(3)
    assert hedged[0] == pop[0] and hedged[2] == pop[1]
    assert {m.operator for m in hedged[1] if m.layer == "b"} == {"pruning"}  # b: low-rank in pop[0]
    unseeded = PBT(ctx(6_000, seed_greedy=False)).initial(3)
    assert all(len(g) == 1 for g in unseeded)


def test_hedged_solutions_alternate_greedys_best_with_other_operators_on_the_largest_layer():
    t = table()  # b saves the most (scale 2)
    for budget in (4_000, 6_000, 7_000):
        best = greedy_solutions(t, ALLOWED, budget, 6)
        hedged = hedged_solutions(t, ALLOWED, budget, 6)
        assert hedged[0] == best[0] and len(hedged) == 6
        assert all(t.predicted_bytes(g) <= budget for g in hedged)
        keys = [tuple(sorted((m.layer, m.operator, str(m.params)) for m in g)) for g in hedged]
        assert len(set(keys)) == len(keys)
        on_b = [{m.operator for m in g if m.layer == "b"} for g in hedged]
        assert on_b[1] and on_b[1].isdisjoint(on_b[0]), on_b  # the second member switches b's operator
        # the alternative is the cheapest genome with that operator on b
        alt = greedy_solutions(t, {**ALLOWED, "b": sorted(on_b[1])}, budget, 1)[0]
        assert hedged[1] == alt
        order = [best.index(g) for g in hedged[0::2]]  # greedy's turns: its solutions in its order
        assert order == sorted(order) and order[0] == 0
    assert hedged_solutions(t, ALLOWED, 6_000, 1) == greedy_solutions(t, ALLOWED, 6_000, 1)


def test_uniform_deals_only_combinations_that_fit():
    c = ctx(6_500)
    genomes = Uniform(c).initial(8)
    assert genomes and all(c.table.predicted_bytes(g) <= 6_500 for g in genomes)
    everything = policy.uniform_genomes(OPS, ALLOWED, random.Random(0), 8, step=100)
    assert any(c.table.predicted_bytes(g) > 6_500 for g in everything)  # the filter mattered


def test_observations_move_the_costs_of_settled_genomes_against_the_population_at_their_step():
    c = ctx(6_000)
    pbt = make("pbt", c)
    g = (Mutation("a", "low_rank", {"rank": 16}, 100),)
    before = c.table.cost(g[0])  # 0.96 - 0.93
    assert not settled(g, 120, 50) and settled(g, 150, 50)
    pbt.observe(g, 0.80, settled=False, step=150)
    assert c.table.cost(g[0]) == before
    pbt.observe((), 0.99, settled=True, step=150)  # a dense member trained past the warm-up model's 0.96
    assert c.table.cost(g[0]) == before
    pbt.observe(g, 0.80, settled=True, step=150)
    # at step 150 the dense member scored 0.99 and g 0.80: g's level costs about 0.19, not its measured 0.03
    # (against the warm-up model's 0.96 it would have cost 0.16); the prior pulls it back a little
    assert 0.18 < c.table.cost(g[0]) < 0.19
    learnt = c.table.cost(g[0])
    pbt.observe(g, 0.50, settled=True, step=200)  # alone at its step: it only fixes that step's reference
    assert c.table.cost(g[0]) == pytest.approx(learnt)


def test_trials_that_train_past_the_warm_up_model_do_not_make_compression_look_free():
    """The reference was the warm-up model's metric, which trained trials beat: several observed levels'
    costs fell below zero (fashion_mlp.yaml's PBT runs, replayed: down to -0.26), and a dense layer
    looked dearer than a compressed one. Against the population at the same step, two levels that train equally well end
    at equal costs, both positive, whichever reports first."""
    c = ctx(6_000)
    pbt, t = make("pbt", c), c.table
    a, b = Mutation("a", "pruning", {"sparsity": 0.9}, 100), Mutation("b", "low_rank", {"rank": 16}, 100)
    assert (t.cost(a), t.cost(b)) == (pytest.approx(0.06), pytest.approx(0.03))
    for step in range(200, 1000, 50):
        for m in (a, b):
            pbt.observe((m,), 0.985, settled=True, step=step)  # both above the warm-up model's 0.96
    assert min(t.cost(Mutation(e.layer, e.operator, e.params)) for e in t.entries) >= 0.0
    assert t.cost(a) == pytest.approx(0.045, abs=1e-3) and t.cost(b) == pytest.approx(t.cost(a), abs=1e-4)


def test_a_genome_that_trains_worse_blames_the_level_it_adds_not_the_one_it_shares():
    """The residual was spread evenly over a genome's levels: a level seen only beside a bad one took half
    the blame. Fitted over all reports, the level that makes the difference takes it."""
    c = ctx(6_000)
    pbt, t = make("pbt", c), c.table
    a, b = Mutation("a", "low_rank", {"rank": 16}, 100), Mutation("b", "pruning", {"sparsity": 0.5}, 100)
    before = t.cost(a), t.cost(b)  # 0.03, 0.02
    for step in range(200, 600, 50):
        pbt.observe((), 0.99, settled=True, step=step)
        pbt.observe((a,), 0.96, settled=True, step=step)  # a costs what the table measured
        pbt.observe((a, b), 0.86, settled=True, step=step)  # b costs 0.10, not 0.02
    assert t.cost(a) == pytest.approx(before[0], abs=0.002)
    assert t.cost(b) == pytest.approx(0.10, abs=0.002)


def test_uniform_falls_back_to_the_whole_grid_when_nothing_fits(capfd):
    c = ctx(100)  # below every single-operator genome
    genomes = Uniform(c).initial(4)
    assert all(genomes) and all(c.table.predicted_bytes(g) > 100 for g in genomes)
    # it said so (a run ended exit 0 with every point over the budget and no word why)
    assert "uniform: no single operator and level on every mutable layer fits the budget (100 B" in \
        capfd.readouterr().err


def test_under_budget_with_nothing_to_gain_the_cheapest_cut_per_byte_is_taken():
    t = table()
    genome = (Mutation("a", "low_rank", {"rank": 32}, 100),)
    budget = t.predicted_bytes(genome)  # no room for a loosen or an undo, the only moves that could gain
    pbt = PBT(ctx(budget))
    cands = pbt.candidates(genome)
    assert not [x for x in cands if x["dcost"] < -1e-12 and x["bytes"] <= budget]
    cheapest = min((x for x in cands if x["cut"] > 0), key=lambda x: x["dcost"] / x["cut"])["mutation"]
    moves = [pbt.propose(genome) for _ in range(200)]
    assert all(m is not None for m in moves)
    assert sum(m == cheapest for m in moves) / len(moves) == pytest.approx(1 - EPSILON, abs=0.08)


def test_under_budget_with_nothing_to_gain_the_genome_stays_when_the_learning_rate_is_perturbed():
    t = table()
    genome = (Mutation("a", "low_rank", {"rank": 32}, 100),)
    pbt = PBT(ctx(t.predicted_bytes(genome), learning_rate_factors=(0.8, 1.25)))
    moves = [pbt.propose(genome) for _ in range(200)]
    assert sum(m is None for m in moves) / len(moves) == pytest.approx(1 - EPSILON, abs=0.08)
    assert all(t.predicted_bytes((*genome, m)) <= t.predicted_bytes(genome) for m in moves if m is not None)


def test_max_copies_turns_a_further_copy_of_a_held_genome_into_a_cut_no_member_holds():
    t = table()
    genome = (Mutation("a", "low_rank", {"rank": 32}, 100),)
    twin = (Mutation("a", "low_rank", {"rank": 32}, 300),)  # the same compression, spliced at another step
    pbt = PBT(ctx(t.predicted_bytes(genome), learning_rate_factors=(0.8, 1.25), max_copies=2))
    # one other member holds it (the cloned parent): a second copy is allowed, the genome stays as without the cap
    assert sum(pbt.propose(genome, peers=[twin]) is None for _ in range(200)) > 100
    # two hold it: a cut every time, never to a genome two members hold
    other = PBT(ctx(t.predicted_bytes(genome))).candidates(genome)
    cheapest = min((x for x in other if x["cut"] > 0), key=lambda x: x["dcost"] / x["cut"])["mutation"]
    held = (*genome, cheapest)
    for peers in ([genome, twin], [genome, twin, held, held]):
        moves = [pbt.propose(genome, peers=peers) for _ in range(100)]
        assert all(m is not None and t.predicted_bytes((*genome, m)) < t.predicted_bytes(genome) for m in moves)
        assert all(sum(choices((*genome, m)) == choices(p) for p in peers) < 2 for m in moves)
        share = sum(m == cheapest for m in moves) / len(moves)  # EPSILON's random moves are kept when new
        assert share >= 1 - EPSILON - 0.1 if held not in peers else share == 0
    # no cap (the default): peers change nothing
    free = PBT(ctx(t.predicted_bytes(genome), learning_rate_factors=(0.8, 1.25)))
    assert sum(free.propose(genome, peers=[genome, twin]) is None for _ in range(200)) > 100


def test_explore_multiplies_the_learning_rate_by_a_listed_factor():
    pbt = PBT(ctx(5000, learning_rate_factors=(0.8, 1.25)))
    rates = [pbt.learning_rate(1e-3) for _ in range(200)]
    assert {round(r, 9) for r in rates} == {8e-4, 1.25e-3}
    assert 0.3 < sum(r < 1e-3 for r in rates) / len(rates) < 0.7
    assert PBT(ctx(5000)).learning_rate(1e-3) == 1e-3  # no factors: the rate stays
    assert Greedy(ctx(5000, learning_rate_factors=(0.5,))).learning_rate(1e-3) == 1e-3  # only PBT explores


def test_accuracy_costs_are_read_from_the_loss_at_the_tables_exchange_rate():
    """On a small validation subset accuracy ranks close levels by chance; the loss does not. Here k=4 'gains'
    accuracy by luck while its loss rises five times more than k=8's: it must cost more."""
    rows = [Entry("a", "kmeans", {"k": 4}, 3000, 0.905, 0.35), Entry("a", "kmeans", {"k": 8}, 2800, 0.895, 0.31),
            Entry("b", "pruning", {"sparsity": 0.5}, 500, 0.87, 0.40), Entry("b", "pruning", {"sparsity": 0.9}, 900,
                                                                         0.84, 0.50),
            Entry("c", "pruning", {"sparsity": 0.9}, 100, 0.75, 0.80)]
    t = Table(rows, base_metric=0.9, base_loss=0.3, dense_bytes=DENSE)
    assert t.accuracy_per_nat() == pytest.approx(0.3)  # median of -0.005/0.05, 0.03/0.1, 0.06/0.2, 0.15/0.5
    k4, k8 = Mutation("a", "kmeans", {"k": 4}), Mutation("a", "kmeans", {"k": 8})
    assert t.cost(k4) == pytest.approx(0.3 * 0.05) and t.cost(k8) == pytest.approx(0.3 * 0.01)
    sols = greedy_solutions(t, {"a": ["kmeans"], "b": ["pruning"], "c": ["pruning"]}, DENSE - 2800, 1)
    assert sols[0] == (k8,)
    later = Table([Entry(e.layer, e.operator, e.params, e.saved) for e in rows], dense_bytes=DENSE)
    for e, r in zip(later.entries, rows):  # as `sensitivity.measure` fills a table of sizes in
        e.metric, e.loss = r.metric, r.loss
    later.base_metric, later.base_loss = 0.9, 0.3
    assert later.cost(k4) == pytest.approx(t.cost(k4))
    few = Table(rows[:2], base_metric=0.9, base_loss=0.3, dense_bytes=DENSE)  # no rate: accuracy + 1% of loss
    assert few.accuracy_per_nat() is None and few.cost(k8) == pytest.approx(0.005 + 0.01 * 0.01)


def test_niches_split_the_population_and_each_niche_starts_under_its_own_target():
    c = ctx(6_000, budget_fractions=(0.4, 1.0, 0.6))
    pbt = PBT(c)
    assert pbt.fractions(8) == [1.0, 1.0, 1.0, 1.0, 0.6, 0.6, 0.4, 0.4]
    assert Uniform(c).fractions(8) == [1.0] * 8  # strategies that ignore the budget have one niche
    pop = pbt.initial(8)
    assert PBT(ctx(6_000, budget_fractions=(0.4, 1.0, 0.6), hedge=False)).initial(8) == Greedy(c).initial(8)
    for g, f in zip(pop, pbt.fractions(8)):
        assert c.table.predicted_bytes(g) <= pbt.target(f)
    assert c.table.predicted_bytes(pop[-1]) < c.table.predicted_bytes(pop[0])
    # a member of the 0.6 niche standing at the whole budget is over its own target: it must cut
    at_budget = pop[0]
    for _ in range(50):
        m = pbt.propose(at_budget, 0.6)
        assert m is not None and c.table.predicted_bytes((*at_budget, m)) < c.table.predicted_bytes(at_budget)
    below = ctx(6_000, budget_fractions=(0.1,))  # no genome fits 600 B: that niche starts from the niche above's
    assert PBT(below).initial(4)[2:] == PBT(below).initial(4)[:2]


def test_greedys_first_solution_does_not_depend_on_how_many_are_asked_for():
    """Found by a bug hunt: the knapsack's pruning kept, of equal predicted cost, the model saving more bytes,
    and the final order put the larger model first, so one solution and six differed in their first (real
    tables tie often: costs are clipped at 0). Of equal cost the smaller model comes first now."""
    rows = [Entry(layer, "pruning", {"sparsity": s}, saved, acc, 0.2)
            for layer in ("a", "b") for s, saved, acc in ((0.5, 1000, 0.96), (0.8, 2000, 0.96), (0.95, 3000, 0.5))]
    t = Table(rows, base_metric=0.96, base_loss=0.2, dense_bytes=DENSE)
    allowed = {"a": ["pruning"], "b": ["pruning"]}
    for budget in (DENSE, 9_000, 8_500, 7_000, 6_000):
        firsts = {greedy_solutions(t, allowed, budget, n)[0] for n in (1, 2, 3, 6)}
        assert len(firsts) == 1, (budget, firsts)
        (first,) = firsts
        sols = greedy_solutions(t, allowed, budget, 6)
        ties = [g for g in sols if t.predicted_cost(g) == pytest.approx(t.predicted_cost(first))]
        assert t.predicted_bytes(first) == min(t.predicted_bytes(g) for g in ties)


def test_over_budget_a_gain_that_cuts_more_bytes_wins_over_the_same_gain_cutting_fewer(monkeypatch):
    """Found by a bug hunt: with no move under the budget, moves were ranked by cost change per byte cut, and a
    negative change over a 100-byte cut ranked before the same change over 20,000 bytes."""
    import mutate.search.strategies as strategies

    monkeypatch.setattr(strategies, "EPSILON", 0.0)
    rows = [Entry("A", "pruning", {"sparsity": 0.95}, 60_000, 0.80, 0.8),
            Entry("A", "kmeans", {"k": 16}, 60_100, 0.85, 0.55),
            Entry("A", "low_rank", {"rank": 8}, 80_000, 0.85, 0.55),
            Entry("B", "pruning", {"sparsity": 0.5}, 1_000, 0.85, 0.55)]
    t = Table(rows, base_metric=0.9, base_loss=0.3, dense_bytes=200_000)
    ops = {"pruning": {"sparsity": [0.5, 0.95]}, "kmeans": {"k": [16]}, "low_rank": {"rank": [8]}}
    allowed = {"A": ["pruning", "kmeans", "low_rank"], "B": ["pruning"]}
    pbt = PBT(Context(ops, allowed, 50_000, t))
    genome = (Mutation("A", "pruning", {"sparsity": 0.95}, 10),)
    assert pbt.propose(genome) == Mutation("A", "low_rank", {"rank": 8})


def test_low_rank_by_ratio_tightens_and_loosens():
    """Found by a bug hunt: a `ratio` level (low_rank's other parameter) had no direction, so PBT could only
    undo it, and an over-budget trial at ratio 2 with ratios 4 and 8 fitting got no move."""
    ops = {"low_rank": {"ratio": [2, 4, 8]}}
    kinds: dict[str, list] = {}
    for kind, m in policy.moves(ops, {"a": ["low_rank"]}, (Mutation("a", "low_rank", {"ratio": 4}, 1),)):
        kinds.setdefault(kind, []).append(m)
    assert kinds["tighten"] == [Mutation("a", "low_rank", {"ratio": 8})]
    assert kinds["loosen"] == [Mutation("a", "low_rank", {"ratio": 2})]
    rows = [Entry("a", "low_rank", {"ratio": r}, saved, 0.9, 0.3) for r, saved in ((2, 130_000), (4, 195_000),
                                                                                 (8, 230_000))]
    t = Table(rows, base_metric=0.95, base_loss=0.2, dense_bytes=262_144)
    pbt = PBT(Context(ops, {"a": ["low_rank"]}, 65_536, t))
    genome = (Mutation("a", "low_rank", {"ratio": 2}, 1),)
    moves = [pbt.propose(genome) for _ in range(50)]
    assert all(m is not None and t.predicted_bytes((*genome, m)) < t.predicted_bytes(genome) for m in moves)
    assert set(moves) == {Mutation("a", "low_rank", {"ratio": 4})}  # a notch a move (the next goes on to 8)


def test_a_niche_aims_at_its_share_of_the_measured_budget_less_the_overhead():
    """``budget.unit: litert``: the strategies plan counted bytes for the file budget less the graph's
    overhead; a niche's member is scored against its fraction of the file budget, so it plans for that less the
    overhead (it planned the fraction of the planned budget: (1 - f) x overhead too large)."""
    c = ctx(6_000, budget_fractions=(1.0, 0.5), overhead=1_000)
    pbt = PBT(c)
    assert pbt.target(1.0) == 6_000 and pbt.target(0.5) == 2_500  # floor(7,000 x 0.5) - 1,000
    assert PBT(ctx(6_000, budget_fractions=(1.0, 0.5))).target(0.5) == 3_000


def test_a_language_models_table_shows_the_loss_itself():
    """Found by a bug hunt: the "loss +" column of a language model's table held minus the validation loss
    (-4.5608), not a loss or an increase."""
    rows = [Entry("emb", "low_rank", {"rank": 8}, 5_000, -4.6, 4.6), Entry("emb", "low_rank", {"rank": 4}, 6_000,
                                                                           -4.9, 4.9)]
    t = Table(rows, base_metric=-4.5, base_loss=4.5, lm=True, dense_bytes=DENSE)
    lines = t.lines()
    assert lines[0].split()[-3:] == ["val", "loss", "cost"]
    assert [line.split()[-2:] for line in lines[1:]] == [["4.9000", "0.4000"], ["4.6000", "0.1000"]]


def _many_levels_table(layers: int = 6, levels: int = 9) -> Table:
    """Layers of many k-means levels whose cost grows almost in proportion to the bytes saved: the knapsack's
    non-dominated states run to thousands."""
    rng = random.Random(0)
    rows = []
    for i in range(layers):
        for j in range(levels):
            saved = 1000 * (10 - j) * (i + 1) + rng.randint(0, 50)
            rows.append(Entry(f"d{i}", "kmeans", {"k": 2 ** (j + 1)}, saved, 0.9, 0.2 + 1e-4 * saved * (1 + 0.01 * rng.random())))
    return Table(rows, base_metric=0.96, base_loss=0.2, lm=True, dense_bytes=400_000)


def test_greedy_finds_a_tight_budgets_genome_when_its_states_run_to_thousands():
    """The knapsack kept the 4000 cheapest states, all of small savings, and found nothing for budgets only
    large savings reach (every niche's population fell back to dense or random)."""
    t = _many_levels_table()
    allowed = {layer: ["kmeans"] for layer in t.layers()}
    most = sum(max(e.saved for e in t.options(layer)) for layer in t.layers())
    for slack in (10, 40_000, 80_000):
        budget = t.dense_bytes - most + slack
        for count in (1, 2, 8):
            sols = greedy_solutions(t, allowed, budget, count)
            assert sols and all(t.predicted_bytes(g) <= budget for g in sols), (slack, count)
            assert len(set(sols)) == len(sols)


def test_max_mutations_caps_every_first_genome_and_an_over_budget_trial_at_the_cap_still_cuts():
    c = ctx(5_000, budget_fractions=(1.0, 0.5))
    import dataclasses

    capped = dataclasses.replace(c, max_mutations=2)
    for strategy in (Greedy(capped), PBT(capped), make("random", capped)):
        pop = strategy.initial(6)
        assert pop and all(len(g) <= 2 for g in pop), (strategy.name, pop)
    assert all(len(g) <= 2 for g in greedy_solutions(c.table, ALLOWED, 5_000, 8, max_len=2))
    assert any(len(g) == 3 for g in greedy_solutions(c.table, ALLOWED, 5_000, 8))  # the cap is what limits them
    genome = (Mutation("a", "pruning", {"sparsity": 0.5}, 100), Mutation("b", "pruning", {"sparsity": 0.5}, 100))
    t = c.table
    over, under = PBT(dataclasses.replace(capped, budget=t.predicted_bytes(genome) - 1)), PBT(dataclasses.replace(
        capped, budget=t.predicted_bytes(genome) + 5_000, learning_rate_factors=()))
    for _ in range(20):
        move = over.propose(genome)
        assert move is not None and t.predicted_bytes((*genome, move)) < t.predicted_bytes(genome)
        assert under.propose(genome) is None  # under budget at the cap: no more moves


def test_greedys_niches_train_distinct_genomes():
    """A solution of a smaller niche also fits the larger one: greedy trained [x, y, x, y] with close niches."""
    c = ctx(9_500, budget_fractions=(1.0, 0.95))
    pop = Greedy(c).initial(4)
    genomes = [tuple((m.layer, m.operator, tuple(sorted(m.params.items()))) for m in g) for g in pop]
    assert len(set(genomes)) == 4, pop
    fr = Greedy(c).fractions(4)
    assert all(c.table.predicted_bytes(g) <= Greedy(c).target(f) for g, f in zip(pop, fr))
