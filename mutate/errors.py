"""Exceptions shared by the pure-Python modules and the Keras ones (importing this loads no TensorFlow).

The CLI sorts failures by class: `BadInput` (and its subclasses) is the user's to fix and exits with code 2;
`SearchFailed` exits with 1; anything else is an internal error (exit 1, traceback saved in the run
directory when there is one).
"""

from __future__ import annotations


class BadInput(ValueError):
    """Bad input from the user: a search space file, CLI arguments, a run directory, or a model (or dataset)
    that does not fit the space. The message is one line saying what is wrong and where.

    A `ValueError`, so callers that caught ``ValueError`` before this class existed keep working.
    """


class MissingInput(BadInput, FileNotFoundError):
    """A file or folder the user named is missing or is not what it should be (a run directory without its
    ``space.json``, a data folder without its files). Also a `FileNotFoundError`."""


class OutputExists(BadInput, FileExistsError):
    """An output file the user named exists and overwriting was not asked for. Also a `FileExistsError`."""


class MetricMismatch(ValueError):
    """A checkpoint re-evaluated to a different metric than the one recorded for it (``mutate export``).

    Deliberately not `BadInput`: the command was fine; mutate's own save/splice/evaluate disagree, the data
    changed since the run, or the run directory is damaged. The CLI reports it as an internal error.
    """


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN or Inf loss (or weights); the trial cannot go on, and retrying it from its last
    checkpoint would only repeat the same steps."""


class SearchFailed(RuntimeError):
    """Every trial of a search ended in error (``mutate search`` exits with code 1)."""


def interrupted(e: BaseException | None) -> bool:
    """Whether ``e`` is a Ctrl-C, or one that a library re-raised as another exception: TensorFlow's C++
    code, when the interrupt lands while it calls back into Python, raises ``RuntimeError: pybind11::error_already_set:
    ... KeyboardInterrupt`` (a bug hunt's Ctrl-C during `mutate export`'s evaluation was reported as an
    internal error, with a traceback file written into the run)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, KeyboardInterrupt) or (isinstance(e, RuntimeError)
                                                and "error_already_set" in str(e) and "KeyboardInterrupt" in str(e)):
            return True
        e = e.__cause__ or e.__context__
    return False
