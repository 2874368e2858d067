"""The per-layer alpha schedule: alpha goes 1 -> 0 in steps of `alpha_decrement` every `frequency` steps.

Pure Python: a layer keeps its own step and alpha as variables; the schedule only does the arithmetic.
"""

from __future__ import annotations

import difflib
import math
import warnings
from typing import Any

import numpy as np

_ALIASES = {"begin_compression_step": "begin_step", "end_compression_step": "end_step",
            "compression_frequency": "frequency", "alpha_decrement_value": "alpha_decrement"}
# graph_compression hparams that carry no schedule information: accepted and reported, never fatal.
_KNOWN_FOREIGN = {"name", "rank", "prune_option", "compression_option", "use_tpu", "update_option",
                  "block_size", "block_method", "compression_factor", "num_bases", "dictionary_size",
                  "use_collection", "kmeans_init", "is_c_matrix_trainable", "is_b_matrix_trainable",
                  "is_d_matrix_trainable", "input_compression_factor", "use_lsh", "stop_gradient_c"}


class Schedule:
    """When a layer blends from its dense kernel A to its factors, and how fast.

    Updates happen at steps ``begin_step + i * frequency`` (i = 0, 1, ...). Update i sets
    ``alpha = max(0, 1 - (i + 1) * alpha_decrement)``; the last update sets it to exactly 0. Before
    ``begin_step`` alpha is 1. Steps count the training batches a layer has seen since it was compressed.

    Args:
        begin_step: first update (factors are computed from A there). Alias ``begin_compression_step``.
        end_step: the step by which alpha must reach 0. Alias ``end_compression_step``.
        frequency: steps between updates. Alias ``compression_frequency``.
        alpha_decrement: alpha removed at each update; when None it is chosen so that alpha reaches 0 at
            the last update at or before ``end_step``. Alias ``alpha_decrement_value``.

    Raises:
        ValueError: a step is negative, ``end_step < begin_step``, ``frequency < 1``, the decrement is not
            in (0, 1], neither ``end_step`` nor ``alpha_decrement`` is given, or the decrement cannot reach 0
            by ``end_step``.
    """

    def __init__(self, begin_step: int | None = None, end_step: int | None = None, frequency: int | None = None,
                 alpha_decrement: float | None = None, **aliases: Any) -> None:
        given = {"begin_step": begin_step, "end_step": end_step, "frequency": frequency,
                 "alpha_decrement": alpha_decrement}
        for alias, value in aliases.items():
            if alias not in _ALIASES:
                raise TypeError(f"Schedule() got an unexpected keyword argument {alias!r}.")
            target = _ALIASES[alias]
            if given[target] is not None:
                raise ValueError(f"Schedule got both `{target}` and its alias `{alias}`; give one.")
            given[target] = value
        self.begin_step = _int("begin_step", 0 if given["begin_step"] is None else given["begin_step"], 0)
        self.frequency = _int("frequency", 1 if given["frequency"] is None else given["frequency"], 1)
        self.end_step = None if given["end_step"] is None else _int("end_step", given["end_step"], self.begin_step)
        dec = given["alpha_decrement"]
        if dec is None:
            if self.end_step is None:
                raise ValueError("Schedule needs `end_step` or `alpha_decrement`, but got neither.")
            self.num_updates = (self.end_step - self.begin_step) // self.frequency + 1
            self.alpha_decrement = 1.0 / self.num_updates
        else:
            if isinstance(dec, bool) or not isinstance(dec, (int, float)) or not 0 < dec <= 1:
                raise ValueError(f"`alpha_decrement` must be in (0, 1], but got alpha_decrement={dec!r}.")
            self.alpha_decrement = float(dec)
            self.num_updates = max(1, math.ceil(1.0 / self.alpha_decrement - 1e-9))
            if self.end_step is not None and self.final_step > self.end_step:
                raise ValueError(
                    f"alpha_decrement={dec!r} every {self.frequency} steps from step {self.begin_step} needs "
                    f"{self.num_updates} updates and reaches alpha=0 at step {self.final_step}, after "
                    f"end_step={self.end_step}; raise the decrement or the end step, or leave the decrement None.")
        self.ignored_hparams: dict[str, str] = {}

    @property
    def final_step(self) -> int:
        """The step of the last update, where alpha becomes 0."""
        return self.begin_step + (self.num_updates - 1) * self.frequency

    def update_index(self, step: int) -> int | None:
        """Index i of the update that happens at ``step``, or None when ``step`` is not an update step."""
        if step < self.begin_step or step > self.final_step or (step - self.begin_step) % self.frequency:
            return None
        return (step - self.begin_step) // self.frequency

    def alpha(self, step: int) -> float:
        """Alpha in force after the update (if any) at ``step``: 1 before ``begin_step``, 0 from ``final_step``."""
        if step < self.begin_step:
            return 1.0
        i = min((step - self.begin_step) // self.frequency, self.num_updates - 1)
        if i == self.num_updates - 1:
            return 0.0
        return max(0.0, 1.0 - (i + 1) * self.alpha_decrement)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (the decrement only when it was given explicitly or no end is set)."""
        return {"begin_step": self.begin_step, "end_step": self.end_step, "frequency": self.frequency,
                "alpha_decrement": self.alpha_decrement}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Schedule":
        """Inverse of `get_config`."""
        return cls(**config)

    @classmethod
    def from_hparams(cls, hparams: str) -> "Schedule":
        """Parse graph_compression's hparams string, e.g. ``"begin_compression_step=40000,..."``.

        Schedule keys are used; every other key (graph_compression's ``use_tpu``, ``rank``, ...) is accepted,
        kept in ``schedule.ignored_hparams`` and reported with a warning. A near-miss of a schedule key
        (``begin_compresion_step``) raises ValueError rather than being ignored.
        """
        values: dict[str, Any] = {}
        ignored: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in hparams.split(","))):
            if "=" not in item:
                raise ValueError(f"hparams item {item!r} is not key=value (in {hparams!r}).")
            key, raw = (s.strip() for s in item.split("=", 1))
            if key in _ALIASES or key in _ALIASES.values():
                try:
                    values[_ALIASES.get(key, key)] = float(raw) if "decrement" in key else int(raw)
                except ValueError:
                    raise ValueError(f"hparams key {key!r} must be a number, but got {key}={raw!r}.") from None
            else:
                near = difflib.get_close_matches(key, [*_ALIASES, *_ALIASES.values()], n=1, cutoff=0.85)
                if near and key not in _KNOWN_FOREIGN:
                    raise ValueError(f"unknown hparams key {key!r} (value {raw!r}); did you mean {near[0]!r}?")
                ignored[key] = raw
        schedule = cls(**values)
        schedule.ignored_hparams = ignored
        if ignored:
            warnings.warn(f"Schedule.from_hparams ignored graph_compression keys with no schedule meaning: "
                          f"{', '.join(f'{k}={v}' for k, v in ignored.items())}", stacklevel=2)
        return schedule

    def __repr__(self) -> str:
        return (f"Schedule(begin_step={self.begin_step}, end_step={self.end_step}, frequency={self.frequency}, "
                f"alpha_decrement={self.alpha_decrement:.6g})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and self.get_config() == other.get_config()


def _int(name: str, value: Any, low: int) -> int:
    if isinstance(value, np.generic):  # np.int64(16) as 16, np.float64(16.0) as 16.0
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int) and not (isinstance(value, float) and value.is_integer()):
        raise TypeError(f"`{name}` must be an int, but got {name}={value!r}.")
    if value < low:
        raise ValueError(f"`{name}` must be >= {low}, but got {name}={value!r}.")
    return int(value)
