"""The `Compressor` interface: factor a matrix ``A`` (m x n) into factors whose product approximates it.

Operators are pure NumPy at factor time. Only `product`, `matmul`, `gather` and `unpack` run in the layer's
graph, and they import `keras.ops` lazily so that factoring and its tests never import TensorFlow.
"""

from __future__ import annotations

import abc
import inspect
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

Factors = dict[str, np.ndarray]
"""Factor name -> array, in the order of `Compressor.specs`."""

_BITS = {"float16": 16, "bfloat16": 16, "float32": 32, "float64": 64, "int8": 8, "uint8": 8, "int16": 16, "uint16": 16,
         "int32": 32, "uint32": 32, "int64": 64, "uint64": 64}


def dtype_bits(dtype: Any) -> int:
    """Bits one stored element of ``dtype`` takes (bool is stored as a byte)."""
    try:
        name = np.dtype(dtype).name
    except TypeError:  # a name NumPy alone does not know ("bfloat16" without ml_dtypes registered)
        name = str(getattr(dtype, "name", dtype))
    if name == "bool":
        return 8
    if name not in _BITS:
        raise ValueError(f"no bit width is known for dtype {name!r}")
    return _BITS[name]


def array_bits(arrays: Mapping[str, np.ndarray]) -> int:
    """Total bits stored by ``arrays``: elements times the width of their dtype."""
    return int(sum(int(np.prod(a.shape)) * dtype_bits(a.dtype) for a in arrays.values()))


def take_rows(table: Any, indices: Any) -> Any:
    """``ops.take(table, indices, axis=0)`` whose gradient with respect to ``table`` is dense.

    In TensorFlow the gradient of a gather is an IndexedSlices with one slice per lookup. Keras' Adam squares
    those slices before their duplicates are summed, so a row looked up N times gets the second moment
    Σg² instead of (Σg)² and steps up to sqrt(N) times too far: one step on a 2-entry k-means codebook
    looked up 235,200 times moved it 297 learning rates, and LeNet's k=2 codebook ran away to chance
    accuracy. The reshape to its own shape makes TensorFlow sum the slices first (its gradient densifies).

    Args:
        table: (rows, ...) factor, e.g. a codebook (k, block) or a dictionary (atoms, n).
        indices: integer tensor of any shape.

    Returns:
        indices.shape + table.shape[1:].
    """
    import keras
    from keras import ops

    if keras.backend.backend() == "tensorflow" and len(table.shape) == 2 and int(table.shape[1]) <= _NARROW:
        return _take_narrow(table, indices)
    return ops.take(ops.reshape(table, ops.shape(table)), indices, axis=0)


_NARROW = 16
"""Row width up to which `take_rows` sums a TensorFlow gather's gradient with a weighted bincount per column:
TensorFlow's own gradient (one IndexedSlices row per lookup, densified by UnsortedSegmentSum) took ~4 ms for
a 784x300 k-means kernel's 235,200 one-float lookups into 8 rows here, 4x the dense layer's whole step."""


def _take_narrow(table: Any, indices: Any) -> Any:
    """`take_rows` of a narrow table (a k-means codebook) whose gradient is a bincount of the lookups' gradients
    (dense, so Adam sees each row's summed gradient once)."""
    from keras import ops

    rows, width = (int(d) for d in table.shape)
    table = ops.reshape(table, (rows, width))  # a tensor: a variable read inside would need tf's `variables`
    flat = ops.reshape(ops.cast(indices, "int32"), (-1,))

    @ops.custom_gradient
    def take(t: Any) -> Any:
        def grad(*args: Any, upstream: Any = None) -> Any:
            g = ops.reshape(args[0] if upstream is None else upstream, (-1, width))
            cols = [ops.bincount(flat, weights=ops.cast(g[:, j], "float32"), minlength=rows) for j in range(width)]
            return ops.cast(ops.reshape(ops.stack(cols, axis=1), (rows, width)), t.dtype)

        return ops.take(t, flat, axis=0), grad

    return ops.reshape(take(table), (*ops.shape(indices), width))


@dataclass(frozen=True)
class FactorSpec:
    """Shape, dtype and default trainability of one factor."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    trainable: bool = True


class Compressor(abc.ABC):
    """Factors a matrix ``A`` of shape (m, n) into factors whose product ``B∘C`` approximates it.

    Subclasses store their parameters in ``__init__`` (keyword-only, no validation there), check them in
    `check`, and implement the three abstract methods. ``operators.get`` validates parameters on creation.

    Class attributes:
        name: the registry name, set by ``operators.register``.
        pair: True when the factors are ``left`` (m, k) and ``right`` (k, n) and the product is
            ``left @ right``; `mutate.strip` then splices the layer into two standard Keras layers.
        generated: names of factors regenerated from the operator's seed by `generate` (a fixed random
            projection). Layers hold them as constants, never as weights, and they cost no bits.
        uses_saliency: True when `_factor` takes a ``saliency`` matrix (m, n): an EMA of ``|A * dL/dW|``
            that a blended layer accumulates from real gradients with decay ``saliency_decay``.
        refreshable: False when a blended layer must factor A once and then train the factors, even with
            ``refresh=True``. k-means sets it: re-clustering a drifting A at every update moves the whole
            codebook in one discontinuous jump, and on LeNet-300-100 (Fashion-MNIST, k = 4 and 8) those
            jumps collapsed training to chance level; clustering once and training the codebook (Deep
            Compression's trained quantization) is stable (see experiments/README.md).
    """

    name: ClassVar[str] = ""
    pair: ClassVar[bool] = False
    generated: ClassVar[tuple[str, ...]] = ()
    uses_saliency: ClassVar[bool] = False
    refreshable: ClassVar[bool] = True
    saliency_decay: float = 0.9

    # -- the three methods every operator defines ------------------------------------------------------
    @abc.abstractmethod
    def specs(self, m: int, n: int) -> dict[str, FactorSpec]:
        """The factor variables a layer allocates for an (m, n) matrix, in a fixed order."""

    @abc.abstractmethod
    def _factor(self, a: np.ndarray) -> Factors:
        """Factor a finite float32 matrix ``a`` of shape (m, n) whose parameters were already checked."""

    @abc.abstractmethod
    def product(self, factors: Mapping[str, Any]) -> Any:
        """``B∘C`` as a Keras tensor of shape (m, n), from tensors shaped as in `specs`."""

    # -- validation ---------------------------------------------------------------------------------------
    def check(self, m: int | None = None, n: int | None = None) -> None:
        """Raise ValueError/TypeError when a parameter is invalid (for an (m, n) matrix when given)."""

    # -- factoring ----------------------------------------------------------------------------------------
    def factor(self, a: np.ndarray, *, saliency: np.ndarray | None = None) -> Factors:
        """Factor ``a`` (m x n) and return arrays shaped and typed as ``specs(m, n)`` says.

        Args:
            a: the matrix, shape (m, n).
            saliency: per-weight importance, shape (m, n), for operators with ``uses_saliency`` (ignored
                by the others). None or all zeros means no gradient was seen yet.

        Raises:
            ValueError: ``a`` is not 2-D, holds NaN or Inf, or a parameter does not fit its shape.
        """
        a = self.checked_matrix(a)
        m, n = a.shape
        self.check(m, n)
        if self.uses_saliency:
            if saliency is not None:
                saliency = np.asarray(saliency, np.float32)
                if saliency.shape != (m, n) and saliency.shape != (m * n,):
                    raise ValueError(f"{self.name}: saliency has shape {saliency.shape}, expected ({m}, {n}).")
                saliency = saliency.reshape(m, n)
                if not np.all(np.isfinite(saliency)):
                    raise ValueError(f"{self.name}: the saliency of the {m}x{n} matrix holds NaN/Inf values.")
            factors = self._factor(a, saliency=saliency)  # type: ignore[call-arg]
        else:
            factors = self._factor(a)
        specs = self.specs(m, n)
        if list(factors) != list(specs):
            raise AssertionError(f"{self.name}: factor names {list(factors)} differ from specs {list(specs)}")
        return {k: np.asarray(v, dtype=specs[k].dtype).reshape(specs[k].shape) for k, v in factors.items()}

    def checked_matrix(self, a: np.ndarray) -> np.ndarray:
        """``a`` as a float32 (m, n) matrix, or a ValueError: not 2-D, not real numbers, NaN/Inf, or finite
        values beyond float32's range (they would become Inf)."""
        a = np.asarray(a)
        if a.dtype.name == "bfloat16":  # ml_dtypes' type is no np.number; its values are exact in float32
            a = a.astype(np.float32)
        if a.ndim != 2:
            raise ValueError(f"{self.name}: expected a 2-D matrix, but got an array of shape {a.shape}.")
        if np.iscomplexobj(a) or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise ValueError(f"{self.name}: expected a real-valued matrix, but got dtype {a.dtype}.")
        if not np.all(np.isfinite(a)):
            bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
            raise ValueError(f"{self.name}: the {a.shape[0]}x{a.shape[1]} matrix holds {bad} NaN/Inf values; "
                             "refusing to factor it.")
        with np.errstate(over="ignore"):
            a32 = a.astype(np.float32, copy=False)
        if a32 is not a and not np.all(np.isfinite(a32)):  # finite float64 beyond float32's range
            raise ValueError(f"{self.name}: the {a.shape[0]}x{a.shape[1]} matrix holds values beyond float32's "
                             f"range (largest magnitude {float(np.max(np.abs(a))):.3g}); refusing to factor it.")
        return a32

    # -- refreshing a blend's factors from the drifting A ----------------------------------------------------
    def refreshed(self, a: np.ndarray, factors: Mapping[str, np.ndarray]) -> Factors:
        """The factors a refresh (``refresh=True``, an update while alpha > 0) assigns, from the current A
        (m x n) and the current ``factors`` (NumPy). Default: factor A afresh. An operator that also defines
        `refreshed_tensor` computes the same thing there (so every backend gives the same factors)."""
        return self.factor(a)

    def refreshed_tensor(self, a: Any, factors: Mapping[str, Any]) -> dict[str, Any] | None:
        """`refreshed` in Keras ops, run inside the training step at the update steps (TensorFlow, JAX), so a
        refresh costs no host round trip; None (the default) when the operator refreshes on the host only."""
        return None

    @property
    def graph_refresh(self) -> bool:
        """True when `refreshed_tensor` is defined and the operator needs no saliency (which only the host
        passes): the refresh can run in the training graph."""
        return type(self).refreshed_tensor is not Compressor.refreshed_tensor and not self.uses_saliency

    def generate(self, name: str, m: int, n: int) -> np.ndarray:
        """The unstored factor ``name`` for an (m, n) matrix, regenerated deterministically from the seed."""
        raise NotImplementedError(f"{self.name} declares no generated factor {name!r}")

    def generate_tensor(self, name: str, m: int, n: int, start: Any) -> Any:
        """The generated factor ``name`` computed in the graph from ``start``, a run-time zero (exports: a
        converter cannot fold it into a stored constant); None when the operator has no in-graph generator."""
        return None

    def generated_factors(self, m: int, n: int) -> Factors:
        """Every generated (unstored) factor for an (m, n) matrix, typed as its spec."""
        specs = self.specs(m, n)
        return {k: np.asarray(self.generate(k, m, n), specs[k].dtype) for k in self.generated}

    # -- products that layers may compute more cheaply -----------------------------------------------------
    def matmul(self, x: Any, factors: Mapping[str, Any]) -> Any:
        """``x @ (B∘C)`` for ``x`` of shape (..., m); returns (..., n)."""
        from keras import ops

        return ops.matmul(x, self.product(factors))

    def gather(self, ids: Any, factors: Mapping[str, Any]) -> Any:
        """Rows ``ids`` (integer tensor of any shape) of ``B∘C``; returns ids.shape + (n,)."""
        from keras import ops

        return ops.take(self.product(factors), ids, axis=0)

    # -- storage in a spliced model ------------------------------------------------------------------------
    def packed_specs(self, m: int, n: int) -> dict[str, FactorSpec]:
        """The arrays a spliced layer stores (default: the stored factors themselves)."""
        return {k: spec for k, spec in self.specs(m, n).items() if k not in self.generated}

    def pack(self, factors: Factors) -> Factors:
        """NumPy factors -> the arrays a spliced layer stores, shaped as `packed_specs`."""
        return {k: v for k, v in factors.items() if k not in self.generated}

    def unpack(self, packed: Mapping[str, Any], m: int, n: int) -> dict[str, Any]:
        """Keras tensors of the packed arrays -> the stored factor tensors, for an (m, n) matrix.

        Unstored (generated) factors are added by the layer, which holds them as constants.
        """
        return dict(packed)

    def size_bits(self, factors: Factors) -> int:
        """Bits the spliced layer stores for these factors (bias excluded): exactly its packed arrays."""
        return array_bits(self.pack(factors))

    # -- stacking (`operators.stack`) -----------------------------------------------------------------------
    stack_inputs: ClassVar[tuple[str, ...]] = ()
    """Float factors that a next stage of a `operators.stack.Stack` may compress in turn (e.g. pruning's kept
    ``values``, low-rank's ``left`` and ``right``). Each must be stored as is: its shape in `stack_specs` equals
    its shape in `packed_specs`. Empty: nothing can follow this operator in a stack."""

    def stack_specs(self, m: int, n: int) -> dict[str, FactorSpec]:
        """The factors this operator holds as the first stage of a stack (default: `specs`)."""
        return self.specs(m, n)

    def to_stack(self, factors: Factors) -> Factors:
        """NumPy factors (as `factor` returns them) -> the stack form of `stack_specs`."""
        return dict(factors)

    def stack_product(self, factors: Mapping[str, Any]) -> Any:
        """``B∘C`` from tensors in the stack form (a 1-D stack input may come as a (len, 1) matrix: the next
        stage's product)."""
        return self.product(factors)

    def stack_pack(self, factors: Factors) -> Factors:
        """Stack-form NumPy factors, less the stack inputs -> the packed arrays they are stored as."""
        return {k: v for k, v in factors.items() if k not in self.generated}

    def stack_unpack(self, packed: Mapping[str, Any], m: int, n: int) -> dict[str, Any]:
        """Inverse of `stack_pack` in Keras ops (the stack inputs absent)."""
        return dict(packed)

    entropy_coded: ClassVar[bool] = False
    """True when `size_bits` counts entropy-coded streams rather than the packed arrays a layer holds."""

    def streams(self, factors: Factors) -> dict[str, tuple[np.ndarray, int]]:
        """Integer symbol streams an entropy coder may store instead of packed arrays: packed name ->
        (symbols, alphabet size), where the packed array is ``pack_codes(symbols, code_bits(alphabet))``.
        ``factors`` are in the stack form (generated ones absent)."""
        return {}

    # -- configuration -------------------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The ``__init__`` parameters, so that ``operators.get(name, **config)`` rebuilds this operator; NumPy
        scalars (``rank=np.int64(4)``) come back as Python numbers, so the config is JSON (a saved model's)."""
        params = inspect.signature(type(self).__init__).parameters
        return {p: plain(getattr(self, p)) for p in params
                if p != "self" and params[p].kind is not params[p].VAR_KEYWORD}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()  # type: ignore[union-attr]

    def __hash__(self) -> int:  # equal configs hash equal (sparsity=0 and 0.0 too: str() told them apart)
        return hash((type(self).__name__, _frozen(self.get_config())))


def _frozen(value: Any) -> Any:
    """``value`` (a config: dicts, lists, scalars) as a hashable that equal values share."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return str(value)
    return value


class TwoFactor(Compressor):
    """A compressor whose product is ``factors[left_name] @ factors[right_name]``, (m, k) @ (k, n).

    It computes ``x @ B∘C`` as ``(x @ left) @ right`` and looks up rows of ``left`` before multiplying, so no
    m x n matrix is formed in a Dense or Embedding layer.
    """

    left_name: ClassVar[str] = "left"
    right_name: ClassVar[str] = "right"

    def product(self, factors: Mapping[str, Any]) -> Any:
        from keras import ops

        return ops.matmul(factors[self.left_name], factors[self.right_name])

    def matmul(self, x: Any, factors: Mapping[str, Any]) -> Any:
        from keras import ops

        return ops.matmul(ops.matmul(x, factors[self.left_name]), factors[self.right_name])

    def gather(self, ids: Any, factors: Mapping[str, Any]) -> Any:
        from keras import ops

        return ops.matmul(take_rows(factors[self.left_name], ids), factors[self.right_name])


def plain(value: Any) -> Any:
    """``value`` with NumPy scalars turned into Python numbers, inside lists, tuples and dicts too."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def check_int(name: str, value: Any, low: int, high: float = math.inf, *, shape: str = "") -> None:
    """Raise if ``value`` is not an int in [low, high]; the message echoes the value."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int, but got {name}={value!r}.")
    if not low <= value <= high:
        bound = f"[{low}, {int(high)}]" if high != math.inf else f">= {low}"
        where = f" for a {shape} matrix" if shape else ""
        raise ValueError(f"`{name}` must be {'in ' if high != math.inf else ''}{bound}{where}, but got {name}={value!r}.")


def check_fraction(name: str, value: Any, *, closed_high: bool = False) -> None:
    """Raise unless ``value`` is a real number in [0, 1) (or [0, 1] when ``closed_high``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"`{name}` must be a number, but got {name}={value!r}.")
    ok = 0 <= value <= 1 if closed_high else 0 <= value < 1
    if not ok or not math.isfinite(value):
        raise ValueError(f"`{name}` must be in [0, 1{']' if closed_high else ')'}, but got {name}={value!r}.")
