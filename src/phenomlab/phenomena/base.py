"""The contract every phenomenon module follows, and the pieces it is built from.

A phenomenon module defines::

    ID = "grokking"                      # catalogue id
    Config(PhenomenonConfig)             # dataclass; fields declared with ``param``; defaults = quick preset
    PRESETS = {"quick": {}, "paper": {...}}  # overrides of the defaults
    def run(config, ctx) -> dict         # trains/measures; returns JSON-able data for signature and plot
    def signature(result) -> Verdict     # decides from the measured numbers only
    def plot(result, out_dir) -> list[Path]

The registry, runner, CLI, sweeps, store and report know nothing phenomenon-specific.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import operator
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..seeding import derive_seed, generator

# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------


def param(
    default: Any,
    help: str = "",
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    choices: Sequence[Any] | None = None,
) -> Any:
    """A config field with a description and bounds checked by :meth:`PhenomenonConfig.validate`.

    Lists/tuples get an immutable tuple default so dataclasses accept them.
    """
    if isinstance(default, list):
        default = tuple(default)
    meta = {"help": help, "gt": gt, "ge": ge, "lt": lt, "le": le, "choices": tuple(choices) if choices else None}
    return field(default=default, metadata=meta)


_BOUNDS = {"gt": (operator.gt, ">"), "ge": (operator.ge, ">="), "lt": (operator.lt, "<"), "le": (operator.le, "<=")}


@dataclass(frozen=True)
class PhenomenonConfig:
    """Base of every phenomenon's ``Config``: typed, validated, hashable into a run id.

    Numeric bounds apply elementwise to tuple fields (e.g. every width > 0).
    """

    def validate(self) -> None:
        """Check every field's type and bounds; subclasses add cross-field checks (call super)."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            _check_type(f.name, value, hints.get(f.name, Any))
            meta = f.metadata
            items = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, float) and not math.isfinite(v) for v in items):
                raise ConfigError(f"{f.name} must be finite, got {value!r}")
            for key, (op, sym) in _BOUNDS.items():
                bound = meta.get(key)
                if bound is None:
                    continue
                for v in items:
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and not op(v, bound):
                        raise ConfigError(f"{f.name} must be {sym} {bound}, got {value!r}")
            if meta.get("choices") and value not in meta["choices"]:
                raise ConfigError(f"{f.name} must be one of {list(meta['choices'])}, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def describe(cls) -> list[tuple[str, str, Any, str]]:
        """(name, type, default, help) for each field: what ``phenomlab list --config`` shows."""
        hints = typing.get_type_hints(cls)
        return [
            (f.name, _type_name(hints.get(f.name, Any)), f.default, f.metadata.get("help", ""))
            for f in dataclasses.fields(cls)
        ]


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_type(name: str, value: Any, tp: Any) -> None:
    if tp is Any:
        return
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arm in typing.get_args(tp):
            try:
                _check_type(name, value, arm)
                return
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{name} has the wrong type: got {value!r}, expected {_type_name(tp)}")
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{name} must be None, got {value!r}")
        return
    if origin is tuple:
        if not isinstance(value, tuple):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        args = typing.get_args(tp)
        elem = args[0] if args else Any
        for v in value:
            _check_type(name, v, elem)
        return
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{name} must be {_type_name(tp)}, got {value!r}")


def parse_value(name: str, text: str, tp: Any) -> Any:
    """Parse a ``--set key=value`` string into the field's type (lists as ``a,b,c``)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        arms = typing.get_args(tp)
        if type(None) in arms and text.strip().lower() in ("none", "null", ""):
            return None
        for arm in arms:
            if arm is type(None):
                continue
            try:
                return parse_value(name, text, arm)
            except ConfigError:
                continue
        raise ConfigError(f"cannot parse {name}={text!r} as {_type_name(tp)}")
    if origin is tuple:
        args = typing.get_args(tp)
        elem = args[0] if args else str
        parts = [p for p in text.replace("[", "").replace("]", "").split(",") if p.strip()]
        return tuple(parse_value(name, p.strip(), elem) for p in parts)
    try:
        if tp is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            f = float(text)
            if not f.is_integer():
                raise ValueError
            return int(f)
        if tp is float:
            return float(text)
    except ValueError:
        raise ConfigError(f"{name} expects {_type_name(tp)}, got {text!r}") from None
    return text


def build_config(
    cls: type[PhenomenonConfig],
    presets: Mapping[str, Mapping[str, Any]],
    preset: str = "quick",
    overrides: Mapping[str, Any] | None = None,
) -> PhenomenonConfig:
    """Defaults, then the preset, then user overrides (strings are parsed by field type); validated."""
    if preset not in presets:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(presets)}")
    names = cls.field_names()
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for mapping in (presets[preset], overrides or {}):
        for key, val in mapping.items():
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f"; valid keys: {', '.join(names)}"
                raise ConfigError(f"unknown config key {key!r} for {cls.__module__.rsplit('.', 1)[-1]}{hint}")
            if isinstance(val, str) and hints[key] is not str:
                val = parse_value(key, val, hints[key])
            elif isinstance(val, list):
                val = tuple(val)
            elif isinstance(val, int) and not isinstance(val, bool) and hints[key] is float:
                val = float(val)
            values[key] = val
    try:
        cfg = cls(**values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from None
    cfg.validate()
    return cfg


# ---------------------------------------------------------------------------------------------
# verdicts and results
# ---------------------------------------------------------------------------------------------

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}


@dataclass
class Check:
    """One numeric criterion of a signature: ``value op threshold``."""

    name: str
    value: float | None
    op: str
    threshold: float
    passed: bool
    description: str = ""

    def __str__(self) -> str:
        v = "n/a" if self.value is None else f"{self.value:.4g}"
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name} = {v} (need {self.op} {self.threshold:.4g})"


def check(name: str, value: float | None, op: str, threshold: float, description: str = "") -> Check:
    """Build a :class:`Check` whose ``passed`` is computed here from the measured value.

    A missing value (None/NaN: the event never happened) fails.
    """
    if op not in _OPS:
        raise ValueError(f"unknown comparison {op!r}")
    ok = value is not None and not (isinstance(value, float) and math.isnan(value)) and _OPS[op](value, threshold)
    return Check(name, None if value is None else float(value), op, float(threshold), bool(ok), description)


@dataclass
class Verdict:
    """Did the signature appear? ``passed`` is the conjunction of the checks."""

    checks: list[Check]
    summary: str = ""
    passed: bool = field(init=False)

    def __post_init__(self) -> None:
        self.passed = bool(self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "summary": self.summary, "checks": [dataclasses.asdict(c) for c in self.checks]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Verdict:
        return cls([Check(**c) for c in d["checks"]], d.get("summary", ""))

    def __str__(self) -> str:
        head = "PASSED" if self.passed else "NOT REPRODUCED"
        lines = [f"verdict: {head}" + (f" - {self.summary}" if self.summary else "")]
        lines += [f"  {c}" for c in self.checks]
        return "\n".join(lines)


@dataclass
class Result:
    """What a run produced: the JSON-able ``data`` its signature and plot read, plus identity."""

    phenomenon: str
    config: dict[str, Any]
    seed: int
    data: dict[str, Any]
    run_id: str | None = None
    verdict: Verdict | None = None
    figures: list[str] = field(default_factory=list)
    cached: bool = False
    duration: float | None = None
    run_dir: str | None = None

    @property
    def passed(self) -> bool | None:
        return None if self.verdict is None else self.verdict.passed

    def __getitem__(self, key: str) -> Any:
        return self.data[key]


# ---------------------------------------------------------------------------------------------
# run context
# ---------------------------------------------------------------------------------------------


class RunContext:
    """What a phenomenon's ``run`` gets: seed, device, a run folder, logging and resumable training.

    ``ctx.train(name, model, data, train_cfg)`` wraps :func:`phenomlab.train.train` with a checkpoint
    ``<run_dir>/<name>.ckpt`` and logs metrics as ``<name>/<metric>``: an interrupted run resumes each
    named training where it stopped, and a finished one is not repeated.
    """

    def __init__(
        self,
        seed: int = 0,
        device: str | torch.device = "cpu",
        run_dir: str | Path | None = None,
        store: Any = None,
        run_id: str | None = None,
        progress: bool = False,
    ) -> None:
        self.seed = int(seed)
        self.device = torch.device(device)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.store = store
        self.run_id = run_id
        self.progress = progress

    def seed_for(self, *salt: int | str) -> int:
        """A child seed for one part of the run (data, init of model k, ...)."""
        return derive_seed(self.seed, *salt)

    def generator(self, *salt: int | str) -> torch.Generator:
        return generator(self.seed_for(*salt))

    def log(self, step: int, metrics: Mapping[str, float], prefix: str | None = None) -> None:
        if self.store is None or self.run_id is None:
            return
        named = {f"{prefix}/{k}" if prefix else k: v for k, v in metrics.items()}
        self.store.log_metrics(self.run_id, step, named)

    def checkpoint_path(self, name: str) -> Path | None:
        return None if self.run_dir is None else self.run_dir / f"{name}.ckpt"

    def train(
        self, name: str, model: nn.Module, train_data: tuple[torch.Tensor, torch.Tensor], cfg: Any, **kwargs: Any
    ) -> Any:
        from ..train import train

        def logger(step: int, metrics: Mapping[str, float]) -> None:
            self.log(step, metrics, prefix=name)

        label = f"{name}" if self.progress else False
        return train(
            model,
            train_data,
            cfg,
            logger=logger,
            checkpoint=self.checkpoint_path(name),
            seed=self.seed_for("train", name),
            progress=label,
            **kwargs,
        )

    def cached(self, name: str, compute: Callable[[], Any]) -> Any:
        """Resumable unit of work that is not a training loop: the value ``compute()`` returned in an
        earlier attempt of this run (saved under the run folder), else compute and save it now."""
        path = self.run_dir / f"{name}.part.pt" if self.run_dir is not None else None
        if path is not None and path.exists():
            return torch.load(path, weights_only=False)
        value = compute()
        if path is not None:
            tmp = path.with_suffix(".tmp")
            torch.save(value, tmp)
            tmp.replace(path)
        return value
