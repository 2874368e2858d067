"""The ``mutate`` command line: ``search``, ``pareto``, ``export`` and ``demo``.

Exit codes (``--verbose`` shows the traceback of any error instead of the one line):

- 0: done. A search in which some trials failed still exits with 0 (each failure is listed on one line,
  the others' front is kept).
- 1: a search in which every trial failed (``mutate: error: every trial failed ...``), or an internal
  error: anything raised that is not `mutate.errors.BadInput`, a bug until shown otherwise. One line,
  ``mutate: internal error: TYPE: MESSAGE (run with --verbose for the traceback)``; when the command had a
  run directory, the traceback is saved in ``RUN_DIR/internal_error.txt`` and the line ends with
  ``(traceback in RUN_DIR/internal_error.txt)`` instead.
- 2: bad input (`mutate.errors.BadInput`: the space, the arguments, a run directory, a model that does
  not fit the space), one line ``mutate: error: ...``; argparse's own usage errors also exit with 2.
- 130: interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
from pathlib import Path

from mutate import files
from mutate.errors import BadInput, SearchFailed, interrupted

INTERNAL_ERROR_FILE = "internal_error.txt"
"""Where an internal error's traceback goes, in the run directory of the command that failed."""


def _no_tensorflow(e: ModuleNotFoundError) -> BadInput:
    """The one-line error for Keras' TensorFlow backend (the default) without TensorFlow installed."""
    return BadInput("the Keras backend is TensorFlow (the default; KERAS_BACKEND or ~/.keras/keras.json), but "
                    f"TensorFlow is not installed ({e}): pip install mutate[tensorflow], or run under another "
                    "backend, e.g. pip install mutate[jax] and KERAS_BACKEND=jax")


def _import_keras() -> None:
    """Import Keras, and TensorFlow when it is Keras' backend; another backend (KERAS_BACKEND=jax or torch)
    imports no TensorFlow.

    Raises:
        BadInput: the backend is TensorFlow and TensorFlow is not installed.
    """
    try:
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow  # noqa: F401
    except ModuleNotFoundError as e:
        if e.name is not None and e.name.split(".")[0] == "tensorflow":
            raise _no_tensorflow(e) from e
        raise


def quiet_tensorflow_import(verbose: bool = False) -> None:
    """Import Keras, and TensorFlow when it is Keras' backend (only then), with TensorFlow's C++ start-up
    chatter (absl and CUDA-stub lines on fd 2) hidden unless ``verbose``.

    Raises:
        BadInput: the backend is TensorFlow (the default) and TensorFlow is not installed.
    """
    if "tensorflow" in sys.modules:
        return
    if verbose:
        _import_keras()
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        _import_keras()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _seconds(text: str) -> float:
    """An interval in seconds: a finite number >= 0 (``nan``, ``inf`` and negative ones were taken silently)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r}: seconds as a finite number >= 0 (0: no progress lines)")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mutate", description="Compression as a genetic operator for Keras 3.")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks and Ray's own logs")
    sub = parser.add_subparsers(dest="command", required=True)
    # also after the command (`mutate search S.yaml --verbose`, as `bash scripts/dev search --verbose` passes it):
    # SUPPRESS keeps a subcommand's absent flag from resetting one given before it
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="show tracebacks and Ray's own logs")

    search = sub.add_parser("search", parents=[verbose],
                            help="run a population search over compressions (a YAML space)")
    search.add_argument("space", nargs="?", type=Path, help="search space YAML (see search_spaces/)")
    search.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a key of the space, e.g. --set search.population=8 (repeatable)")
    search.add_argument("--strategy", choices=("pbt", "greedy", "random", "uniform"),
                        help="override search.strategy: pbt (informed explore, seeded by greedy), greedy (the "
                             "sensitivity table's best genomes under the budget), random, or uniform (one operator "
                             "and level everywhere, among the combinations that fit the budget)")
    search.add_argument("--address", help="join a Ray cluster: auto or HOST:PORT; local: a new local Ray "
                                          "(default: an embedded Ray)")
    search.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted search")
    search.add_argument("--progress", type=_seconds, default=10.0, metavar="SECONDS",
                        help="seconds between progress lines (default 10; 0: none)")

    pareto = sub.add_parser("pareto", parents=[verbose],
                            help="print and plot the size/accuracy front of one or more runs")
    pareto.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    pareto.add_argument("--sizes", action="store_true",
                        help="also convert each front point to .keras and LiteRT (.tflite) once, and print their bytes "
                             "and gzip(.tflite) next to the counted bytes (cached in the run's file_sizes.json)")
    pareto.add_argument("--sensitivity", action="store_true",
                        help="also print each run's sensitivity table (per layer, operator and level: bytes saved "
                             "and validation metric after factoring that layer alone)")

    export = sub.add_parser("export", parents=[verbose],
                            help="rebuild, re-evaluate, splice and save one model of a run")
    export.add_argument("run", type=Path, metavar="RUN_DIR")
    pick = export.add_mutually_exclusive_group(required=True)
    pick.add_argument("--point", type=int, metavar="K", help="row K of `mutate pareto`'s table (from 0)")
    pick.add_argument("--max-size", type=int, metavar="BYTES", help="the most accurate front point this small")
    pick.add_argument("--min-accuracy", type=float, metavar="ACC",
                      help="the smallest front point this accurate on validation (a language model's run: the "
                           "smallest whose validation perplexity is at most ACC)")
    export.add_argument("--out", type=Path, required=True,
                        help="where to write: NAME.keras, NAME.tflite (LiteRT) or a folder (TensorFlow SavedModel)")
    export.add_argument("--format", choices=["keras", "litert", "saved_model"], default=None,
                        help="the format (default: from --out's suffix); a LiteRT file is checked in the interpreter "
                             "on the run's validation split and refused beyond a 1e-4 output difference")
    export.add_argument("--litert-arrays", choices=["smallest", "packed", "folded"], default="smallest",
                        help="how a LiteRT file holds the spliced arrays: packed (bitmasks, codes and sign bits "
                             "unpacked by the graph at every call; random matrices hashed in it), folded (float32 "
                             "constants: faster, larger except on small models), or smallest (default: both "
                             "converted, the smaller file kept)")
    export.add_argument("--force", action="store_true", help="overwrite --out")

    demo = sub.add_parser("demo", parents=[verbose],
                          help="compress an MLP on scikit-learn digits mid-training and splice it")
    demo.add_argument("--rank", type=int, default=8, help="low-rank rank of the hidden layers (default 8)")
    demo.add_argument("--sparsity", type=float, default=0.8, help="pruning sparsity of the output layer (default 0.8)")
    demo.add_argument("--epochs", type=int, default=20, help="dense training epochs before compressing (default 20)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the data split and the weights (default 0)")
    demo.add_argument("--out", type=Path, default=None, help="save the spliced model as .keras here")
    return parser


def _search(args: argparse.Namespace) -> None:
    from mutate import commands

    if (args.space is None) == (args.resume is None):
        raise BadInput("mutate search: give a SPACE.yaml, or --resume RUN_DIR (not both)")
    commands.search(args.space, overrides=args.overrides, strategy=args.strategy, address=args.address,
                    resume=args.resume, verbose=args.verbose, progress=args.progress)


def _save_traceback(e: BaseException, run_dir: Path) -> Path | None:
    """Write ``e``'s traceback to ``run_dir/internal_error.txt`` (atomically); None when that fails."""
    path = Path(run_dir) / INTERNAL_ERROR_FILE
    try:  # a full disk: no partial file left
        files.write_text(path, "".join(traceback.format_exception(type(e), e, e.__traceback__)))
    except OSError:
        return None
    return path


def internal_error_line(e: BaseException) -> str:
    """The one line printed for an internal error, after saving its traceback in the failing command's run
    directory (``e.mutate_run_dir``, set by `mutate.commands`) when there is one."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    what = type(e).__name__ + (f": {lines[0]}" if lines else "") + (" [...]" if len(lines) > 1 else "")
    run_dir = getattr(e, "mutate_run_dir", None)
    saved = _save_traceback(e, run_dir) if run_dir is not None else None
    where = f"traceback in {saved}" if saved is not None else "run with --verbose for the traceback"
    return f"mutate: internal error: {what} ({where})"


def _stdout_closed() -> bool:
    """Whether standard output's reader went away (a pipe closed); then further output is discarded, so the
    interpreter's own flush at exit does not fail again."""
    import os
    import select

    try:
        fd = sys.stdout.fileno()
        poller = select.poll()  # a pipe whose reader closed reports an error condition on its write end
        poller.register(fd, select.POLLOUT)
        closed = any(event & select.POLLERR for _, event in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no descriptor (captured), or no poll on this platform
        return False
    if closed:
        os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    return closed


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code: 0; 1 when every trial of a search failed or on an internal error;
    2 for bad input; 130 when interrupted (see the module docstring)."""
    args = _parser().parse_args(argv)
    try:
        # search validates its YAML first, so a typo costs no TF import; pareto reads JSON and needs no Keras (so
        # it works under any backend, TensorFlow installed or not)
        if args.command not in ("search", "pareto") or getattr(args, "sizes", False):
            quiet_tensorflow_import(args.verbose)
        if args.command == "search":
            _search(args)
        elif args.command == "pareto":
            from mutate import commands

            commands.pareto(args.runs, sensitivity=args.sensitivity, sizes=args.sizes)
        elif args.command == "export":
            from mutate import commands

            commands.export(args.run, point=args.point, max_size=args.max_size, min_accuracy=args.min_accuracy,
                            out=args.out, force=args.force, fmt=args.format, arrays=args.litert_arrays)
        elif args.command == "demo":
            from mutate import demo

            demo.run(rank=args.rank, sparsity=args.sparsity, epochs=args.epochs, seed=args.seed, out=args.out)
        return 0
    except BadInput as e:
        if args.verbose:
            raise
        print(f"mutate: error: {e}", file=sys.stderr)
        return 2
    except SearchFailed as e:
        if args.verbose:
            raise
        print(f"mutate: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mutate: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError as e:
        if _stdout_closed():  # `mutate pareto RUN | head`: the reader has what it wanted; stop quietly
            return 141  # what a shell reports for a command SIGPIPE ended (128 + 13)
        if args.verbose:
            raise
        print(internal_error_line(e), file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - anything else is a bug until shown otherwise: say so, keep the trace
        if interrupted(e):
            print("mutate: interrupted", file=sys.stderr)
            return 130
        if args.verbose:
            raise
        print(internal_error_line(e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
