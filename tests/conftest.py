import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _keras_backend_unchanged():
    """Each test leaves KERAS_BACKEND as it found it: the search's driver and `--resume` set it for their Ray
    processes, and a test that leaked "jax" made later tests' child processes (a MirroredStrategy check) run on
    JAX, an order-dependent failure under xdist."""
    before = os.environ.get("KERAS_BACKEND")
    yield
    if before is None:
        os.environ.pop("KERAS_BACKEND", None)
    else:
        os.environ["KERAS_BACKEND"] = before
