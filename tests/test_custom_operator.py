"""A third-party operator, registered by import and by entry point, end to end through compress, strip, save/load."""

import importlib
import importlib.metadata
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import mutate
import operators
from operators import _registry
from tests.helpers import compile_, data, fit, mlp
from tests.operator_conformance import LayerConformance, OperatorConformance

sys.path.insert(0, str(Path(__file__).parent / "custom_operator_pkg"))
import mutate_ternary  # noqa: E402  (registers "ternary")


class TestTernaryConformance(OperatorConformance):
    name = "ternary"
    params = {"threshold": 0.7}

    def reconstruct(self, op, factors):
        return factors["ternary"] * factors["scale"]


class TestTernaryLayers(LayerConformance):
    name = "ternary"
    params = {"threshold": 0.5}


def test_entry_point_group_registers_a_package_operator(monkeypatch):
    monkeypatch.delitem(_registry._REGISTRY, "ternary")
    monkeypatch.delitem(sys.modules, "mutate_ternary")
    monkeypatch.setattr(_registry, "_ENTRY_POINTS_LOADED", False)
    ep = importlib.metadata.EntryPoint(name="ternary", value="mutate_ternary", group="mutate.operators")
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None: [ep] if group == "mutate.operators" else [])
    assert "ternary" in operators.available()
    assert operators.get("ternary").name == "ternary"


def test_custom_operator_end_to_end(tmp_path):
    x, y = data()
    c = compile_(mutate.compress(mlp(), {"dense_1": ("ternary", {}), "dense_2": ("low_rank", {"rank": 4})},
                                 mutate.Schedule(0, 3, 1)))
    fit(c, x, y, epochs=2)
    s = mutate.strip(c)
    np.testing.assert_allclose(s.predict(x, verbose=0), c.predict(x, verbose=0), atol=1e-5)
    entry = {e.name: e for e in mutate.model_size(s).layers}["dense_1"]
    assert entry.bits == 8 * (2 * 32 * 32 // 8) + 32 * 32 + 32 * 32  # 2-bit codes, scales, bias
    s.save(tmp_path / "t.keras")
    loaded = keras.saving.load_model(tmp_path / "t.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), s.predict(x, verbose=0))


def test_custom_operator_bad_parameter():
    with pytest.raises(ValueError, match="threshold=-1"):
        operators.get("ternary", threshold=-1)


@operators.register("ternary_bytes")
class _TernaryBytes(mutate_ternary.Ternary):
    """Ternary stored one byte per weight and read with a plain cast, not through `unpack_codes`."""

    def packed_specs(self, m, n):
        return {"ternary": operators.FactorSpec((m * n,), "uint8", trainable=False), "scale": operators.FactorSpec((n,))}

    def pack(self, factors):
        return {"ternary": (factors["ternary"].astype(np.int64) + 1).astype(np.uint8).ravel(), "scale": factors["scale"]}

    def unpack(self, packed, m, n):
        return {"ternary": keras.ops.reshape(keras.ops.cast(packed["ternary"], "int32") - 1, (m, n)),
                "scale": packed["scale"]}


def test_an_operator_reading_its_integer_arrays_itself_splices_without_held_codes(tmp_path):
    """A spliced layer holds decoded codes only for arrays its operator reads through `unpack_codes`; one that
    casts its integer array itself still splices, predicts and round-trips (every call reads the array)."""
    x, y = data()
    model = compile_(mutate.compress(mlp((16, 32, 5)), {"dense_1": ("ternary_bytes", {"threshold": 0.5})},
                                     mutate.Schedule(0, 3, 1)))
    fit(model, x, y, epochs=1)
    blended = model.predict(x, verbose=0)
    mutate.strip(model)
    st = mutate.kernel(model, "dense_1").compression
    assert st.spliced and st.decoded == {}
    np.testing.assert_allclose(model.predict(x, verbose=0), blended, atol=1e-5)
    model.save(tmp_path / "m.keras")
    np.testing.assert_array_equal(keras.saving.load_model(tmp_path / "m.keras").predict(x, verbose=0),
                                  model.predict(x, verbose=0))
