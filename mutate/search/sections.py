"""The search space's sections, checked one by one (`mutate.search.space` assembles them). Pure Python.

Every check raises a `SpaceError` whose one line names the file, the key path, what was expected and what
was found.
"""

from __future__ import annotations

import copy
import difflib
import math
from typing import Any, Callable

from mutate.errors import BadInput

BUILTIN_MODELS = ("mlp", "cnn", "lstm_lm", "bert")
BUILTIN_DATA = ("digits", "digits_tokens", "fashion_mnist", "cifar10", "shakespeare", "ptb")
STRATEGIES = ("pbt", "greedy", "random", "uniform")
OPTIMIZERS = ("adam", "sgd", "rmsprop", "adamw")


class SpaceError(BadInput):
    """A search space is invalid; the message is one line naming file, key, expectation and value. A
    `mutate.errors.BadInput` (hence a ``ValueError``)."""


# -- low-level checks ---------------------------------------------------------------------------------------
def shown(value: Any) -> str:
    """``repr(value)`` for a one-line error, cut at 200 characters (an aliased YAML list can print as megabytes)."""
    text = repr(value)
    return text if len(text) <= 200 else f"{text[:200]}... ({len(text):,} characters)"


class _Ctx:
    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, key: str, expected: str, got: Any) -> SpaceError:
        return SpaceError(f"{self.where}: {key}: expected {expected}, got {shown(got)}")

    def section(self, data: Any, key: str, allowed: dict[str, Any]) -> dict[str, Any]:
        """Validate a mapping's keys against ``allowed`` (key -> default) and fill defaults."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise self.fail(key or "<top>", "a mapping", data)
        for k in data:
            if k not in allowed:
                close = difflib.get_close_matches(str(k), list(allowed), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(allowed)}"
                raise SpaceError(f"{self.where}: {key + '.' if key else ''}{k}: unknown key{hint}")
        return {**copy.deepcopy(allowed), **data}

    def int_(self, value: Any, key: str, low: int = 0, optional: bool = False, high: int | None = None) -> int | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.fail(key, f"an int >= {low}", value)
        if high is not None and value > high:
            raise self.fail(key, f"an int from {low} to {high}", value)
        return value

    def num(self, value: Any, key: str, low: float, high: float, *, open_low: bool = False,
            open_high: bool = False, optional: bool = False) -> float | None:
        if value is None and optional:
            return None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
        if not ok:
            lo, hi = "(" if open_low else "[", ")" if open_high else "]"
            raise self.fail(key, f"a number in {lo}{low}, {hi if high == math.inf else high}{hi}"
                            if high != math.inf else f"a number {'>' if open_low else '>='} {low}", value)
        return float(value)

    def choice(self, value: Any, key: str, options: tuple[str, ...], *, dotted_ok: bool = False) -> str:
        if isinstance(value, str) and (value in options or (dotted_ok and ":" in value)):
            return value
        extra = " or package.module:function" if dotted_ok else ""
        raise self.fail(key, f"one of {', '.join(options)}{extra}", value)


# -- sections -------------------------------------------------------------------------------------------------
_TOP = {"name": None, "model": None, "data": None, "training": None, "mutations": None, "budget": None,
        "search": None, "resources": None, "ray": None, "storage": "mutate_runs"}
_TRAINING = {"optimizer": "adam", "learning_rate": 1e-3, "batch_size": 32, "steps": 1000, "report_every": 50,
             "steps_per_execution": 1}
_MUTATIONS = {"layers": None, "operators": None, "warmup_steps": 100, "window": 100, "frequency": 10,
              "refresh": True, "max_mutations": 8}
_BUDGET = {"bytes": None, "ratio": None, "unit": "stored"}
MAX_POPULATION = 10_000
"""``search.population`` above this is refused (a million trials grew the driver's memory without a trial starting)."""

_SEARCH = {"strategy": "pbt", "population": 4, "perturbation_interval": 200, "quantile_fraction": 0.25,
           "time_budget_s": None, "seed": 0, "max_failures": 2, "seed_greedy": True, "hedge": True,
           "learning_rate_factors": [0.8, 1.25], "budget_fractions": "auto", "burn_in_steps": 0,
           "max_copies": 1}
AUTO_FRACTIONS = [1.0, 0.5, 0.25]
"""``search.budget_fractions: auto``: these niches for pbt when the population has at least 8 members, else one
(greedy takes niches only when they are listed)."""
_RESOURCES = {"cpus": 1, "gpus": 0, "tpu": 0}
_RAY = {"address": None, "dashboard": False}


def _model(c: _Ctx, raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):
        raw = {"builder": raw}
    if not isinstance(raw, dict) or "builder" not in raw:
        raise c.fail("model", "a mapping with a `builder` (mlp, cnn, lstm_lm, bert or package.module:function)", raw)
    c.choice(raw["builder"], "model.builder", BUILTIN_MODELS, dotted_ok=True)
    if "data" in raw:  # the builder's `data` argument is the loaded dataset; a key of that name would clash
        raise c.fail("model.data", "no such key (a builder receives the loaded dataset as `data`; configure it "
                                   "under the data section)", raw["data"])
    return dict(raw)


def _data(c: _Ctx, raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict) or "name" not in raw:
        raise c.fail("data", "a mapping with a `name` (digits, digits_tokens, fashion_mnist, cifar10, shakespeare, ptb or "
                     "package.module:function)", raw)
    c.choice(raw["name"], "data.name", BUILTIN_DATA, dotted_ok=True)
    if "seed" in raw and ":" not in str(raw["name"]):  # a built-in loader's split: null would draw one per process
        c.int_(raw["seed"], "data.seed", 0, high=2**32 - 1)
    return dict(raw)


def _training(c: _Ctx, raw: Any) -> dict[str, Any]:
    t = c.section(raw, "training", _TRAINING)
    c.choice(t["optimizer"], "training.optimizer", OPTIMIZERS)
    c.num(t["learning_rate"], "training.learning_rate", 0, 10, open_low=True)
    for k in ("batch_size", "steps", "report_every", "steps_per_execution"):
        c.int_(t[k], f"training.{k}", 1)
    if t["report_every"] > t["steps"]:
        raise c.fail("training.report_every", f"at most training.steps={t['steps']}", t["report_every"])
    if t["steps_per_execution"] > t["report_every"]:
        raise c.fail("training.steps_per_execution", f"at most training.report_every={t['report_every']}",
                     t["steps_per_execution"])
    return t


def _blamed(error: Exception, choices: dict[str, list[Any]], tried: str) -> str:
    """The parameter an operator's error is about: the one its message names (`name` or name=), else the one
    being tried (the others hold their first choices, which may be the bad ones)."""
    named = [q for q in choices if any(f in str(error) for f in (f"`{q}`", f"'{q}'", f"{q}="))]
    return named[0] if len(named) == 1 else tried


def _operators(c: _Ctx, raw: Any, check: Callable[[str, dict[str, Any]], None] | None) -> dict[str, Any]:
    if not isinstance(raw, dict) or not raw:
        raise c.fail("mutations.operators", "a mapping of operator name -> {param: [choices]}", raw)
    out: dict[str, dict[str, list[Any]]] = {}
    for name, params in raw.items():
        key = f"mutations.operators.{name}"
        if not isinstance(name, str):
            raise c.fail("mutations.operators", "operator names (strings)", name)
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise c.fail(key, "a mapping of parameter -> list of choices", params)
        params = dict(params)
        narrow = params.pop("layers", None)
        if narrow is not None and (not isinstance(narrow, list) or not narrow
                                   or not all(isinstance(x, str) and x for x in narrow)):
            raise c.fail(f"{key}.layers", "a non-empty list of layer names or globs", narrow)
        choices = {p: (v if isinstance(v, list) else [v]) for p, v in params.items()}
        for p, vs in choices.items():
            if not vs:
                raise c.fail(f"{key}.{p}", "a non-empty list of choices", vs)
            for v in vs:  # a choice is a genome's option: a scalar
                if isinstance(v, (list, dict)):
                    raise c.fail(f"{key}.{p}", "a list of choices, each a number, string or boolean", v)
        if check is not None:
            for p, vs in choices.items():
                for v in vs:
                    try:
                        check(name, {**{q: ws[0] for q, ws in choices.items()}, p: v})
                    except (ValueError, TypeError) as e:
                        raise SpaceError(f"{c.where}: {key}.{_blamed(e, choices, p)}: {e}") from None
            if not choices:
                try:
                    check(name, {})
                except (ValueError, TypeError) as e:
                    raise SpaceError(f"{c.where}: {key}: {e}") from None
        out[str(name)] = {**choices, **({"layers": narrow} if narrow else {})}
    return out


def _mutations(c: _Ctx, raw: Any, check: Callable[[str, dict[str, Any]], None] | None,
               steps: int) -> dict[str, Any]:
    m = c.section(raw, "mutations", _MUTATIONS)
    layers = m["layers"]
    if isinstance(layers, str):
        layers = [layers]
    if not isinstance(layers, list) or not layers or not all(isinstance(x, str) and x for x in layers):
        raise c.fail("mutations.layers", "a non-empty list of layer names or globs", m["layers"])
    m["layers"] = layers
    m["operators"] = _operators(c, m["operators"], check)
    c.int_(m["warmup_steps"], "mutations.warmup_steps", 0)
    c.int_(m["window"], "mutations.window", 1)
    c.int_(m["frequency"], "mutations.frequency", 1)
    c.int_(m["max_mutations"], "mutations.max_mutations", 1)
    if m["frequency"] > m["window"]:
        raise c.fail("mutations.frequency", f"at most mutations.window={m['window']}", m["frequency"])
    if m["warmup_steps"] >= steps:
        raise c.fail("mutations.warmup_steps", f"below training.steps={steps}", m["warmup_steps"])
    if m["warmup_steps"] + m["window"] > steps:  # no blend could finish: nothing would ever be spliced
        raise c.fail("mutations.window", f"at most training.steps - mutations.warmup_steps = "
                     f"{steps - m['warmup_steps']}", m["window"])
    if not isinstance(m["refresh"], bool):
        raise c.fail("mutations.refresh", "true or false", m["refresh"])
    return m


def _budget(c: _Ctx, raw: Any) -> dict[str, Any]:
    b = c.section(raw, "budget", _BUDGET)
    if (b["bytes"] is None) == (b["ratio"] is None):
        raise c.fail("budget", "exactly one of `bytes` or `ratio` (a fraction of the dense model)", raw)
    c.int_(b["bytes"], "budget.bytes", 1, optional=True)
    c.num(b["ratio"], "budget.ratio", 0, 1, open_low=True, optional=True)
    c.choice(b["unit"], "budget.unit", ("stored", "litert"))
    return b


def _search(c: _Ctx, raw: Any) -> dict[str, Any]:
    s = c.section(raw, "search", _SEARCH)
    c.choice(s["strategy"], "search.strategy", STRATEGIES)
    c.int_(s["population"], "search.population", 1, high=MAX_POPULATION)
    c.int_(s["perturbation_interval"], "search.perturbation_interval", 1)
    c.num(s["quantile_fraction"], "search.quantile_fraction", 0, 0.5, open_low=True)
    c.num(s["time_budget_s"], "search.time_budget_s", 0, math.inf, open_low=True, optional=True)
    c.int_(s["seed"], "search.seed", 0, high=2**32 - 1)  # NumPy's and Keras' seed range
    c.int_(s["max_failures"], "search.max_failures", 0)
    for key in ("seed_greedy", "hedge"):
        if not isinstance(s[key], bool):
            raise c.fail(f"search.{key}", "true or false", s[key])
    if s["burn_in_steps"] != "auto":
        c.int_(s["burn_in_steps"], "search.burn_in_steps", 0)
    c.int_(s["max_copies"], "search.max_copies", 1, optional=True)
    f = s["learning_rate_factors"]
    if not isinstance(f, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                          and math.isfinite(x) and x > 0 for x in f):
        raise c.fail("search.learning_rate_factors", "a list of numbers > 0 (empty: keep the learning rate)", f)
    s["learning_rate_factors"] = [float(x) for x in f]
    f = s["budget_fractions"]
    if f == "auto":  # pbt: niches where each smaller one gets 2 members and half the population stays at the budget
        f = AUTO_FRACTIONS if s["strategy"] == "pbt" and s["population"] >= 2 * len(AUTO_FRACTIONS) + 2 else [1.0]
    if not isinstance(f, list) or not f or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                   and 0 < x <= 1 for x in f):
        raise c.fail("search.budget_fractions", "auto, or a non-empty list of numbers in (0, 1]", f)
    s["budget_fractions"] = sorted({float(x) for x in f} | {1.0}, reverse=True)
    from mutate.search import strategies

    kind = strategies.STRATEGIES.get(s["strategy"])
    niched = kind is not None and kind.niched  # uniform and random have no niches
    if niched and s["population"] < len(s["budget_fractions"]):
        raise c.fail("search.budget_fractions", f"at most search.population ({s['population']}) niches, 1.0 "
                     "included", f)
    return s


def _resources(c: _Ctx, raw: Any) -> dict[str, Any]:
    r = c.section(raw, "resources", _RESOURCES)
    c.num(r["cpus"], "resources.cpus", 0, math.inf, open_low=True)
    c.num(r["gpus"], "resources.gpus", 0, math.inf)
    c.int_(r["tpu"], "resources.tpu", 0)
    return r


def _ray(c: _Ctx, raw: Any) -> dict[str, Any]:
    r = c.section(raw, "ray", _RAY)
    if r["address"] is not None and not isinstance(r["address"], str):
        raise c.fail("ray.address", "null, 'auto' or HOST:PORT", r["address"])
    if not isinstance(r["dashboard"], bool):
        raise c.fail("ray.dashboard", "true or false", r["dashboard"])
    return r


# -- entry points ---------------------------------------------------------------------------------------------
