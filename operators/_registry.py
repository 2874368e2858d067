"""Name -> Compressor class registry, with third-party operators from the ``mutate.operators`` entry points."""

from __future__ import annotations

from importlib import metadata
from typing import Any, Callable, TypeVar

from operators._base import Compressor

_REGISTRY: dict[str, type[Compressor]] = {}
_ENTRY_POINTS_LOADED = False
C = TypeVar("C", bound=type[Compressor])


def register(name: str) -> Callable[[C], C]:
    """Class decorator registering a `Compressor` subclass under ``name``.

    Raises:
        ValueError: ``name`` is already taken by another class.
        TypeError: the decorated object is not a Compressor subclass.
    """

    def deco(cls: C) -> C:
        if not (isinstance(cls, type) and issubclass(cls, Compressor)):
            raise TypeError(f"operators.register({name!r}) expects a Compressor subclass, but got {cls!r}.")
        old = _REGISTRY.get(name)
        if old is not None and old.__qualname__ != cls.__qualname__:
            raise ValueError(f"operator name {name!r} is already registered by {old.__module__}.{old.__qualname__}.")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in metadata.entry_points(group="mutate.operators"):
        ep.load()  # importing the module registers its operators


def available() -> list[str]:
    """Sorted names of every registered operator."""
    _load_entry_points()
    return sorted(_REGISTRY)


def get(name: str | Compressor, **params: Any) -> Compressor:
    """Create the operator registered as ``name`` with ``params`` and validate them.

    Args:
        name: a registry name such as ``"low_rank"``, or a Compressor instance (returned as is once checked).
        **params: the operator's keyword parameters, e.g. ``rank=16``.

    Raises:
        ValueError: unknown name (the message lists the available ones) or an invalid parameter value.
        TypeError: an unknown parameter or a parameter of the wrong type.
    """
    if isinstance(name, Compressor):
        if params:
            raise TypeError(f"operators.get got a Compressor instance and extra params {sorted(params)}.")
        name.check()
        return name
    _load_entry_points()
    if name not in _REGISTRY and "+" in name:  # "pruning+kmeans": a stack of those stages
        from operators.stack import from_name

        op = from_name(name, params)
        op.check()
        return op
    if name not in _REGISTRY:
        raise ValueError(f"unknown operator {name!r}; available: {', '.join(available())}.")
    cls = _REGISTRY[name]
    try:
        op = cls(**params)
    except TypeError as e:
        raise TypeError(f"operator {name!r}: {e}") from None
    op.check()
    return op
