"""mutate: neural-architecture mutation with compression as the genetic operator.

Core API (TFMOT-style): `compress` wraps layers in blended layers, `CompressionCallback` drives their
per-layer alpha schedules during `fit`, `strip` splices finished ones into their factored layers, and
`model_size` counts the bits a model really stores. `load_run` opens a search's run directory.

``import mutate`` is cheap: the Keras parts load on first use. The layer classes are registered with Keras
as soon as Keras is imported (before or after mutate), so ``keras.saving.load_model`` opens mutate models
after a plain ``import mutate``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "CompressionCallback": "mutate.callbacks", "blended_layers": "mutate.callbacks",
    "CompressedConv2D": "mutate.layers", "CompressedDense": "mutate.layers", "CompressedEmbedding": "mutate.layers",
    "CompressedLSTM": "mutate.layers", "FactorConv2D": "mutate.layers", "FactorDense": "mutate.layers",
    "FactorEmbedding": "mutate.layers", "FactorLSTM": "mutate.layers", "SplicedConv2D": "mutate.layers",
    "SplicedDense": "mutate.layers", "SplicedEmbedding": "mutate.layers", "SplicedLSTM": "mutate.layers",
    "Schedule": "mutate.schedule", "LayerSize": "mutate.size", "ModelSize": "mutate.size",
    "model_size": "mutate.size", "compress": "mutate.surgery", "strip": "mutate.surgery",
    "densify": "mutate._densify", "load_run": "mutate.report", "Run": "mutate.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mutate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


def _register_layers() -> None:
    importlib.import_module("mutate.layers")  # its classes register themselves with Keras


class _RegisterWhenKerasLoads(importlib.abc.MetaPathFinder):
    """Runs `_register_layers` right after ``keras`` finishes importing, then steps aside."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("keras")
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            _register_layers()

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if "keras" in sys.modules:
    _register_layers()
elif not any(isinstance(f, _RegisterWhenKerasLoads) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWhenKerasLoads())
