"""The results: what the user reads, picks and ships.

``runs`` (the run directory's files), ``pareto`` (fronts and hypervolume, pure), ``final`` (the test set,
once per chosen model), ``report`` (`load_run`), ``plots`` and ``export``.
"""
