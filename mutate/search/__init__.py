"""The search: which mutation, when, on which trial.

``space`` (the YAML) and ``sections`` (its checks), ``genome`` (mutations as data), ``policy`` (the moves), ``table`` and ``sensitivity``
(what each (kernel, operator, level) saves and costs), ``strategies`` (PBT, greedy, uniform, random; pure
Python), ``trial`` (one model trained and mutated), ``builders`` and ``devices`` (models, data, placement),
``driver`` (checks before Ray) and ``runner`` (the only module that imports Ray).
"""
