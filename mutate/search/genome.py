"""A trial's genome: the ordered list of compressions spliced into its model. Pure Python, JSON-able."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_SHORT = {"rank": "r", "sparsity": "s", "block_size": "b", "n_nonzero": "nz"}


@dataclass(frozen=True)
class Mutation:
    """One compression: ``operator(**params)`` on ``layer``, applied at training step ``step``.

    Attributes:
        layer: the layer name in the base model.
        operator: a registered operator name.
        params: the operator's parameters.
        step: the trial's training step where its blend window began; None while it is only proposed.
    """

    layer: str
    operator: str
    params: dict[str, Any] = field(default_factory=dict)
    step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "operator": self.operator, "params": dict(self.params), "step": self.step}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Mutation:
        return cls(str(d["layer"]), str(d["operator"]), dict(d.get("params") or {}),
                   None if d.get("step") is None else int(d["step"]))

    def applied(self, step: int) -> Mutation:
        """This mutation, marked as applied at ``step``."""
        return Mutation(self.layer, self.operator, dict(self.params), int(step))

    def same_choice(self, other: Mutation) -> bool:
        """Equal apart from the step."""
        return (self.layer, self.operator, self.params) == (other.layer, other.operator, other.params)

    def choice(self) -> tuple[str, str, Any]:
        """The hashable (layer, operator, params) this mutation applies, without its step (rank=8 and 8.0 alike)."""
        from operators._base import _frozen

        return self.layer, self.operator, _frozen(self.params)

    def summary(self) -> str:
        """``dense_1:low_rank(r=16)`` (``dense_1:dense`` for an undo)."""
        if self.operator == "dense":
            return f"{self.layer}:dense"
        args = ",".join(f"{_SHORT.get(k, k)}={v}" for k, v in sorted(self.params.items()))
        return f"{self.layer}:{self.operator}({args})"

    def __hash__(self) -> int:
        return hash(self.choice())  # rank=8 and 8.0 alike, as == has them


Genome = tuple[Mutation, ...]

UNDO = "dense"
"""The operator name of an undo: the layer goes back to a dense kernel holding the product it computed."""


def to_json(genome: Genome) -> list[dict[str, Any]]:
    """A genome as a list of plain dicts."""
    return [m.to_dict() for m in genome]


def from_json(rows: list[dict[str, Any]] | None) -> Genome:
    """Inverse of `to_json`."""
    return tuple(Mutation.from_dict(r) for r in rows or [])


def choices(genome: Genome) -> frozenset[tuple[str, str, Any]]:
    """What ``genome`` compresses, and how: its `current` mutations without their steps (two genomes reaching
    the same compressions in another order or at other steps compare equal)."""
    return frozenset(m.choice() for m in current(genome).values())


def current(genome: Genome) -> dict[str, Mutation]:
    """The mutation in force for each compressed layer (the last one naming it; an undo, operator
    ``"dense"``, leaves the layer dense and out of the result)."""
    out: dict[str, Mutation] = {}
    for m in genome:
        out.pop(m.layer, None)
        if m.operator != UNDO:
            out[m.layer] = m
    return out


def summary(genome: Genome) -> str:
    """One line, e.g. ``dense_1:low_rank(r=16) logits:pruning(s=0.9)``, or ``dense`` for an empty genome."""
    return " ".join(m.summary() for m in current(genome).values()) or "dense"


def pending(applied: Genome, wanted: Genome) -> Genome:
    """The mutations of ``wanted`` that come after ``applied``, which must be its prefix.

    Raises:
        ValueError: ``applied`` is not a prefix of ``wanted`` (steps ignored).
    """
    if len(applied) > len(wanted) or not all(a.same_choice(w) for a, w in zip(applied, wanted)):
        raise ValueError(f"genome {summary(wanted)!r} does not extend the applied genome {summary(applied)!r}.")
    return wanted[len(applied):]
