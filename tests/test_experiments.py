"""The experiments folder's scripts: each one that runs as a program answers --help without running its job."""

from __future__ import annotations

from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def test_every_experiment_script_parses_its_arguments():
    # a script without a parser runs its whole study (and overwrites its .txt/.csv) on `--help`
    scripts = [p for p in sorted(EXPERIMENTS.glob("*.py")) if 'if __name__ == "__main__":' in p.read_text()]
    assert len(scripts) > 20
    unparsed = [p.name for p in scripts if "ArgumentParser(" not in p.read_text()]
    assert unparsed == []
