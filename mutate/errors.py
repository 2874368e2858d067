"""Exceptions shared by the pure-Python modules and the Keras ones (importing this loads no TensorFlow)."""

from __future__ import annotations


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN or Inf loss (or weights); the trial cannot go on, and retrying it from its last
    checkpoint would only repeat the same steps."""


class SearchFailed(RuntimeError):
    """Every trial of a search ended in error (``mutate search`` exits with code 1)."""
