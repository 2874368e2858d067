"""mutate: neural-architecture mutation with compression as the genetic operator.

Core API (TFMOT-style): `compress` wraps layers in blended layers, `CompressionCallback` drives their
per-layer alpha schedules during `fit`, `strip` splices finished layers into their factored layers, and
`model_size` counts the bits a model really stores.
"""

from mutate.callbacks import CompressionCallback, blended_layers
from mutate.layers import (CompressedConv2D, CompressedDense, CompressedEmbedding, FactorConv2D, FactorDense,
                           FactorEmbedding, SplicedConv2D, SplicedDense, SplicedEmbedding)
from mutate.schedule import Schedule
from mutate.size import LayerSize, ModelSize, model_size
from mutate.surgery import compress, strip

__version__ = "0.1.0"

__all__ = ["CompressedConv2D", "CompressedDense", "CompressedEmbedding", "CompressionCallback", "FactorConv2D",
           "FactorDense", "FactorEmbedding", "LayerSize", "ModelSize", "Schedule", "SplicedConv2D", "SplicedDense",
           "SplicedEmbedding", "blended_layers", "compress", "model_size", "strip"]
