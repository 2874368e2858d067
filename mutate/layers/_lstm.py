"""Compressed LSTMs: the input kernel (input_dim x 4*units) blends into an operator's factors.

Design: one operator compresses the LSTM's input kernel ``A`` (m = input_dim, n = 4*units); the recurrent
kernel (units x 4*units) and the bias stay dense and trainable in every form (blending, spliced, densified).
The input projection of all time steps is computed at once, ``z = x @ (alpha*A + (1-alpha)*(B∘C)) + bias`` of
shape (batch, T, 4*units), and only ``h @ R`` runs inside the recurrence. The kernel is blended before the
matmul (as in `CompressedConv2D`): with batch*T rows far above input_dim, forming B∘C once is cheaper than a
second (batch*T, m) x (m, 4*units) product. Gates follow Keras' LSTM (order i, f, c, o;
``c = f*c + i*activation(z_c)``, ``h = o*activation(c)``), so at alpha = 1 the layer is Keras' LSTM.

Spliced forms: a pair operator (low-rank) becomes ``FactorDense(k)`` (x @ left) followed by a `FactorLSTM`, a
plain Keras LSTM whose input kernel is ``right`` (k x 4*units); other operators become one `SplicedLSTM`
that stores the operator's packed arrays, the recurrent kernel and the bias.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops
from keras.src import backend as keras_backend  # backend.rnn: the loop keras.layers.RNN runs

from mutate.layers._blended import BlendedLayer
from mutate.layers._common import serialize_activation
from mutate.layers._spliced import SplicedLayer, _Origin

_UNSUPPORTED = ("dropout", "recurrent_dropout", "stateful", "return_state", "zero_output_for_mask")


def _unit_forget_bias(units: int) -> Any:
    """A bias initializer: zeros, except ones for the forget gate (Keras' ``unit_forget_bias=True``)."""

    def init(shape: tuple[int, ...], dtype: Any = None) -> Any:
        return ops.concatenate([ops.zeros((units,), dtype), ops.ones((units,), dtype),
                                ops.zeros((2 * units,), dtype)])

    return init


class LSTMArgs:
    """LSTM arguments, the recurrent weights, and the recurrence on pre-projected inputs."""

    def _init_lstm(self, units: int, activation: Any, recurrent_activation: Any, use_bias: bool,
                   return_sequences: bool, go_backwards: bool, unroll: bool) -> None:
        self.units = int(units)
        self.activation = keras.activations.get(activation)
        self.recurrent_activation = keras.activations.get(recurrent_activation)
        self.use_bias = bool(use_bias)
        self.return_sequences = bool(return_sequences)
        self.go_backwards = bool(go_backwards)
        self.unroll = bool(unroll)
        self.supports_masking = True
        self.input_spec = keras.layers.InputSpec(ndim=3)

    def _build_recurrent(self) -> None:
        u = self.units
        self.recurrent_kernel = self.add_weight(name="recurrent_kernel", shape=(u, 4 * u), initializer="orthogonal")
        self.bias = (self.add_weight(name="bias", shape=(4 * u,), initializer=_unit_forget_bias(u))
                     if self.use_bias else None)

    def _recur(self, z: Any, mask: Any = None) -> Any:
        """Run the LSTM recurrence.

        Args:
            z: the input projections with the bias added, shape (batch, T, 4*units).
            mask: optional boolean mask, shape (batch, T); masked steps keep the previous state.

        Returns:
            (batch, T, units) when ``return_sequences``, else the last output (batch, units).
        """
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        recurrent = self.recurrent_kernel
        act, rec_act = self.activation, self.recurrent_activation

        def step(z_t: Any, states: list[Any]) -> tuple[Any, list[Any]]:
            h, c = states
            z_i, z_f, z_c, z_o = ops.split(z_t + ops.matmul(h, recurrent), 4, axis=-1)
            c = rec_act(z_f) * c + rec_act(z_i) * act(z_c)
            h = rec_act(z_o) * act(c)
            return h, [h, c]

        zeros = ops.zeros((ops.shape(z)[0], self.units), dtype=z.dtype)
        last, outputs, _ = keras_backend.rnn(step, z, [zeros, zeros], go_backwards=self.go_backwards, mask=mask,
                                             unroll=self.unroll, input_length=z.shape[1],
                                             zero_output_for_mask=False, return_all_outputs=self.return_sequences)
        return outputs if self.return_sequences else last

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        return mask if self.return_sequences else None

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        if self.return_sequences:
            return (input_shape[0], input_shape[1], self.units)
        return (input_shape[0], self.units)

    def kept_weights(self) -> list[keras.Variable]:
        """The weights kept dense: the recurrent kernel (units, 4*units) and the bias (4*units,)."""
        return [self.recurrent_kernel] + ([self.bias] if self.bias is not None else [])

    def _lstm_config(self) -> dict[str, Any]:
        return {"units": self.units, **lstm_arguments(self)}


def lstm_arguments(layer: Any) -> dict[str, Any]:
    """The constructor arguments (but ``units``) shared by Keras' LSTM and the mutate LSTMs, from any of them."""
    return {"activation": serialize_activation(layer.activation),
            "recurrent_activation": serialize_activation(layer.recurrent_activation), "use_bias": layer.use_bias,
            "return_sequences": layer.return_sequences, "go_backwards": layer.go_backwards, "unroll": layer.unroll}


def check_plain_lstm(layer: keras.layers.LSTM) -> None:
    """Raise TypeError when a Keras LSTM uses an option the compressed LSTMs do not implement."""
    used = [f"{k}={getattr(layer, k)!r}" for k in _UNSUPPORTED if getattr(layer, k, False)]
    if used:
        raise TypeError(f"layer {layer.name!r}: mutate compresses plain LSTMs only, without "
                        f"{', '.join(_UNSUPPORTED)}; this one has {', '.join(used)}.")


def lstm_weights(layer: keras.layers.Layer) -> tuple[keras.Variable | None, keras.Variable, keras.Variable | None]:
    """(input kernel, recurrent kernel, bias) of a Keras LSTM or a mutate LSTM; None where there is none (a
    `SplicedLSTM` stores no input kernel)."""
    holder = layer.cell if isinstance(layer, keras.layers.LSTM) else layer
    return holder.kernel if hasattr(holder, "kernel") else None, holder.recurrent_kernel, holder.bias


def is_lstm(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` is a Keras LSTM or one of mutate's LSTMs."""
    return isinstance(layer, (keras.layers.LSTM, LSTMArgs))


@keras.saving.register_keras_serializable(package="mutate")
class CompressedLSTM(LSTMArgs, BlendedLayer):
    """An LSTM whose input kernel A (input_dim x 4*units) blends into ``operator``'s factors.

    Input (batch, T, input_dim) -> (batch, T, units) with ``return_sequences``, else (batch, units). The input
    projection ``x @ blend(A, B∘C) + bias`` (batch, T, 4*units) is computed for all steps at once; the
    recurrent kernel (units x 4*units) stays dense and trainable (see the module docstring).

    Args:
        units: hidden size.
        activation: cell and output activation (tanh).
        recurrent_activation: gate activation (sigmoid).
        use_bias: add a bias (4*units,) to the input projection.
        return_sequences: return every step's output instead of the last one.
        go_backwards: process the sequence in reverse.
        unroll: unroll the recurrence (short fixed T only).
        **kwargs: `BlendedLayer` arguments (operator, schedule, ...) and Keras layer arguments.
    """

    def __init__(self, units: int, *, activation: Any = "tanh", recurrent_activation: Any = "sigmoid",
                 use_bias: bool = True, return_sequences: bool = False, go_backwards: bool = False,
                 unroll: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._init_lstm(units, activation, recurrent_activation, use_bias, return_sequences, go_backwards, unroll)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        m = int(input_shape[-1])
        self.kernel = self.add_weight(name="kernel", shape=(m, 4 * self.units), initializer="glorot_uniform")
        self._build_recurrent()
        self._build_blend_state()

    def call(self, inputs: Any, mask: Any = None, training: Any = None) -> Any:
        self._begin_call(training)
        kernel = self.blend(self.tapped_kernel(training), self.compressor.product(self.factor_tensors()))
        z = ops.matmul(inputs, kernel)
        return self._recur(z + self.bias if self.bias is not None else z, mask)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._lstm_config()}


@keras.saving.register_keras_serializable(package="mutate")
class SplicedLSTM(LSTMArgs, SplicedLayer):
    """An LSTM whose input projection is ``x @ (B∘C)`` from the operator's stored arrays (no dense A).

    Stores the packed arrays, the recurrent kernel (units, 4*units) and the bias (4*units,).
    Input (batch, T, m) -> (batch, T, units) or (batch, units).
    """

    def __init__(self, units: int, *, activation: Any = "tanh", recurrent_activation: Any = "sigmoid",
                 use_bias: bool = True, return_sequences: bool = False, go_backwards: bool = False,
                 unroll: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._init_lstm(units, activation, recurrent_activation, use_bias, return_sequences, go_backwards, unroll)

    def build(self, input_shape: Any) -> None:
        self._build_packed()
        self._build_recurrent()

    def call(self, inputs: Any, mask: Any = None) -> Any:
        z = self.compressor.matmul(inputs, self.factor_tensors())
        return self._recur(z + self.bias if self.bias is not None else z, mask)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._lstm_config()}


@keras.saving.register_keras_serializable(package="mutate")
class FactorLSTM(_Origin, keras.layers.LSTM):
    """A plain Keras LSTM that is the right factor of a spliced LSTM: its input kernel is ``right`` (k x 4u)."""

    def __init__(self, *args: Any, origin: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._set_origin(origin)

    def kept_weights(self) -> list[keras.Variable]:
        """The weights kept dense: the recurrent kernel and the bias."""
        return [self.cell.recurrent_kernel] + ([self.cell.bias] if self.cell.bias is not None else [])

    def get_config(self) -> dict[str, Any]:
        return self._with_origin(super().get_config())
