"""mutate: neural-architecture mutation with compression as the genetic operator.

Core API: `compressible` lists every kernel of a Keras model that can be compressed (by path, nested and
subclassed models included); `compress` makes the planned kernels blend into their operator's factors in
place (the layer objects stay); `CompressionCallback` drives their alpha schedules during `fit`; `strip`
splices finished ones (A is gone); `densify` makes a kernel plain again; `model_size` counts the bits a
model really stores. `run_search` runs a search from Python (what ``mutate search`` does) and
`load_run` opens a search's run directory.

``import mutate`` is cheap: the Keras parts load on first use. The compressed classes are registered with
Keras as soon as Keras is imported (before or after mutate), so ``keras.saving.load_model`` opens mutate
models after a plain ``import mutate``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "CompressionCallback": "mutate.operator.callback", "blending_kernels": "mutate.operator.callback",
    "Schedule": "mutate.operator.schedule", "LayerSize": "mutate.operator.size", "ModelSize": "mutate.operator.size",
    "model_size": "mutate.operator.size", "compress": "mutate.operator", "strip": "mutate.operator",
    "densify": "mutate.operator", "compressible": "mutate.operator", "kernel": "mutate.operator", "Kernel": "mutate.operator",
    "PlanError": "mutate.operator", "export_model": "mutate.results.formats", "load_run": "mutate.results.report", "Run": "mutate.results.report",
    "run_search": "mutate.commands",
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
    if "mutate.operator.host" not in sys.modules:  # (when it is, it is being imported, and registers at its end)
        importlib.import_module("mutate.operator.host")  # registers ``mutate>Compressed``, ``mutate>CompressedModel``


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
