import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _sigint_handler_unchanged():
    """Each test leaves Python's SIGINT handler as it found it. A search in the test process installs Ray
    Tune's handler and must put the earlier one back (`runner.run`), or a user's Ctrl-C after the search does
    nothing, and a later test in the same process would inherit the changed handler."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGINT)
    yield
    after = signal.getsignal(signal.SIGINT)
    if after is not before:
        signal.signal(signal.SIGINT, before)
        pytest.fail(f"the test left the SIGINT handler changed: {before!r} -> {after!r}")


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
