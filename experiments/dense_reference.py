"""The dense reference of a search space: its model trained without any mutation for ``training.steps``, with
trial 0's seed and data order, then measured on the validation split and once on the test set.

    python experiments/dense_reference.py search_spaces/digits_bert.yaml [KEY=VALUE ...]

Prints one line: steps, bytes, validation and test accuracy (perplexity for a language model).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mutate.errors import BadInput  # noqa: E402
from mutate.search import builders, space as spaces  # noqa: E402
from mutate.search.trial import EVAL_BATCH, TrialRunner  # noqa: E402


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("space", help="a search space YAML")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides, as `mutate search --set`")
    args = parser.parse_args(argv)
    try:
        space = spaces.load(args.space, args.overrides)
    except BadInput as exc:  # the user's YAML or overrides: one line, exit 2
        parser.exit(2, f"error: {exc}\n")
    builders.importable_beside(space)  # a model module next to the YAML (sepnet.yaml, user_model.yaml)
    t0 = time.perf_counter()
    runner = TrialRunner(space, seed=space.search["seed"] * 1000)  # trial 0's seed, as the sensitivity table
    steps = space.training["steps"]
    runner.train(steps)
    val = runner.measure()
    test = runner.model.evaluate(runner.data.x_test, runner.data.y_test, batch_size=EVAL_BATCH, verbose=0,
                                 return_dict=True)
    name = "perplexity" if runner.lm else "accuracy"
    metric = val["val_perplexity"] if runner.lm else val["val_accuracy"]
    print(f"{space.name}: dense after {steps} steps: {val['bytes']:,} B, validation {name} {metric:.4f}, test "
          f"loss {test['loss']:.4f}" + ("" if runner.lm else f", test accuracy {test['accuracy']:.4f}")
          + f" ({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main(sys.argv[1:])
