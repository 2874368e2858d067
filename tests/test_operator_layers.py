"""Every registered operator through real Keras layers (the TensorFlow half of the conformance suite)."""

from tests.operator_conformance import LayerConformance


class TestLowRankLayers(LayerConformance):
    name = "low_rank"
    params = {"rank": 3}
    exact_params = {"rank": 12}


class TestPruningLayers(LayerConformance):
    name = "pruning"
    params = {"sparsity": 0.8}
    exact_params = {"sparsity": 0.0}
