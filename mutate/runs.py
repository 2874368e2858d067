"""Run directories: the points a search reports, one JSON row per line, appended as it goes. Pure Python.

A row holds: trial, step, genome (list of mutations), genome_summary, bytes, ratio (of the dense model),
accuracy and val_accuracy (or perplexity and val_perplexity), score, fits_budget, checkpoint (a folder
relative to the run directory holding ``model.keras`` and ``state.json``) and timings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

POINTS = "points.jsonl"
SPACE_FILE = "space.json"


def append_point(run_dir: Path, row: dict[str, Any]) -> None:
    """Append one row and make it durable (flush + fsync), so a killed driver loses no reported point."""
    with open(run_dir / POINTS, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_points(run_dir: Path) -> list[dict[str, Any]]:
    """Every row of a run, in order. A trial may report a step twice (after an exploit rewinds it, or a
    resume repeats it); each report is its own point with its own checkpoint. A torn last line (the driver
    was killed mid-write) is skipped.

    Raises:
        FileNotFoundError: ``run_dir`` is not a run directory.
    """
    run_dir = Path(run_dir)
    if not (run_dir / SPACE_FILE).is_file():
        raise FileNotFoundError(f"{run_dir}: not a mutate run directory (no {SPACE_FILE})")
    path = run_dir / POINTS
    if not path.is_file():
        return []
    rows: dict[Any, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        rows[row.get("checkpoint") or len(rows)] = row
    return list(rows.values())
