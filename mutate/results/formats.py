"""`export_model`: write a (spliced) model where it runs: ``.keras``, a TensorFlow SavedModel, or LiteRT.

LiteRT goes through Keras' own ``model.export(format="litert")`` (TensorFlow's converter, builtin ops only),
in one of two forms (``arrays``):

- ``packed``: traced with `mutate.operator.anchor.exporting` on, the spliced integer arrays (pruning
  bitmasks, k-means codes, dictionary indices, SimHash's sign bits) reach the converter behind a run-time
  gather that it cannot fold, so they stay packed in the file and builtin ops unpack them at every call;
  random matrices regenerated from a seed (``simhash``, ``random_projection``) are hashed in the graph
  (`operators._hash`). Float factors stay as they are; a low-rank Dense stays two FULLY_CONNECTED ops.
- ``folded``: traced as Keras computes, the converter folds every array a layer derives from its stored
  ones into float32 constants (a pruned kernel becomes its dense matrix): no unpacking at run time, but
  only smaller than ``packed`` when the unpacking graph outweighs the arrays (small models: each unpacking
  or hashing subgraph costs kilobytes).
- ``smallest`` (the default) converts both and keeps the smaller file.

After writing, a LiteRT file is run in the interpreter on the given rows and compared with Keras; beyond the
tolerance it is deleted and the export refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from mutate import files
from mutate.errors import BadInput, MetricMismatch

FORMATS = ("keras", "litert", "saved_model")
ARRAYS = ("smallest", "packed", "folded")
"""How a LiteRT file holds the spliced arrays (module docstring)."""
TOLERANCE = 1e-4
"""Largest accepted |LiteRT - Keras| output difference, relative to max(1, the largest |Keras output|)."""


@dataclass(frozen=True)
class Exported:
    """What `export_model` wrote: the path, its bytes (a folder's total), gzip bytes (files only), and for a
    checked LiteRT file the largest output difference and the accuracy by Keras and by the interpreter; for
    LiteRT also the form written (``packed`` or ``folded``) and, when both were converted, the other's bytes."""

    path: Path
    format: str
    bytes: int
    gzip_bytes: int | None = None
    max_diff: float | None = None
    keras_accuracy: float | None = None
    litert_accuracy: float | None = None
    arrays: str | None = None
    other_bytes: int | None = None


def format_for(path: Path, fmt: str | None) -> str:
    """The format named, or the one ``path`` implies (.keras, .tflite, else a SavedModel folder)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise BadInput(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
        want = {"keras": ".keras", "litert": ".tflite"}.get(fmt)
        if want and Path(path).suffix != want:
            raise BadInput(f"--out {path}: a {fmt} file must end in {want}")
        if fmt == "saved_model" and Path(path).suffix in (".keras", ".tflite"):
            raise BadInput(f"--out {path}: a SavedModel is a folder; name it without the {Path(path).suffix} suffix")
        return fmt
    suffix = Path(path).suffix
    if suffix not in ("", ".keras", ".tflite"):
        raise BadInput(f"--out {path}: name a .keras or .tflite file, or a folder without a suffix (a SavedModel)")
    return {".keras": "keras", ".tflite": "litert"}.get(suffix, "saved_model")


def interpreter(blob: bytes) -> Any:
    """A LiteRT interpreter (``ai_edge_litert`` when installed, else TensorFlow's deprecated one)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Interpreter(model_content=blob)


_NATIVE_INFO = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


@contextlib.contextmanager
def _held_fd2() -> Any:
    """Hold what is written on file descriptor 2 (native code's stderr) in the block; yields a dict whose
    ``"bytes"`` is set to it when the block ends (None when there is no descriptor 2 to redirect)."""
    import sys

    held: dict[str, bytes | None] = {"bytes": None}
    with contextlib.suppress(Exception):
        sys.stderr.flush()  # what Python holds goes out before the redirection, in order
    try:
        saved = os.dup(2)
    except OSError:
        yield held
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield held
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            held["bytes"] = sink.read()


def _pass_on(data: bytes | None) -> None:
    if data:
        os.write(2, data)


@contextlib.contextmanager
def quiet_delegate_notice() -> Any:
    """Drop the line LiteRT's C++ prints on file descriptor 2 when it first applies its XNNPACK delegate
    (``allocate_tensors``): it leaked into `mutate export`'s and `mutate pareto --sizes`' output. Every other
    byte written to descriptor 2 meanwhile is passed on, in order, when the block ends."""
    try:
        with _held_fd2() as held:
            yield
    finally:
        kept = [line for line in (held["bytes"] or b"").splitlines(keepends=True) if line.rstrip() != _NATIVE_INFO]
        _pass_on(b"".join(kept))


def run_litert(blob: bytes, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """The LiteRT model's outputs on ``x`` (one input), ``batch`` rows per invoke."""
    interp = interpreter(blob)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    parts = []
    for i in range(0, len(x), batch):
        rows = np.asarray(x[i:i + batch]).astype(inp["dtype"])
        interp.resize_tensor_input(inp["index"], rows.shape)
        with quiet_delegate_notice():
            interp.allocate_tensors()
        interp.set_tensor(inp["index"], rows)
        interp.invoke()
        parts.append(interp.get_tensor(out["index"]).copy())
    return np.concatenate(parts)


def _blending(model: keras.Model) -> list[str]:
    from mutate.operator.surgery import compressible

    return [k.path for k in compressible(model) if k.state == "blending"]


def export_model(model: keras.Model, path: str | Path, format: str | None = None, *, x: np.ndarray | None = None,
                 y: np.ndarray | None = None, tolerance: float = TOLERANCE, arrays: str = "smallest") -> Exported:
    """Write ``model`` to ``path`` as ``format`` (``keras``, ``litert`` or ``saved_model``; None: from the
    suffix). Nothing is left at ``path`` when it fails.

    Args:
        model: for LiteRT and SavedModel, a model whose compressed kernels are spliced (`mutate.strip`); a
            .keras file may also hold kernels still blending (to train on).
        x, y: rows to check a LiteRT file on (and labels for its accuracy); None skips the check.
        tolerance: the largest accepted output difference, relative to max(1, max |Keras output|).
        arrays: LiteRT only: ``packed``, ``folded`` or ``smallest`` (both converted, the smaller file kept);
            see the module docstring. A SavedModel is always traced packed.

    Raises:
        BadInput: a kernel is still blending (LiteRT and SavedModel), the format does not fit the path, or
            ``arrays`` is not one of `ARRAYS`.
        MetricMismatch: the LiteRT outputs differ from Keras' beyond ``tolerance`` (the file is deleted).
    """
    path = Path(path)
    fmt = format_for(path, format)
    check_backend(fmt, path)
    if arrays not in ARRAYS:
        raise BadInput(f"{path}: arrays={arrays!r}: choose one of {', '.join(ARRAYS)}")
    check_destination(path, fmt)
    if x is not None:
        _check_rows(path, x, y, model)
    blending = _blending(model) if fmt != "keras" else []  # a .keras file may hold a blending model
    if blending:
        raise BadInput(f"{path}: {', '.join(blending)} still blending; splice first (mutate.strip), or export "
                       "as .keras to keep training it")
    created = [p for p in reversed(path.parents) if not p.exists()]  # folders made here, outermost first
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.")
    except OSError as e:  # a read-only place, a file on the way, /proc...
        _remove_empty(created)
        raise BadInput(f"{path}: cannot write there ({e.strerror or e})") from None
    try:
        report = _write_staged(model, path, fmt, staging, x, y, tolerance, arrays)
    except BaseException:
        staging.cleanup()
        _remove_empty(created)  # a failed export leaves no folder it made behind
        raise
    return report


def check_destination(path: Path, fmt: str) -> None:
    """Refuse an output path this cannot write, before a checkpoint is loaded and evaluated: a SavedModel
    over a file, any export over a folder that is not a SavedModel, a file on the way to it.

    Raises:
        BadInput: one line naming the path.
    """
    path = Path(path)
    if fmt == "saved_model" and path.exists() and not path.is_dir():
        raise BadInput(f"{path}: is a file, and a SavedModel is a folder; refusing to replace it (choose another "
                       "path, or name a .keras or .tflite file)")
    if path.is_dir() and not (fmt == "saved_model" and (path / "saved_model.pb").is_file()):
        # only a SavedModel is a folder this writes: never replace another folder (`--out .` with --force)
        raise BadInput(f"{path}: is a folder{' that is not a SavedModel' if fmt == 'saved_model' else ''}; "
                       "refusing to replace it (choose another --out)")
    blocker = next((p for p in path.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise BadInput(f"{path}: cannot write there ({blocker} is a file, not a folder)")


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):  # innermost first
        with contextlib.suppress(OSError):
            folder.rmdir()


def _write_staged(model: keras.Model, path: Path, fmt: str, staging: Any, x: Any, y: Any, tolerance: float,
                  arrays: str) -> Exported:
    """Write ``model`` in a staging folder beside ``path``, then move it into place (the part of
    `export_model` after its checks)."""
    with staging as tmp:
        staged = Path(tmp) / path.name
        if fmt == "keras":
            _save_keras(model, staged)
            report = Exported(path, fmt, _bytes(staged))
        elif fmt == "saved_model":
            _convert(model, staged, fmt, packed=True, named=path)
            report = Exported(path, fmt, _bytes(staged))
        else:
            forms = ("packed", "folded") if arrays == "smallest" else (arrays,)
            blobs = _litert_blobs(model, Path(tmp), forms, path)
            # smallest first (a tie keeps the packed form); with rows to check on, a form whose outputs differ
            # from Keras' gives way to the other (a converter that folds a graph wrongly), else is refused
            order = sorted(forms, key=lambda f: (len(blobs[f]), f != "packed"))
            refused: MetricMismatch | None = None
            for form in order:
                blob = blobs[form]
                _refuse_flex(blob, path)
                other = [len(b) for f, b in blobs.items() if f != form]
                report = Exported(path, fmt, len(blob), len(gzip.compress(blob)), arrays=form,
                                  other_bytes=other[0] if other else None)
                if x is None:
                    break
                try:
                    report = _check(model, blob, report, x, y, tolerance)
                    break
                except MetricMismatch as e:
                    refused = refused or e
            else:
                assert refused is not None
                raise refused
            staged.write_bytes(blob)
        if path.exists():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        staged.replace(path)
    return report


BACKENDS = {"keras": ("tensorflow", "jax", "torch"), "saved_model": ("tensorflow", "jax"), "litert": ("tensorflow",)}
"""The Keras backends each format exports from (Keras converts LiteRT through TensorFlow; its PyTorch backend
cannot trace a SavedModel of these models)."""


def check_backend(fmt: str, path: str | Path) -> None:
    """Refuse a format this process's Keras backend cannot write, before anything is loaded.

    Raises:
        BadInput: one line naming the backend that can (a run's checkpoints load on every backend).
    """
    backend = keras.backend.backend()
    if backend not in BACKENDS[fmt]:
        raise BadInput(f"{path}: a {fmt} export needs KERAS_BACKEND={' or '.join(BACKENDS[fmt])}; this process "
                       f"runs Keras on {backend} (a run's checkpoints load on any backend: rerun the command "
                       f"with KERAS_BACKEND={BACKENDS[fmt][0]})")


def _save_keras(model: keras.Model, path: Path) -> None:
    """Save ``model`` as .keras; a compile whose optimizer never trained (an evaluation's, e.g. `mutate
    export`'s) is left out, so the file loads uncompiled instead of with an unbuilt default optimizer whose
    variables Keras then skips with a warning. A trained optimizer is kept (to resume training)."""
    optimizer = getattr(model, "optimizer", None)
    # (JAX and PyTorch build the optimizer's variables in `evaluate` too: trained means it took a step)
    trained = optimizer is not None and optimizer.built and int(keras.ops.convert_to_numpy(optimizer.iterations)) > 0
    if not getattr(model, "compiled", False) or trained:
        model.save(path)
        return
    model.compiled, model.optimizer = False, None
    try:
        model.save(path)
    finally:
        model.compiled, model.optimizer = True, optimizer


def _litert_blobs(model: keras.Model, tmp: Path, forms: tuple[str, ...], path: Path) -> dict[str, bytes]:
    """The LiteRT file of each form. When one needs TensorFlow's select ops (Flex) and the model has Keras RNN
    layers (their while loop is what converts to Flex), they are converted again unrolled (``unroll=True`` for
    the conversion only: the same maths, builtin ops); if that fails (a sequence length not fixed), the first
    files stand and `_refuse_flex` names the ops."""
    def convert(into: Path) -> dict[str, bytes]:
        blobs = {}
        for form in forms:
            out = into / form / path.name
            _convert(model, out, "litert", packed=form == "packed", named=path)
            blobs[form] = out.read_bytes()
        return blobs

    rnns = [layer for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.RNN) and not layer.unroll]
    if not rnns:
        return convert(tmp)
    # the converter's report of the loop's select ops ("Flex ops: FlexTensorListReserve, ...") is held, and
    # shown only when the unrolled conversion does not replace those files
    try:
        with _held_fd2() as report:
            blobs = convert(tmp)
    except BaseException:
        _pass_on(report["bytes"])
        raise
    if not any(_flex_ops(b) is not None for b in blobs.values()):
        _pass_on(report["bytes"])
        return blobs
    for layer in rnns:
        layer.unroll = True
    try:
        unrolled = convert(tmp / "unrolled")
    except Exception:  # noqa: BLE001 - e.g. Keras' "Cannot unroll a RNN if the time dimension is undefined"
        _pass_on(report["bytes"])
        return blobs
    finally:
        for layer in rnns:
            layer.unroll = False
    return unrolled


def _flex_ops(blob: bytes) -> list[str] | None:
    """The select TensorFlow ops (Flex) a LiteRT file needs, or None when the builtin runtime runs it."""
    import re

    try:
        with quiet_delegate_notice():
            interpreter(blob).allocate_tensors()
    except RuntimeError as e:
        if "Select TensorFlow op" not in str(e):
            raise
        return sorted(set(re.findall(r"\(Flex(\w+)\)", str(e))))
    return None


def _refuse_flex(blob: bytes, path: Path) -> None:
    """A LiteRT file that needs TensorFlow's select ops (Flex: the converter's fallback, e.g. for an RNN's
    while loop) is refused in one line naming them: the builtin runtime cannot run it, so neither can the
    check, and mutate exports builtin ops only."""
    ops_ = _flex_ops(blob)
    if ops_ is not None:
        raise BadInput(f"{path}: LiteRT would need TensorFlow's select ops (Flex) for {', '.join(ops_) or 'some ops'}"
                       "; mutate exports builtin ops only (a Keras RNN layer is unrolled for LiteRT when its "
                       "number of timesteps is fixed); export .keras or a SavedModel instead; nothing written")


def _called(model: keras.Model) -> None:
    """Call a subclassed model once on zeros of its build shape if it never was (a loaded one): Keras'
    export takes its input signature from the first call."""
    if isinstance(model, keras.Sequential) or getattr(model, "_called", True) or hasattr(model, "_inputs_struct"):
        return
    shapes = getattr(model, "_build_shapes_dict", None) or {}
    if len(shapes) != 1:
        return  # Keras' own error says what is missing
    shape = next(iter(shapes.values()))
    if not isinstance(shape, (tuple, list)) or not all(isinstance(d, (int, type(None))) for d in shape):
        return
    model(np.zeros(tuple(1 if d is None else d for d in shape), "float32"))


def _convert(model: keras.Model, out: Path, fmt: str, *, packed: bool, named: Path) -> None:
    """Keras' export to ``out`` (``litert`` or ``saved_model``), traced packed or folded; an op the converter
    cannot take is a `BadInput` naming ``named`` (the path the user asked for)."""
    import contextlib

    from mutate.operator.anchor import exporting

    out.parent.mkdir(parents=True, exist_ok=True)
    _called(model)
    with exporting() if packed else contextlib.nullcontext():
        try:
            model.export(str(out), format="litert" if fmt == "litert" else "tf_saved_model", verbose=False)
        except Exception as e:  # noqa: BLE001 - the converter's own error type lives in TensorFlow
            message = unconvertible(model, e)
            if message is None:
                raise
            raise BadInput(f"{named}: {message}; nothing written") from None


def unconvertible(model: keras.Model, error: Exception) -> str | None:
    """One line naming the op LiteRT could not convert and the layer it comes from, or None when ``error`` is
    not such a converter error (then it is an internal error)."""
    import re

    text = str(error)
    op = re.search(r"'tf\.(\w+)' op is neither a custom op nor a flex op", text)
    if op is None:
        return None
    names = {layer.name for layer in model._flatten_layers(include_self=False)}
    where = re.search(r'fused\["\w+:", "([^"@]+)@', text)
    layer = None
    for part in (where.group(1).split("/")[1:] if where else []):
        for name in (part, re.sub(r"_\d+$", "", part)):
            if name in names:
                layer = name
                break
        if layer:
            break
    return (f"LiteRT cannot convert op {op.group(1)} (no builtin kernel; mutate exports builtin ops only) in "
            f"layer {layer!r}" if layer else f"LiteRT cannot convert op {op.group(1)} (no builtin kernel; mutate "
            "exports builtin ops only)")


def _bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _check_rows(path: Path, x: Any, y: Any, model: keras.Model | None = None) -> None:
    """The rows a LiteRT file is checked on: at least one, of the model's input shape, and as many labels as
    rows.

    Raises:
        BadInput: an empty ``x``, rows of another shape than the model's (single) input, or a ``y`` of another
            length.
    """
    rows = len(x) if hasattr(x, "__len__") else None
    if rows == 0:
        raise BadInput(f"{path}: x has no rows to check the file on")
    inputs = getattr(model, "inputs", None) if model is not None else None
    shape = getattr(x, "shape", None)
    if inputs and len(inputs) == 1 and shape is not None:
        want = tuple(inputs[0].shape[1:])
        if len(shape) - 1 != len(want) or any(w is not None and w != g for w, g in zip(want, shape[1:])):
            expected = "(rows, " + ", ".join("?" if w is None else str(w) for w in want) + ")"
            raise BadInput(f"{path}: x has shape {tuple(shape)}; the model takes {expected}")
    if y is not None and rows is not None and len(y) != rows:
        raise BadInput(f"{path}: y has {len(y):,} labels for {rows:,} rows of x")


def _check(model: keras.Model, blob: bytes, report: Exported, x: np.ndarray, y: np.ndarray | None,
           tolerance: float) -> Exported:
    want = model.predict(x, verbose=0, batch_size=256)
    got = run_litert(blob, x)
    diff = float(np.abs(got - want).max())
    scale = max(1.0, float(np.abs(want).max()))
    acc_k = acc_l = None
    if y is not None and want.ndim == 2:
        acc_k, acc_l = float((want.argmax(1) == y).mean()), float((got.argmax(1) == y).mean())
    if not diff <= tolerance * scale:
        raise MetricMismatch(f"{report.path}: the LiteRT outputs differ from Keras' by up to {diff:.3g} (tolerance "
                             f"{tolerance:g} x {scale:.3g}); nothing written")
    return dataclasses.replace(report, max_diff=diff, keras_accuracy=acc_k, litert_accuracy=acc_l)


SIZES_FILE = "file_sizes.json"
"""Per checkpoint of a run: its counted bytes and its .keras, .tflite and gzip(.tflite) bytes (a cache)."""


def file_sizes(run_dir: Path, checkpoints: list[str]) -> dict[str, dict[str, int]]:
    """The counted, .keras, .tflite and gzip(.tflite) bytes of each checkpoint's spliced model, converted once
    and cached in ``RUN_DIR/file_sizes.json``; a checkpoint that is gone is left out; a model LiteRT refuses
    has None for its .tflite sizes and the reason under ``tflite_refused``."""
    import json

    import mutate

    cache_path = Path(run_dir) / SIZES_FILE
    try:  # a cache: a damaged one is rebuilt
        cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    except (ValueError, UnicodeDecodeError):
        cache = {}
    cache = {k: v for k, v in cache.items() if _sizes_entry_ok(v)} if isinstance(cache, dict) else {}
    from mutate.results.runs import load_checkpoint, load_recorded_space

    space = None
    if any(name not in cache for name in checkpoints):  # a user model's class registers when its module loads
        check_backend("litert", Path(run_dir) / SIZES_FILE)
        from mutate.search import builders

        space = load_recorded_space(run_dir)
        builders.import_user_modules(space)
    for name in checkpoints:
        model_path = Path(run_dir) / name / "model.keras"
        if name in cache or not model_path.is_file():
            continue
        model = mutate.strip(load_checkpoint(model_path, space), finished_only=True)
        with tempfile.TemporaryDirectory() as tmp:
            k = export_model(model, Path(tmp) / "m.keras")
            try:
                lite = export_model(model, Path(tmp) / "m.tflite")
            except BadInput as e:  # e.g. ops LiteRT runs only through TensorFlow's select ops
                lite, why = None, str(e).split(": ", 1)[-1].split("; ")[0]
        cache[name] = {"counted": mutate.model_size(model).bits // 8, "keras": k.bytes,
                       "tflite": lite.bytes if lite else None, "tflite_gzip": (lite.gzip_bytes or 0) if lite else None}
        if lite is None:
            cache[name]["tflite_refused"] = why
        with contextlib.suppress(OSError):  # a read-only run (or a full disk) still gets its sizes, converted
            files.write_text(cache_path, json.dumps(cache, indent=1))  # again next time
    return {n: cache[n] for n in checkpoints if n in cache}


def _sizes_entry_ok(entry: Any) -> bool:
    """A cached entry of `file_sizes` as it writes them (a damaged or hand-edited one is converted again)."""
    def count(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    return (isinstance(entry, dict) and count(entry.get("counted")) and count(entry.get("keras"))
            and (count(entry.get("tflite")) and count(entry.get("tflite_gzip"))
                 or entry.get("tflite") is None and isinstance(entry.get("tflite_refused"), str)))
