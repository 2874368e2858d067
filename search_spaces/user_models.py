"""An example of your own model in a search: a subclassed Keras model, registered so its checkpoints load.

`user_model.yaml` (beside this file) names it as ``model.builder: user_models:rows_attention_gru``; mutate
makes the modules next to a space file importable (on a cluster, install the module on every node instead).
Run it with ``mutate search search_spaces/user_model.yaml``.
"""

from __future__ import annotations

import keras

from mutate.data import Dataset


@keras.saving.register_keras_serializable(package="user_models")
class RowsAttentionGRU(keras.Model):
    """Reads an image as a sequence of its rows: each row embedded by a Dense layer, self-attention over the
    rows, a GRU, and a Dense classifier. Every kernel is compressible: the embedding (``embed``), attention's
    query/key/value/output projections (EinsumDense), the GRU's input and recurrent kernels, the head."""

    def __init__(self, side: int, classes: int, width: int = 64, heads: int = 4, units: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.side, self.classes, self.width, self.heads, self.units = side, classes, width, heads, units
        self.rows = keras.layers.Reshape((side, side), name="rows")
        self.embed = keras.layers.Dense(width, activation="relu", name="embed")
        self.attention = keras.layers.MultiHeadAttention(heads, width // heads, name="attention")
        self.norm = keras.layers.LayerNormalization(name="norm")
        # unroll: 8 rows, a short fixed loop (mutate's LiteRT export would unroll a rolled one for the conversion)
        self.gru = keras.layers.GRU(units, unroll=True, name="gru")
        self.head = keras.layers.Dense(classes, name="head")

    def call(self, x, training=None):
        h = self.embed(self.rows(x))
        h = self.norm(h + self.attention(h, h, training=training))
        return self.head(self.gru(h, training=training))

    def get_config(self):
        return {**super().get_config(), "side": self.side, "classes": self.classes, "width": self.width,
                "heads": self.heads, "units": self.units}


def rows_attention_gru(data: Dataset, *, width: int = 64, heads: int = 4, units: int = 64) -> keras.Model:
    """The builder a space names: ``fn(data, **model keys)`` -> a built Keras model."""
    side = int(round(data.x_train.shape[1] ** 0.5))
    if side * side != data.x_train.shape[1]:
        raise ValueError(f"rows_attention_gru needs square images, but inputs have {data.x_train.shape[1]} features")
    model = RowsAttentionGRU(side, data.num_classes, width=width, heads=heads, units=units)
    model(data.x_train[:1])  # build every layer, so its kernels can be listed and compressed
    return model
