"""The ``mutate`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mutate", description="Compression as a genetic operator for Keras 3.")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="compress an MLP on scikit-learn digits mid-training and splice it")
    demo.add_argument("--rank", type=int, default=8, help="low-rank rank of the hidden layers (default 8)")
    demo.add_argument("--sparsity", type=float, default=0.8, help="pruning sparsity of the output layer")
    demo.add_argument("--epochs", type=int, default=20, help="dense training epochs before compressing")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", type=Path, default=None, help="save the spliced model as .keras here")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for bad input)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from mutate import demo

            demo.run(rank=args.rank, sparsity=args.sparsity, epochs=args.epochs, seed=args.seed, out=args.out)
        return 0
    except (ValueError, TypeError, FileNotFoundError) as e:
        if args.verbose:
            raise
        print(f"mutate: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
