"""`mutate pareto` outputs on a hand-made run directory: table, CSV, JSON, PNG and the offline HTML page,
rendered in a real headless browser when one is installed."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mutate.results import report
from mutate.results.runs import append_point

SPACE = {"name": "toy", "data": {"name": "digits"}, "budget": {"ratio": 0.1}}
ROWS = [(1000, 1.0, 0.95, []), (200, 0.2, 0.93, ["dense_1:low_rank(r=8)"]), (90, 0.09, 0.90, ["x"]),
        (150, 0.15, 0.85, ["y"]), (90, 0.09, 0.90, ["dup"])]


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "toy"
    d.mkdir()
    (d / "space.json").write_text(json.dumps({"space": SPACE, "space_path": None}))
    for i, (size, ratio, acc, genome) in enumerate(ROWS):
        append_point(d, {"trial": f"t{i % 2}", "step": 50 * (i + 1), "bytes": size, "ratio": ratio, "val_accuracy": acc,
                         "genome": [], "genome_summary": " ".join(genome) or "dense", "checkpoint": f"models/{i}"})
    with open(d / "points.jsonl", "a") as f:
        f.write('{"trial": "t0", "step": 9')  # a torn last line, as after a SIGKILL
    return d


def test_front_table_files_and_hypervolume(run_dir, capsys):
    report.pareto([run_dir])
    out = capsys.readouterr().out
    run = report.load_run(run_dir)
    assert [(p.size, p.metric) for p in run.pareto_front()] == [(90, 0.90), (200, 0.93), (1000, 0.95)]
    assert run.pareto_front()[0].checkpoint == "models/2"  # of duplicates, the first reported
    # (0.2-0.09)*(0.9-0.1) + (1-0.2)*(0.93-0.1)
    assert run.hypervolume() == pytest.approx(0.11 * 0.8 + 0.8 * 0.83)
    assert run.dense_bytes == 1000 and run.budget_bytes() == 100
    assert re.search(r"^\s+0\s+90\s+0\.0900\s+0\.9000", out, re.M), out
    rows = (run_dir / "pareto.csv").read_text().splitlines()
    assert rows[0].startswith("point,bytes,ratio,val_accuracy,test_accuracy") and len(rows) == 4
    summary = json.loads((run_dir / "pareto.json").read_text())
    assert summary["hypervolume"] == pytest.approx(run.hypervolume()) and summary["points"] == 5
    assert summary["best_under_budget"] == 0 and "  at the budget (100 B): point 0, 90 B, validation accuracy 0.9000\n" in out
    (run_dir / "space.json").write_text(json.dumps({"space": {**SPACE, "budget": {"bytes": 50}}, "space_path": None}))
    report.pareto([run_dir])  # a budget no point fits: said in the table's last line, and in pareto.json
    assert "  at the budget (50 B): no front point fits (the smallest has 90 B)\n" in capsys.readouterr().out
    assert json.loads((run_dir / "pareto.json").read_text())["best_under_budget"] is None
    assert (run_dir / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (run_dir / "pareto.html").read_text()
    assert "mutate export" in html and not re.search(r"<script[^>]+src=\"https?://", html), "must work offline"
    assert len(html) < 50_000  # inline SVG (plotly's inlined page was 4.6 MiB)
    tips = re.findall(r'class="point front"[^>]*data-tip="([^"]*)"', html)
    assert len(tips) == 3 and "dense_1:low_rank(r=8)" in tips[1] and "--point 1 --out" in tips[1]


def test_selection_never_reads_test_metrics(run_dir):
    """Scrambled test values (stored after the search, or per report by an earlier version) change no choice."""
    import random

    from mutate.results.export import choose
    from mutate.results.final import write_tests

    before = report.load_run(run_dir)
    chosen = [(p.checkpoint, p.metric) for p in before.pareto_front()]
    picks = [choose(before, point=None, max_size=150, min_accuracy=None).checkpoint,
             choose(before, point=None, max_size=None, min_accuracy=0.92).checkpoint]
    rng = random.Random(0)
    write_tests(run_dir, {f"models/{i}": rng.random() for i in range(len(ROWS))})
    old_style = run_dir.parent / "old"
    old_style.mkdir()
    (old_style / "space.json").write_text((run_dir / "space.json").read_text())
    for line in (run_dir / "points.jsonl").read_text().splitlines()[:-1]:
        append_point(old_style, {**json.loads(line), "accuracy": rng.random()})  # an earlier version's rows
    for d in (run_dir, old_style):
        after = report.load_run(d)
        assert [(p.checkpoint, p.metric) for p in after.pareto_front()] == chosen
        assert after.hypervolume() == pytest.approx(before.hypervolume())
        assert [choose(after, point=None, max_size=150, min_accuracy=None).checkpoint,
                choose(after, point=None, max_size=None, min_accuracy=0.92).checkpoint] == picks
        assert all(p.test is not None for p in after.pareto_front())
    assert report.load_run(run_dir).test_source == "final"
    assert report.load_run(old_style).test_source == "per report"
    assert before.test_source == "none" and before.test_hypervolume() is None


def test_a_point_appended_after_a_torn_line_is_read_and_a_closed_pipe_is_quiet(run_dir):
    """On resume the first new row was glued onto the torn last line and both were skipped (a front point's
    checkpoint then looked unreferenced and was pruned); `mutate pareto RUN | head` was an internal error."""
    from mutate.results.runs import read_points

    before = len(read_points(run_dir))
    append_point(run_dir, {"trial": "t9", "step": 1, "bytes": 5, "ratio": 0.005, "val_accuracy": 0.5,
                           "genome": [], "genome_summary": "z", "checkpoint": "models/new"})
    rows = read_points(run_dir)
    assert len(rows) == before + 1 and rows[-1]["checkpoint"] == "models/new"
    proc = subprocess.Popen([sys.executable, "-m", "mutate.cli", "pareto", str(run_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the table is printed
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "error" not in err, err
    assert not (run_dir / "internal_error.txt").exists()


def test_compare_two_runs(run_dir, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    report.pareto([run_dir, other])
    out = capsys.readouterr().out
    assert (tmp_path / "compare_toy_vs_other.png").is_file()
    # each run's validation-chosen winner at its own budget (100 B): the 90 B point, no test value yet
    assert re.search(r"^toy\s+5\s+3\s+0\.7520\s+-\s+90\s+0\.9000\s+-$", out, re.M), out
    assert report.load_run(run_dir).best_under_budget().size == 90
    assert (tmp_path / "compare_toy_vs_other.html").is_file()


def test_a_language_model_run_and_a_classifier_run_are_not_compared_on_one_axis(run_dir, tmp_path, capsys):
    """Perplexity and accuracy were plotted on one axis labelled by the first run's metric."""
    from mutate.errors import BadInput

    lm = tmp_path / "lm"
    lm.mkdir()
    (lm / "space.json").write_text(json.dumps({"space": SPACE, "space_path": None}))
    append_point(lm, {"trial": "t0", "step": 50, "bytes": 90, "ratio": 0.09, "val_perplexity": 40.0,
                      "genome": [], "genome_summary": "dense", "checkpoint": "models/0"})
    with pytest.raises(BadInput, match=r"lm measures perplexity and .*toy accuracy; a comparison plots one metric"):
        report.pareto([run_dir, lm])
    assert capsys.readouterr().out == "" and not (run_dir / "pareto.csv").exists()
    assert not list(tmp_path.glob("compare_*"))


def test_many_runs_compare_under_a_short_name_and_commands_are_shell_quoted(run_dir, tmp_path, capsys):
    """Nine long run names made a 330-byte file name (an internal error: File name too long); the copy-paste
    `mutate export` commands of a run whose path has a space split in a shell."""
    import shlex

    names = [f"search_run_with_a_descriptive_name_{i}" for i in range(9)]
    name = report.compare_name(names)
    assert len(name.encode()) < 200 and name.startswith(f"compare_{names[0]}_and_8_more_")
    assert name == report.compare_name(list(names)) != report.compare_name(names[::-1])
    assert report.compare_name(["toy", "other"]) == "compare_toy_vs_other.png"
    spaced = tmp_path / "my runs" / "ünï run"
    shutil.copytree(run_dir, spaced)
    for n in names[:3]:
        shutil.copytree(run_dir, tmp_path / "my runs" / n)
    report.pareto([spaced, *[tmp_path / "my runs" / n for n in names[:3]]])
    html = (spaced / "pareto.html").read_text()
    assert f"mutate export {shlex.quote(str(spaced))} --point 0" in html.replace("&#x27;", "'")
    assert "wrote" in capsys.readouterr().out


def test_two_runs_of_one_name_compare_under_distinct_labels(run_dir, tmp_path, capsys):
    """The same run name from two storages (a pbt and a greedy study) printed two identical rows."""
    for side in ("pbt", "greedy"):
        shutil.copytree(run_dir, tmp_path / side / "digits_mlp")
    report.pareto([tmp_path / "pbt" / "digits_mlp", tmp_path / "greedy" / "digits_mlp"])
    out = capsys.readouterr().out
    table = out[out.index("best under budget:"):].splitlines()[1:3]
    rows = [line.split()[0] for line in table]
    assert rows == ["pbt/digits_mlp", "greedy/digits_mlp"], out
    assert (tmp_path / "pbt" / "compare_pbt_digits_mlp_vs_greedy_digits_mlp.png").is_file()
    html = (tmp_path / "pbt" / "compare_pbt_digits_mlp_vs_greedy_digits_mlp.html").read_text()
    assert "pbt/digits_mlp: front of" in html and "greedy/digits_mlp: front of" in html
    assert report.distinct_labels([tmp_path / "a", tmp_path / "b"]) == ["a", "b"]


def test_a_run_that_refuses_files_still_prints_its_front(run_dir, monkeypatch, capsys):
    """A read-only run (a shared copy): `mutate pareto` wrote its files before printing and died on the first
    (an internal error, no table)."""
    from mutate import cli

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(report.Path, "write_text", refuse)
    monkeypatch.setattr(report.Path, "write_bytes", refuse)
    assert cli.main(["pareto", str(run_dir)]) == 0
    out, err = capsys.readouterr()
    assert "on the front chosen on validation" in out and "wrote pareto" not in out
    assert err.strip() == (f"mutate: note: could not write the front's files in {run_dir} (Permission denied); "
                           "the table above is complete")
    assert not list(run_dir.glob("pareto.*"))


def test_a_front_tested_in_part_says_so(run_dir, capsys):
    """After an interrupted search, one `export` filled one test value and the "not evaluated" note vanished."""
    from mutate.results.final import write_tests

    report.pareto([run_dir])
    assert "test column empty" in capsys.readouterr().out
    fr = report.load_run(run_dir).pareto_front()
    write_tests(run_dir, {fr[0].checkpoint: 0.9})
    report.pareto([run_dir])
    assert f"(test column: 1 of {len(fr)} front points evaluated;" in capsys.readouterr().out


def test_choosing_a_point_takes_exactly_one_rule_and_a_printed_accuracy_selects_its_point(run_dir):
    """`Run.export()` with no rule crashed (TypeError); a --min-accuracy copied from the table (4 decimals)
    refused the very point it was printed for when the stored value was 0.92996..."""
    from mutate.errors import BadInput
    from mutate.results.export import choose

    run = report.load_run(run_dir)
    for kwargs in ({}, {"point": 0, "max_size": 100}):
        with pytest.raises(BadInput, match="exactly one of point, max_size or min_accuracy"):
            choose(run, **{"point": None, "max_size": None, "min_accuracy": None, **kwargs})
    rows = run_dir / "points.jsonl"
    rows.write_text("".join(line + "\n" for line in rows.read_text().splitlines()[:-1]))  # drop the torn line
    append_point(run_dir, {"trial": "t9", "step": 1, "bytes": 120, "ratio": 0.12, "val_accuracy": 0.92996,
                           "genome": [], "genome_summary": "z", "checkpoint": "models/z"})
    run = report.load_run(run_dir)
    assert choose(run, point=None, max_size=None, min_accuracy=0.9300).checkpoint == "models/z"  # table: 0.9300
    with pytest.raises(BadInput, match="the best front point reaches 0.9500$"):
        choose(run, point=None, max_size=None, min_accuracy=0.951)
    for bad in (-1.0, float("nan")):  # -1 once exported the smallest point
        with pytest.raises(BadInput, match=r"--min-accuracy (-1.0|nan): expected a number >= 0"):
            choose(run, point=None, max_size=None, min_accuracy=bad)


def test_run_export_chooses_among_the_points_the_run_showed_while_a_search_still_writes(run_dir, tmp_path):
    """Found by a bug hunt: `Run.export(point=0)` re-read the folder and exported point 0 of the front as it
    was by then (a search still running had added a smaller point), not the point the `Run` showed."""
    import yaml

    from mutate.errors import MissingInput

    space = yaml.safe_load((Path(__file__).resolve().parents[1] / "search_spaces" / "digits_mlp.yaml").read_text())
    (run_dir / "space.json").write_text(json.dumps({"space": space, "space_path": None}))  # a space export can load
    run = report.load_run(run_dir)
    shown = run.pareto_front()[0]
    append_point(run_dir, {"trial": "t9", "step": 1, "bytes": 10, "ratio": 0.01, "val_accuracy": 0.99,
                           "genome": [], "genome_summary": "z", "checkpoint": "models/z"})
    assert report.load_run(run_dir).pareto_front()[0].trial == "t9"  # the folder's front has changed
    with pytest.raises(MissingInput, match=rf"point {shown.trial}/{shown.step}: .* \(gone since this Run was read"):
        run.export(tmp_path / "m.keras", point=0)  # this hand-made run keeps no models: the shown point's is named


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (.ci/run installs Debian's)")
def test_html_renders_every_point_without_console_errors(run_dir):
    report.pareto([run_dir])
    res = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                          "--v=0", "--virtual-time-budget=5000", "--dump-dom",
                          (run_dir / "pareto.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    console = [line for line in res.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    drawn = re.findall(r'class="point (all|front)"', res.stdout)
    assert drawn.count("all") == len(ROWS) and drawn.count("front") == 3  # every point in grey, the front on top


def test_a_comparison_takes_its_metric_from_a_run_with_points_and_lm_columns_stay_apart(run_dir, tmp_path, capsys):
    """Found by a bug hunt: with a first run that had no points yet, a comparison of language models was drawn
    as "validation accuracy" without dense or budget lines; perplexity hypervolumes (hundreds) ran into the
    front count ("2682.8494682.8817")."""
    from mutate.results import plots

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "space.json").write_text(json.dumps({"space": SPACE, "space_path": None}))
    lm = tmp_path / "lm"
    lm.mkdir()
    (lm / "space.json").write_text(json.dumps({"space": SPACE, "space_path": None}))
    for i, (size, ppl) in enumerate([(1000, 600.0), (300, 650.0), (90, 900.0)]):
        append_point(lm, {"trial": "t0", "step": 50 * (i + 1), "bytes": size, "ratio": size / 1000,
                          "val_perplexity": ppl, "genome": [], "genome_summary": "dense" if i == 0 else f"g{i}",
                          "checkpoint": f"models/{i}"})
    runs = [report.load_run(empty), report.load_run(lm)]
    assert plots.reference(runs).dir == lm
    html = plots.pareto_html(runs)
    assert "perplexity" in html and "accuracy" not in html
    lines = report.compare_table(runs).splitlines()
    lm_row = next(line for line in lines if line.startswith("lm "))
    fields = lm_row.split()
    assert fields[1:3] == ["3", "3"] and float(fields[3]) == pytest.approx(runs[1].hypervolume(), abs=1e-4), lm_row


def test_the_test_set_line_counts_only_the_points_it_evaluated(run_dir, monkeypatch):
    """A front point whose checkpoint was removed is skipped with a line; the summary line counted it as
    evaluated (found by a bug hunt's reading)."""
    from types import SimpleNamespace

    import keras

    from mutate.results import final
    from mutate.search import builders
    from mutate.results import runs

    (run_dir / "models" / "2").mkdir(parents=True)
    (run_dir / "models" / "2" / "model.keras").write_bytes(b"stand-in")
    monkeypatch.setattr(runs, "load_recorded_space", lambda d: SimpleNamespace(data={}, where="s.yaml"))
    monkeypatch.setattr(builders, "import_user_modules", lambda space: None)
    monkeypatch.setattr(builders, "load_data", lambda data, where: SimpleNamespace(x_test=None, y_test=None))
    monkeypatch.setattr(keras.saving, "load_model", lambda path, compile=False: path)
    monkeypatch.setattr(final, "evaluate", lambda model, x, y, lm: 0.5)
    lines: list[str] = []
    values = final.evaluate_front(run_dir, out=lines.append)
    assert values == {"models/2": 0.5}
    assert sum("has no checkpoint" in line for line in lines) == 2, lines  # models/1 and models/0
    assert "evaluated the 1 validation-front point(s)" in lines[-1], lines


def test_compared_runs_of_different_budgets_each_draw_their_budget_line(run_dir, tmp_path):
    """The comparison plots drew only the first run's budget: a 10% run compared with a 5% one showed one
    dashed line, and the second run's winner looked over its budget."""
    from mutate.results import plots

    tight = tmp_path / "tight"
    shutil.copytree(run_dir, tight)
    recorded = json.loads((tight / "space.json").read_text())
    recorded["space"]["budget"] = {"ratio": 0.05}
    (tight / "space.json").write_text(json.dumps(recorded))
    runs = [report.load_run(run_dir), report.load_run(tight)]
    assert plots.marks(runs) == [("dense", 1000, "dense model"), ("budget", 100, "size budget: toy"),
                                 ("budget", 50, "size budget: tight")]
    html = plots.pareto_html(runs)
    assert html.count('class="budget"/>') == 2 and html.count('class="dense"/>') == 1  # the lines
    assert "size budget: tight</text>" in html
    assert plots.marks(runs[:1]) == [("dense", 1000, "dense model"), ("budget", 100, "size budget")]
    assert plots.pareto_png(runs)[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler for the test, whatever this process started with: a test run started in the
    background (`cmd &` in a script) inherits SIGINT ignored, and a deferred Ctrl-C then went to SIG_IGN."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("python_sigint")
def test_a_ctrl_c_while_the_front_files_are_written_leaves_them_all_old_or_all_new(tmp_path, monkeypatch):
    """A bug hunt's Ctrl-C inside `mutate pareto`'s writes left pareto.*.tmp files behind (only an OSError
    cleaned up), and one between the renames a new csv and json beside an old png and html."""
    import signal

    targets = {tmp_path / f"pareto.{x}": f"new {x}" for x in ("csv", "json", "html")}
    for path in targets:
        path.write_text("old")
    real_write = Path.write_text
    calls = []

    def interrupted_write(self, *args, **kwargs):
        calls.append(self)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_write(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(Path, "write_text", interrupted_write)
        with pytest.raises(KeyboardInterrupt):
            report._write_set(targets)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pareto.csv", "pareto.html", "pareto.json"]
    assert {p.read_text() for p in targets} == {"old"}

    real_replace, renamed = Path.replace, []

    def signalled_replace(self, target):  # Ctrl-C after the first rename
        renamed.append(self)
        if len(renamed) == 1:
            signal.raise_signal(signal.SIGINT)
        return real_replace(self, target)

    with monkeypatch.context() as m:
        m.setattr(Path, "replace", signalled_replace)
        with pytest.raises(KeyboardInterrupt):
            report._write_set(targets)
    assert len(renamed) == 3 and [p.read_text() for p in targets] == list(targets.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pareto.csv", "pareto.html", "pareto.json"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
