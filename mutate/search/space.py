"""Search spaces: the YAML schema, its validation, and ``--set`` overrides. Pure Python (pyyaml only).

Every error is a `SpaceError` whose one line names the file, the key path, what was expected and what was
found, e.g. ``digits_mlp.yaml: search.population: expected an int >= 1, got 0``.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from mutate.search.sections import (_TOP, BUILTIN_DATA, BUILTIN_MODELS, OPTIMIZERS, STRATEGIES,  # noqa: F401
                                    SpaceError, _budget, _Ctx, _data, _model, _mutations, _ray, _resources, _search,
                                    _training, shown)


@dataclass(frozen=True)
class Space:
    """A validated search space. Sections are plain dicts with every default filled in.

    Attributes:
        path: the YAML file (absolute), or None for a space built from a dict.
        name: the run name (default: the file's stem).
        model: ``{"builder": ..., **builder kwargs}``.
        data: ``{"name": ..., **loader kwargs}``.
        training: optimizer, learning_rate, batch_size, steps, report_every, steps_per_execution.
        mutations: layers (globs), operators ({name: {param: [choices]}}), warmup_steps, window,
            frequency, refresh, max_mutations.
        budget: ``{"bytes": int}`` or ``{"ratio": float}`` (a fraction of the dense model's bytes).
        search: strategy, population, perturbation_interval, quantile_fraction, time_budget_s, seed,
            max_failures, seed_greedy, hedge, learning_rate_factors, budget_fractions, burn_in_steps, max_copies.
        resources: cpus and gpus per trial, plus tpu.
        ray: address (None: an embedded local Ray), dashboard.
        storage: folder holding run directories (resolved against the YAML file).
    """

    path: Path | None
    name: str
    model: dict[str, Any]
    data: dict[str, Any]
    training: dict[str, Any]
    mutations: dict[str, Any]
    budget: dict[str, Any]
    search: dict[str, Any]
    resources: dict[str, Any]
    ray: dict[str, Any]
    storage: Path
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def where(self) -> str:
        return self.path.name if self.path else "<space>"

    def error(self, key: str, message: str) -> SpaceError:
        """A `SpaceError` for ``key`` of this space."""
        return SpaceError(f"{self.where}: {key}: {message}")

    def to_dict(self) -> dict[str, Any]:
        """The validated space as plain data (JSON-able), e.g. for a run directory."""
        return {"name": self.name, "model": self.model, "data": self.data, "training": self.training,
                "mutations": self.mutations, "budget": self.budget, "search": self.search,
                "resources": self.resources, "ray": self.ray, "storage": str(self.storage)}


def _set(data: dict[str, Any], assignment: str, where: str) -> None:
    """Apply one ``key.path=value`` override (value parsed as YAML) to ``data`` in place."""
    if "=" not in assignment:
        raise SpaceError(f"{where}: --set {assignment!r}: expected key.path=value")
    path, value = assignment.split("=", 1)
    keys = path.strip().split(".")
    if not all(keys):
        raise SpaceError(f"{where}: --set {assignment!r}: empty key in {path!r}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except (yaml.YAMLError, ValueError, RecursionError) as e:
        problem = getattr(e, "problem", None) or (str(e).splitlines() or ["nested too deeply"])[0]
        raise SpaceError(f"{where}: --set {path}: value {value!r} is not valid YAML ({problem})") from None
    node = data
    for k in keys[:-1]:
        nxt = node.get(k)
        if nxt is None:
            nxt = node[k] = {}
        if not isinstance(nxt, dict):
            raise SpaceError(f"{where}: --set {path}: {k!r} holds {shown(nxt)}, not a mapping")
        node = nxt
    node[keys[-1]] = parsed


DATA_PATHS = ("data_dir", "archive")
"""Keys of a built-in loader's ``data`` section that name files (fashion_mnist's and ptb's ``data_dir``,
shakespeare's ``archive``): a relative one resolves against the YAML file's folder."""


def from_dict(data: Any, *, path: Path | None = None, overrides: list[str] | tuple[str, ...] = (),
              check_operator: Callable[[str, dict[str, Any]], None] | None = None) -> Space:
    """Validate a space given as plain data.

    Args:
        data: the parsed YAML.
        path: the file it came from (names errors; relative paths resolve against its folder).
        overrides: ``key.path=value`` assignments applied first.
        check_operator: ``(name, params) -> None`` raising for unknown operators or bad parameters.

    Raises:
        SpaceError: the space is invalid.
    """
    c = _Ctx(path.name if path else "<space>")
    if not isinstance(data, dict):
        raise c.fail("<top>", "a mapping of sections (model, data, training, mutations, budget, search)", data)
    data = copy.deepcopy(data)
    for assignment in overrides:
        _set(data, assignment, c.where)
    _one_budget(data, overrides)
    top = c.section(data, "", _TOP)
    for required in ("model", "data", "mutations", "budget"):
        if top[required] is None:
            raise SpaceError(f"{c.where}: {required}: missing required section")
    training = _training(c, top["training"])
    base = path.parent if path else Path.cwd()
    storage = top["storage"]
    if not isinstance(storage, str) or not storage:
        raise c.fail("storage", "a folder path", storage)
    name = top["name"] if top["name"] is not None else (path.stem if path else "search")
    if (not isinstance(name, str) or not name or "/" in name or "\0" in name or name in (".", "..")
            or len(name.encode()) > 200):  # a folder's name (with room for "-N"): at most 255 bytes
        raise c.fail("name", "a run name: a folder name without '/', at most 200 bytes", name)
    if "\0" in storage:
        raise c.fail("storage", "a folder path", storage)
    if "://" in storage:  # run directories are read and written as local paths (points, checkpoints, fronts)
        raise c.fail("storage", "a local or shared (NFS, a mounted bucket) folder path, not a URI", storage)
    storage = os.path.expanduser(storage)
    storage_path = (base / storage).resolve()
    data_section = _data(c, top["data"])
    if ":" not in str(data_section["name"]):  # a built-in loader's files: relative to the YAML's folder, as storage
        for key in DATA_PATHS:
            value = data_section.get(key)
            if isinstance(value, str) and value and "://" not in value and not Path(value).expanduser().is_absolute():
                data_section[key] = str((base / value).resolve())
    return Space(path=path, name=name, model=_model(c, top["model"]), data=data_section,
                 training=training, mutations=_mutations(c, top["mutations"], check_operator, training["steps"]),
                 budget=_budget(c, top["budget"]), search=_search(c, top["search"]),
                 resources=_resources(c, top["resources"]), ray=_ray(c, top["ray"]), storage=storage_path,
                 raw=data)


def _one_budget(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> None:
    """``--set budget.bytes=N`` on a space whose YAML gives ``budget.ratio`` (every shipped space does) means
    N bytes instead: the YAML's other budget key is dropped, unless an override set it too (then the space
    names both and is refused). The same for ``--set budget.ratio=R`` over a YAML's ``bytes``."""
    keys = {a.split("=", 1)[0].strip() for a in overrides}
    budget = data.get("budget")
    if not isinstance(budget, dict):
        return
    for given, other in (("bytes", "ratio"), ("ratio", "bytes")):
        if f"budget.{given}" in keys and f"budget.{other}" not in keys and budget.get(given) is not None:
            budget.pop(other, None)


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = (),
         check_operator: Callable[[str, dict[str, Any]], None] | None = None) -> Space:
    """Read and validate a YAML search space (``yaml.safe_load`` only).

    Raises:
        SpaceError: the file is missing, is not valid YAML, or does not follow the schema.
    """
    p = Path(path).resolve()
    if p.is_dir():
        raise SpaceError(f"{path}: is a folder; give a search space's YAML file (e.g. search_spaces/digits_mlp.yaml)")
    if not p.is_file():
        raise SpaceError(f"{path}: no such search space file")
    try:
        text = p.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except UnicodeDecodeError as e:
        raise SpaceError(f"{p.name}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpaceError(f"{p.name}: malformed YAML{at}: {problem}") from None
    except ValueError as e:  # a tag's constructor, e.g. `!!int abc`
        raise SpaceError(f"{p.name}: malformed YAML: {str(e).splitlines()[0]}") from None
    except RecursionError:
        raise SpaceError(f"{p.name}: malformed YAML: nested too deeply") from None
    twice = _repeated_key(text)
    if twice:
        raise SpaceError(f"{p.name}: {twice}")
    return from_dict(data, path=p, overrides=overrides, check_operator=check_operator)


def _repeated_key(text: str) -> str | None:
    """Where a mapping of ``text`` gives one key twice, as a message (None when none does). ``yaml.safe_load``
    keeps the last value silently; the composed node tree (no Python object is constructed) still has both."""
    seen: set[int] = set()
    todo: list[tuple[Any, str]] = [(yaml.compose(text, Loader=yaml.SafeLoader), "")]
    while todo:
        node, where = todo.pop()
        if node is None or id(node) in seen:  # an alias reuses its anchor's node: walk it once
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                label = key.value if isinstance(key, yaml.ScalarNode) else None
                if label is not None and key.tag != "tag:yaml.org,2002:merge":
                    name = f"{where}.{label}" if where else label
                    line = key.start_mark.line + 1
                    if (key.tag, label) in first:
                        return (f"{name}: given twice (lines {first[key.tag, label]} and {line}); YAML keeps only "
                                "the last, so give each key once")
                    first[key.tag, label] = line
                    todo.append((value, name))
                else:
                    todo.append((value, where))
        elif isinstance(node, yaml.SequenceNode):
            todo.extend((item, f"{where}[{i}]") for i, item in enumerate(node.value))
    return None


def resolve_path(space: Space, value: str) -> Path:
    """A path from the space, resolved against the YAML file's folder."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else ((space.path.parent if space.path else Path.cwd()) / p).resolve()
