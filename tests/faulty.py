"""Model builders that fail on purpose, for the fault tests (referenced from YAML as tests.faulty:NAME)."""

import os
import sys

from mutate.builders import mlp


def _in_ray_worker() -> bool:
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def flaky_mlp(data, *, marker: str, **kwargs):
    """Raises once, in the first Ray worker that builds it (the driver's own check build passes)."""
    if _in_ray_worker():
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return mlp(data, **kwargs)
        raise RuntimeError("flaky builder: failing once on purpose")
    return mlp(data, **kwargs)
