"""``python -m tests.no_tensorflow ARGS``: the ``mutate`` CLI with every ``import tensorflow`` refused, for
tests/test_backends.py (a JAX user may not have TensorFlow installed)."""

import sys


class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError(f"tensorflow is refused in this test ({name})")


if __name__ == "__main__":
    sys.meta_path.insert(0, _Refuse())
    from mutate.cli import main

    sys.exit(main(sys.argv[1:]))
