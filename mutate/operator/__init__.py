"""The operator: what a mutation does to a layer (layer kinds, blend state, in-place surgery, callback, size)."""

from mutate.operator.host import Compressed, compressed_class, register
from mutate.operator.kinds import SUPPORTED, Kind, Slot, View, kind_of
from mutate.operator.state import KernelState
from mutate.operator.surgery import (Kernel, PlanError, compress, compressible, densify, kernel, resolve_plan,
                                     splice_finished, strip)

__all__ = ["Compressed", "Kernel", "KernelState", "Kind", "PlanError", "SUPPORTED", "Slot", "View", "compress",
           "compressed_class", "compressible", "densify", "kernel", "kind_of", "register", "resolve_plan", "splice_finished",
           "strip"]
