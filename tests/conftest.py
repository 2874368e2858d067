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


# The longest files first (their share of one CI run; each file runs on one worker: `--dist loadfile`, and
# `--no-loadscope-reorder` in scripts/dev keeps this order, which xdist would otherwise sort by test count),
# so that no long file is handed out last. Measured on a fresh clone: 884 s against 900 s the same day with
# xdist's order, within this machine's run-to-run spread. Tests keep their order within a file; the other
# files follow in pytest's order.
LONGEST_FIRST = ("test_backends.py", "test_search.py", "test_kinds.py", "test_formats.py", "test_lstm.py",
                 "test_trial.py", "test_layers.py", "test_sensitivity.py", "test_surgery.py", "test_cli.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests stay in order
