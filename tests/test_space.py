"""Search-space validation: every error is one line naming the file, the key and the value."""

from pathlib import Path

import pytest
import yaml

from mutate.search import driver, policy
from mutate.search import space as spaces
from mutate.search.space import SpaceError

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "search_spaces" / "digits_mlp.yaml"


def write(tmp_path, data, name="s.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def base():
    return yaml.safe_load(DIGITS.read_text())


def load(tmp_path, data, overrides=()):
    return spaces.load(write(tmp_path, data), list(overrides), check_operator=policy.check_operator)


def test_shipped_spaces_validate():
    for path in sorted((ROOT / "search_spaces").glob("*.yaml")):
        s = spaces.load(path, check_operator=policy.check_operator)
        assert s.name == path.stem


def test_defaults_and_relative_storage(tmp_path):
    s = load(tmp_path, base())
    assert s.storage == (tmp_path / ".." / "mutate_runs").resolve()
    assert s.search["max_failures"] == 2 and s.resources["gpus"] == 0


@pytest.mark.parametrize("mutate_data, key, fragment", [
    (lambda d: d["search"].update(population=0), "search.population", "expected an int >= 1, got 0"),
    (lambda d: d["search"].update(strategy="grid"), "search.strategy", "'grid'"),
    (lambda d: d["training"].update(learning_rate=-1), "training.learning_rate", "-1"),
    (lambda d: d["training"].update(batch_size="32"), "training.batch_size", "'32'"),
    (lambda d: d["training"].update(steps_per_execution=100), "training.steps_per_execution", "100"),
    (lambda d: d["search"].update(populaton=4), "search.populaton", "did you mean 'population'"),
    (lambda d: d.update(extra=1), "extra", "unknown key"),
    (lambda d: d["budget"].update(bytes=100), "budget", "exactly one of"),
    (lambda d: d["budget"].update(ratio=1.5), "budget.ratio", "1.5"),
    (lambda d: d["mutations"].update(layers=[]), "mutations.layers", "non-empty"),
    (lambda d: d["mutations"]["operators"].update(svd={"rank": [4]}), "mutations.operators.svd",
     "available: "),
    (lambda d: d["mutations"]["operators"]["low_rank"].update(rank=[8, 0]), "mutations.operators.low_rank.rank",
     "rank=0"),
    (lambda d: d["mutations"]["operators"]["pruning"].update(sparsity=[1.0]),
     "mutations.operators.pruning.sparsity", "sparsity=1.0"),
    (lambda d: d["model"].update(builder="resnet"), "model.builder", "'resnet'"),
    (lambda d: d["mutations"]["operators"].update({"simhash+kmeans": {"rank": [8], "k": [4]}}),
     "mutations.operators.simhash+kmeans", "kmeans cannot follow simhash"),
    (lambda d: d.pop("budget"), "budget", "missing required section"),
    (lambda d: d["search"].update(learning_rate_factors=[0.8, 0]), "search.learning_rate_factors", "[0.8, 0]"),
    (lambda d: d["search"].update(learning_rate_factors=1.2), "search.learning_rate_factors", "1.2"),
    (lambda d: d["search"].update(hedge="yes"), "search.hedge", "yes"),
    (lambda d: d["search"].update(seed_greedy=1), "search.seed_greedy", "1"),
    (lambda d: d["search"].update(budget_fractions=[1.0, 1.5]), "search.budget_fractions", "1.5"),
    (lambda d: d["search"].update(budget_fractions=[1.0, 0.5, 0.25], population=2), "search.budget_fractions",
     "at most search.population (2) niches"),
])
def test_errors_name_file_key_and_value(tmp_path, mutate_data, key, fragment):
    data = base()
    mutate_data(data)
    with pytest.raises(SpaceError) as e:
        load(tmp_path, data)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("s.yaml: ") and key in msg and fragment in msg, msg


def test_malformed_yaml_names_the_line(tmp_path):
    with pytest.raises(SpaceError, match=r"s.yaml: malformed YAML at line \d+, column \d+: "):
        spaces.load(write(tmp_path, "name: x\nmodel: {builder: mlp\ndata: digits\n"))


def test_yaml_tags_are_refused(tmp_path):
    with pytest.raises(SpaceError, match="malformed YAML"):
        spaces.load(write(tmp_path, "name: !!python/object/apply:os.system ['true']\n"))


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    """yaml.safe_load keeps a repeated key's last value silently: a user's edit lower in the file won, or lost."""
    text = DIGITS.read_text()
    twice = text.replace("training:\n", "training:\n  steps: 50\n", 1)
    line, steps = [i + 1 for i, row in enumerate(twice.splitlines()) if row.startswith("  steps:")][:2]
    with pytest.raises(SpaceError, match=rf"s.yaml: training.steps: given twice \(lines {line} and {steps}\)"):
        spaces.load(write(tmp_path, twice))
    with pytest.raises(SpaceError, match=r"s.yaml: name: given twice"):
        spaces.load(write(tmp_path, text + "name: again\n"))
    # a merge key, and an alias that repeats an anchored mapping, are not repeats; the same key in two
    # different mappings neither
    ok = text.replace("training:\n", "training: &t\n", 1) + "x: {<<: *t, steps: 7}\ny: *t\n"
    with pytest.raises(SpaceError, match=r"unknown key"):  # past the repeat check: x and y are not the schema's
        spaces.load(write(tmp_path, ok))
    assert spaces.load(write(tmp_path, text)).training["steps"] == yaml.safe_load(text)["training"]["steps"]


def test_what_the_fuzzer_found_is_one_line(tmp_path):
    """Found by fuzzing every key: each was an internal error (exit 1) or a two-line message."""
    cases = [("name: !!int abc\n", "malformed YAML: invalid literal for int"),  # a tag's constructor
             ("a: " + "[" * 3000 + "]" * 3000 + "\n", "malformed YAML: nested too deeply"),
             ("a: b\x00\n", "malformed YAML: unacceptable character #x0000")]
    for text, fragment in cases:
        with pytest.raises(SpaceError, match=fragment) as e:
            spaces.load(write(tmp_path, text))
        assert "\n" not in str(e.value)
    with pytest.raises(SpaceError, match=r"training.steps: value '!!int abc' is not valid YAML"):
        load(tmp_path, base(), ["training.steps=!!int abc"])
    with pytest.raises(SpaceError, match=r"search.seed: expected an int from 0 to 4294967295, got 4294967296"):
        load(tmp_path, base(), ["search.seed=4294967296"])  # NumPy's seeds stop there (the driver's ValueError)
    with pytest.raises(SpaceError, match=r"name: expected a run name: a folder name .* at most 200 bytes"):
        load(tmp_path, base(), ["name=" + "x" * 300])  # the file system's limit: an OSError on mkdir
    data = base()
    data["mutations"]["operators"] = {"pruning+kmeans": {"sparsity": [[0.5, 0.8]], "k": 8}}
    with pytest.raises(SpaceError, match=r"operators.pruning\+kmeans.sparsity: expected a list of choices, each a "
                                         r"number, string or boolean, got \[0.5, 0.8\]"):
        load(tmp_path, data)  # a list choice was unhashable in the sensitivity table
    for sets, fragment in (
            (["search.population=1000000"], r"search.population: expected an int from 1 to 10000, got 1000000"),
            (["mutations.window=10000"], r"mutations.window: expected at most training.steps - "
                                         r"mutations.warmup_steps = \d+, got 10000"),  # nothing would splice
            (["storage=s3://bucket/runs"], r"storage: expected a local or shared .* not a URI"),  # once a local s3:
            (["training=" + str([["x"] * 10] * 10_000)], r"got \[\['x'.*\.\.\. \([\d,]+ characters\)$")):
        with pytest.raises(SpaceError, match=fragment):
            load(tmp_path, base(), sets)
    data = base()
    data["mutations"]["operators"] = {1: {"rank": [2]}}
    with pytest.raises(SpaceError, match=r"mutations.operators: expected operator names \(strings\), got 1"):
        load(tmp_path, data)
    for ops, key in (({"low_rank": {"rank": [8, 4], "method": ["nosuch"]}}, "low_rank.method"),
                     ({"pruning+kmeans": {"sparsity": [0.9], "k": [4], "rank": [2]}}, r"pruning\+kmeans.rank")):
        data["mutations"]["operators"] = ops  # the error once named the first parameter
        with pytest.raises(SpaceError, match=rf"mutations.operators.{key}: "):
            load(tmp_path, data)
    assert load(tmp_path, base(), ["storage=~/runs"]).storage == Path("~/runs").expanduser()
    with pytest.raises(SpaceError, match=r"s.yaml: data.seed: expected an int >= 0, got None"):
        load(tmp_path, base(), ["data.seed=null"])  # scikit-learn's random_state=None: each trial its own split
    from mutate.errors import BadInput
    from mutate.results.runs import prepare_run_dir

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    space = load(tmp_path, base(), [f"storage={blocker}"])
    with pytest.raises(BadInput, match=r"storage '.*a_file': cannot create the run directory .*a_file/digits_mlp "
                                       r"\(Not a directory\)"):
        prepare_run_dir(space)


def _claim_run_dir(storage: str, start, out) -> None:
    from mutate.results.runs import prepare_run_dir

    space = spaces.load(DIGITS, [f"storage={storage}"])
    start.wait()
    out.put(str(prepare_run_dir(space)))


def test_searches_started_together_get_their_own_run_directories(tmp_path):
    """Two searches started at the same moment with one storage and name shared a run directory (the free
    name was checked, then created with exist_ok), or crashed on each other's space.json.tmp (a bug hunt:
    4 of 20 pairs): the directory is claimed by linking space.json in, which one process only can do."""
    import json
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    for round_ in range(3):
        storage = tmp_path / f"runs{round_}"
        start, out = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_claim_run_dir, args=(str(storage), start, out)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 6
        dirs = sorted(out.get(timeout=5) for _ in procs)
        assert len(set(dirs)) == 6, dirs
        assert sorted(Path(d).name for d in dirs) == sorted(["digits_mlp", *(f"digits_mlp-{i}" for i in range(2, 7))])
        for d in dirs:
            assert [f.name for f in Path(d).iterdir()] == ["space.json"]  # no temporary file left
            assert json.loads((Path(d) / "space.json").read_text())["run_dir"] == d


def test_a_run_moved_with_its_yaml_finds_the_builder_beside_it(tmp_path, monkeypatch):
    """A bug hunt moved a run together with the folder of its YAML and user builder: `mutate export` and
    `pareto --sizes` then looked for the module in the YAML's old folder ("cannot import module"). The YAML
    is looked for at its old place, then at the same place relative to the moved run."""
    import shutil
    import sys

    from mutate.results.runs import load_recorded_space, prepare_run_dir

    old, new = tmp_path / "old place", tmp_path / "new place"
    old.mkdir()
    text = (ROOT / "search_spaces" / "user_model.yaml").read_text().replace("user_models:", "moved_user_models:")
    (old / "s.yaml").write_text(text)
    shutil.copy(ROOT / "search_spaces" / "user_models.py", old / "moved_user_models.py")
    run = prepare_run_dir(spaces.load(old / "s.yaml", ["storage=runs"]))
    assert run.parent == old / "runs" and load_recorded_space(run).path == old / "s.yaml"
    shutil.move(old, new)
    moved = load_recorded_space(new / "runs" / run.name)
    assert moved.path == new / "s.yaml"
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "moved_user_models", raising=False)
    monkeypatch.setenv("PYTHONPATH", "")
    from mutate.search import builders

    builders.import_user_modules(moved)
    assert Path(sys.modules["moved_user_models"].__file__).parent == new
    (new / "s.yaml").unlink()  # the YAML gone from both places: the recorded one stays (its error names it)
    assert load_recorded_space(new / "runs" / run.name).path == old / "s.yaml"


def test_a_budget_override_replaces_the_yamls_other_budget_key():
    """A docs check: every shipped space gives budget.ratio, so `--set budget.bytes=30000` was refused
    ("exactly one of bytes or ratio") unless `budget.ratio=null` came with it."""
    assert spaces.load(DIGITS, ["budget.bytes=30000"]).budget["bytes"] == 30000
    assert spaces.load(DIGITS, ["budget.bytes=30000"]).budget["ratio"] is None
    with pytest.raises(SpaceError, match=r"budget: expected exactly one of `bytes` or `ratio`"):
        spaces.load(DIGITS, ["budget.bytes=30000", "budget.ratio=0.2"])  # both given on the command line
    over = spaces.load(DIGITS, ["budget.bytes=30000", "budget.ratio=0.2", "budget.bytes=null"])
    assert over.budget == {"bytes": None, "ratio": 0.2, "unit": "stored"}
    assert spaces.load(DIGITS, ["budget.bytes=30000"]).raw["budget"] == {"bytes": 30000}  # what a run records


def test_missing_file_and_a_folder():
    with pytest.raises(SpaceError, match="no such search space file"):
        spaces.load("nowhere.yaml")
    with pytest.raises(SpaceError, match="search_spaces: is a folder; give a search space's YAML file"):
        spaces.load(ROOT / "search_spaces")


def test_set_overrides_any_key_and_parses_yaml(tmp_path):
    s = load(tmp_path, base(), ["search.population=2", "mutations.operators.low_rank.rank=[4, 2]",
                                "search.time_budget_s=30"])
    assert s.search["population"] == 2 and s.search["time_budget_s"] == 30.0
    assert s.mutations["operators"]["low_rank"]["rank"] == [4, 2]
    with pytest.raises(SpaceError, match="search.popul: unknown key"):
        load(tmp_path, base(), ["search.popul=2"])
    with pytest.raises(SpaceError, match="expected key.path=value"):
        load(tmp_path, base(), ["search.population"])
    # the builder's `data` argument is the dataset: the key was blamed on the builder ("got multiple values")
    with pytest.raises(SpaceError, match=r"^s.yaml: model.data: expected no such key .*, got 1$"):
        load(tmp_path, base(), ["model.data=1"])


@pytest.mark.parametrize("change, key, fragment", [
    (["mutations.layers=[nothing_*]"], "mutations.layers", "'nothing_*' matches no compressible kernel"),
    (["mutations.operators.low_rank.rank=[300]"], "mutations.operators.low_rank.rank", "300 does not fit layer"),
    (["mutations.operators.kmeans.k=[20000]"], "mutations.operators.kmeans.k", "20000"),
    (["mutations.operators.kmeans.block_size=[7]"], "mutations.operators.kmeans.block_size: 7 does not fit",
     "must divide"),
    (["budget.ratio=0.001"], "budget.ratio", "below the smallest model"),
    # a genome mutates at most max_mutations layers: a budget only all three layers reach is out of reach
    (["budget.ratio=0.1", "mutations.max_mutations=1"], "budget.ratio",
     "below the smallest model this space can reach with at most mutations.max_mutations=1 mutated layers"),
    (["mutations.layers=[flatten_x, logits]"], "mutations.layers", "'flatten_x' matches no compressible kernel"),
    (["model.hidden=oops"], "model", ""),
    (["mutations.operators.pruning+low_rank={sparsity: [0.5], rank: [2]}"], "mutations.operators.pruning+low_rank",
     "low_rank cannot compress pruning's values"),
    (["data.name=digits", "data.bogus=1"], "data", "bogus"),
    (["model.builder=nonexistent_pkg.mod:fn"], "model.builder", "cannot import module"),
    # a value the built-in rejects (a TypeError inside it) once read "mlp does not take ['hidden']"
    (["model.hidden=32"], "model.builder", "mlp raised TypeError: 'int' object is not iterable (called with "
                                           "model.hidden=32)"),
    (["data.name=digits", "data.test_fraction=1.5"], "data.name", "(called with data.test_fraction=1.5)"),
    (["training.batch_size=100000000"], "training.batch_size", "expected at most the 1,347 training rows"),
])
def test_errors_found_against_the_real_model(tmp_path, change, key, fragment):
    s = load(tmp_path, base(), change)
    with pytest.raises((SpaceError, ValueError)) as e:
        driver.prepare(s)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("s.yaml: ") and key in msg and fragment in msg, msg


def raising_builder(data, **kwargs):
    raise RuntimeError("boom")


def builder_without_data(hidden=8):
    raise AssertionError("not called")


def test_a_builder_without_a_data_parameter_is_named_as_such(tmp_path):
    """It read "does not take []" (the keywords were fine; the builder lacked `data`)."""
    s = load(tmp_path, base(), ["model.builder=tests.test_space:builder_without_data"])
    with pytest.raises(ValueError, match=r"^s.yaml: model.builder: tests.test_space:builder_without_data takes no "
                                         r"`data` keyword; a builder is called as builder_without_data\(data=Dataset"):
        driver.prepare(s)
    s = load(tmp_path, base(), ["model.builder=tests.test_space:builder_without_data", "model.width=3"])
    with pytest.raises(ValueError, match=r"does not take \['width'\]"):
        driver.prepare(s)


def builder_needing_width(data, *, width):
    raise AssertionError("not called")


def test_a_builder_missing_a_required_keyword_names_the_key_to_add(tmp_path):
    """Found by a bug hunt: it read "model: ... does not take []" when the section lacked a keyword."""
    s = load(tmp_path, {**base(), "model": {"builder": "tests.test_space:builder_needing_width"}}, [])
    with pytest.raises(ValueError, match=r"^s.yaml: model: tests.test_space:builder_needing_width needs model.width "
                                         r"\(no default\)"):
        driver.prepare(s)


def test_a_builder_that_raises_is_one_line(tmp_path):
    s = load(tmp_path, base(), ["model.builder=tests.test_space:raising_builder"])
    with pytest.raises(ValueError, match=r"s.yaml: model.builder: tests.test_space:raising_builder raised "
                                         r"RuntimeError: boom"):
        driver.prepare(s)


def test_unsupported_layer_type(tmp_path):
    s = load(tmp_path, base(), ["model.builder=cnn", "mutations.layers=[pool_*]", "model.filters=[4]",
                                "model.hidden=[8]"])
    with pytest.raises(SpaceError, match=r"mutations.layers: 'pool_\*' matches 'pool_1', a MaxPooling2D that cannot be compressed"):
        driver.prepare(s)


def test_missing_data_file(tmp_path):
    s = load(tmp_path, base(), ["data.name=fashion_mnist", f"data.data_dir={tmp_path}"])
    with pytest.raises(FileNotFoundError, match="s.yaml: data.name: fashion_mnist: .*lacks train-images"):
        driver.prepare(s)


@pytest.mark.parametrize("population, fractions", [(8, [1.0, 0.5, 0.25]), (12, [1.0, 0.5, 0.25]), (7, [1.0]),
                                                    (4, [1.0])])
def test_budget_fractions_auto_adds_niches_to_pbt_populations_of_eight_or_more(tmp_path, population, fractions):
    data = base()
    data["search"].update(population=population)
    assert load(tmp_path, data).search["budget_fractions"] == fractions
    data["search"].update(strategy="greedy")
    assert load(tmp_path, data).search["budget_fractions"] == [1.0]  # greedy: niches only when listed
    data["search"].update(budget_fractions=[0.5])
    assert load(tmp_path, data).search["budget_fractions"] == [1.0, 0.5]  # the budget's own niche is always kept


def test_the_user_model_example_builds_from_the_module_beside_its_space(tmp_path, monkeypatch):
    """search_spaces/user_model.yaml names a registered subclassed model in user_models.py beside it: it
    builds without PYTHONPATH, its globs reach attention's projections and the GRU's kernels, and a checkpoint
    of it (a `.keras` file, as the search writes) loads back with equal outputs."""
    import sys

    import keras
    import numpy as np

    from mutate.search import builders

    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p).resolve() != ROOT / "search_spaces"])
    monkeypatch.delitem(sys.modules, "user_models", raising=False)
    monkeypatch.setenv("PYTHONPATH", "")  # restored after the test (prepare appends the space's folder)
    monkeypatch.chdir(tmp_path)
    s = spaces.load(ROOT / "search_spaces" / "user_model.yaml", check_operator=policy.check_operator)
    prepared = driver.prepare(s)
    assert sorted(prepared.allowed) == ["attention/attention_output", "attention/key", "attention/query",
                                        "attention/value", "gru", "gru/recurrent_kernel", "head"]
    assert prepared.allowed["gru"] == ["low_rank", "pruning", "kmeans"] and "low_rank" not in prepared.allowed["head"]
    data = builders.load_data(s.data, s.where)
    model = builders.build_model(s.model, data, s.where)
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    x = data.x_test[:16]
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize("strategy, refused", [("pbt", True), ("greedy", True), ("uniform", False),
                                               ("random", False)])
def test_more_niches_than_members_is_refused_only_where_niches_are_used(tmp_path, strategy, refused):
    """Found by a bug hunt: a space listing three niches was refused for `--strategy uniform` with a population
    of 2, though uniform and random ignore niches."""
    data = base()
    data["search"].update(budget_fractions=[1.0, 0.5, 0.25], population=2, strategy=strategy)
    if refused:
        with pytest.raises(SpaceError, match="at most search.population"):
            load(tmp_path, data)
    else:
        assert load(tmp_path, data).search["population"] == 2



def twin_builder(data, **kwargs):
    import keras

    @keras.saving.register_keras_serializable(package="mutate_tests")
    class Twins(keras.Model):
        """Two Dense layers both named ``d`` (Keras allows it)."""

        def __init__(self, classes=10, **kw):
            super().__init__(**kw)
            self.classes = classes
            self.a = keras.layers.Dense(16, name="d")
            self.b = keras.layers.Dense(classes, name="d")

        def call(self, x):
            return self.b(self.a(x))

        def get_config(self):
            return {**super().get_config(), "classes": self.classes}

    model = Twins(data.num_classes, name="twins")
    model(data.x_train[:2])
    return model


def test_two_kernels_at_one_path_and_an_operator_left_no_layer_are_refused_before_the_search(tmp_path):
    """Found by a bug hunt: both searches started and every trial failed ("'d' is matched by more than one
    plan key"; an operator whose `layers` missed every mutable layer was silently never used)."""
    s = load(tmp_path, base(), ["model.builder=tests.test_space:twin_builder", "mutations.layers=['*']"])
    with pytest.raises(SpaceError, match=r"^s.yaml: model.builder: tests.test_space:twin_builder built a model with "
                                         r"two compressible kernels at 'd' \(two layers of one name\)"):
        driver.prepare(s)
    s = load(tmp_path, base(), ["mutations.layers=[logits]", "mutations.operators.low_rank.layers=['dense_*']"])
    with pytest.raises(SpaceError, match=r"^s.yaml: mutations.operators.low_rank.layers: \['dense_\*'\] leaves "
                                         r"low_rank no layer that mutations.layers \['logits'\] makes mutable"):
        driver.prepare(s)
