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


class TestKMeansLayers(LayerConformance):
    name = "kmeans"
    params = {"k": 4}
    exact_params = {"k": 240}


class TestBlockKMeansLayers(LayerConformance):
    name = "kmeans"
    params = {"k": 5, "block_size": 3, "prune": True}


class TestRandomProjectionLayers(LayerConformance):
    name = "random_projection"
    params = {"rank": 3}


class TestSimHashLayers(LayerConformance):
    name = "simhash"
    params = {"rank": 16}
