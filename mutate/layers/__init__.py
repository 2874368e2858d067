"""Keras layers of mutate: blended (compressing) layers and the spliced layers they become."""

from mutate.layers._blended import BlendedLayer, CompressedConv2D, CompressedDense, CompressedEmbedding
from mutate.layers._lstm import CompressedLSTM, FactorLSTM, SplicedLSTM
from mutate.layers._spliced import (FactorConv2D, FactorDense, FactorEmbedding, SplicedConv2D, SplicedDense,
                                    SplicedEmbedding, SplicedLayer)

__all__ = ["BlendedLayer", "CompressedConv2D", "CompressedDense", "CompressedEmbedding", "CompressedLSTM",
           "FactorConv2D", "FactorDense", "FactorEmbedding", "FactorLSTM", "SplicedConv2D", "SplicedDense",
           "SplicedEmbedding", "SplicedLSTM", "SplicedLayer"]
