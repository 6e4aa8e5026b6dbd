"""Phenomenon configs: typed fields with bounds, the shared group of training fields, presets and overrides.

A phenomenon's ``Config`` is a frozen dataclass deriving from :class:`PhenomenonConfig`; fields are declared
with :func:`param`. The training hyper-parameters every catalogue entry shares (optimizer, lr, steps,
batch_size, weight_decay, momentum, eval_every, schedule) are not redeclared: a ``Config`` includes the ones it
uses with :func:`training` (one name, type, bound and help text per idea across the catalogue) and turns them
into a :class:`phenomlab.train.TrainConfig` with :meth:`PhenomenonConfig.train_config`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import operator
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..train import TrainConfig


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

    def train_config(self, **overrides: Any) -> TrainConfig:
        """The :class:`TrainConfig` of this config's shared training fields, then ``overrides``.

        ``batch_size = 0`` means full batch (``TrainConfig.batch_size = None``).
        """
        kw: dict[str, Any] = {name: getattr(self, name) for name in TRAINING_FIELDS if hasattr(self, name)}
        if "batch_size" in kw and not kw["batch_size"]:
            kw["batch_size"] = None
        kw.update(overrides)
        return TrainConfig(**kw)

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


_BRACKETS = str.maketrans("", "", "[]()")  # a list as `list --config` prints it, or as a Python tuple


def parse_value(name: str, text: str, tp: Any) -> Any:
    """Parse a ``--set key=value`` string into the field's type (lists as ``a,b,c``, ``[a, b, c]`` or ``(a, b, c)``)."""
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
        inner = text.translate(_BRACKETS).strip()
        inner = inner[:-1] if inner.endswith(",") else inner  # a trailing comma, as in Python's (1,)
        if not inner.strip():
            return ()
        parts = [p.strip() for p in inner.split(",")]
        if not all(parts):
            raise ConfigError(f"{name}={text!r} has an empty item (two commas in a row, or a leading one)")
        return tuple(parse_value(name, p, elem) for p in parts)
    try:
        if tp is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            try:
                return int(text.strip())  # exact at any size
            except ValueError:
                f = float(text)  # 1e3 and 2.0 are whole numbers too
            if not f.is_integer() or abs(f) > 2**53:  # beyond 2**53 a float no longer holds every integer
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
            key = canonical_key(key, names)
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


# ---- the shared training fields --------------------------------------------------------------

#: name -> (type, help, bounds/choices) of each shared training field
TRAINING_FIELDS: dict[str, tuple[Any, str, dict[str, Any]]] = {
    "optimizer": (str, "optimiser", {"choices": ("sgd", "adam", "adamw")}),
    "lr": (float, "learning rate (peak, when a schedule is set)", {"gt": 0.0}),
    "steps": (int, "optimisation steps", {"gt": 0}),
    "batch_size": (int, "minibatch size (0: full batch)", {"ge": 0}),
    "weight_decay": (float, "weight decay (L2 for SGD/Adam, decoupled for AdamW)", {"ge": 0.0}),
    "momentum": (float, "SGD (heavy-ball) momentum", {"ge": 0.0, "lt": 1.0}),
    "eval_every": (int, "steps between evaluations / measurements", {"gt": 0}),
    "schedule": (str, "learning-rate schedule", {"choices": ("constant", "cosine", "linear")}),
}

#: old config keys that still parse (with a one-line warning), mapped to the catalogue-wide name
DEPRECATED_KEYS: dict[str, str] = {
    "wd": "weight_decay",
    "max_steps": "steps",
    "train_steps": "steps",
    "measure_every": "eval_every",
    "control_wd": "control_weight_decay",
    "wd_values": "weight_decay_values",
    "wd_batch_size": "weight_decay_batch_size",
}


class ConfigKeyDeprecated(FutureWarning):
    """An old config key was used; it still works under its new name."""


def canonical_key(key: str, names: Sequence[str]) -> str:
    """``key``, or its new name (with a :class:`ConfigKeyDeprecated` warning) when it is a deprecated alias."""
    new = DEPRECATED_KEYS.get(key)
    if key in names or new is None or new not in names:
        return key
    warnings.warn(f"config key {key!r} is deprecated; use {new!r}", ConfigKeyDeprecated, stacklevel=3)
    return new


def canonical_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A stored config dict with deprecated keys renamed (runs stored before the rename read back alike)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        new = DEPRECATED_KEYS.get(key)
        out[new if new is not None and new not in config else key] = value
    return out


@functools.cache
def training(**defaults: Any) -> type:
    """A frozen dataclass mixin with the shared training fields named in ``defaults``, at those defaults.

    ``class Config(PhenomenonConfig, training(optimizer="sgd", lr=0.05, steps=1500)): ...`` declares
    ``optimizer``, ``lr`` and ``steps`` with the catalogue-wide type, bound and help text.
    """
    unknown = sorted(set(defaults) - set(TRAINING_FIELDS))
    if unknown:
        raise ConfigError(f"not shared training fields: {unknown}; choose from {list(TRAINING_FIELDS)}")
    specs = []
    for name, default in defaults.items():
        tp, help_, meta = TRAINING_FIELDS[name]
        specs.append((name, tp, param(tp(default), help_, **meta)))
    return dataclasses.make_dataclass("Training", specs, frozen=True)


#: the datasets a phenomenon can be run on, with their one-line description
DATASETS: dict[str, str] = {
    "mnist1d": "MNIST-1D (40-dim, generated locally)",
    "digits": "sklearn digits (64-dim, 1,348 train / 449 test points)",
    "gaussian_mixture": "a Gaussian mixture",
}


@functools.cache
def data(datasets: tuple[str, ...] | None = None, **defaults: Any) -> type:
    """A frozen dataclass mixin with the shared data fields: ``dataset`` (the first of ``datasets`` by default,
    one of them), ``n_train`` and ``n_test`` (points generated for synthetic data; digits keeps its fixed split).

    ``class Config(PhenomenonConfig, data(("mnist1d", "digits"), n_train=4000, n_test=4000), training(...))``.
    Only the fields given appear (``datasets`` for ``dataset``).
    """
    unknown = sorted(set(defaults) - {"n_train", "n_test"})
    if unknown:
        raise ConfigError(f"not shared data fields: {unknown}; choose from ['n_train', 'n_test']")
    specs: list[tuple[str, Any, Any]] = []
    if datasets:
        if not set(datasets) <= set(DATASETS):
            raise ConfigError(f"unknown datasets {sorted(set(datasets) - set(DATASETS))}")
        help_ = "; ".join(f"{d}: {DATASETS[d]}" for d in datasets)
        specs.append(("dataset", str, param(datasets[0], help_, choices=datasets)))
    for name, what in (("n_train", "training"), ("n_test", "test")):
        if name in defaults:
            help_ = f"{what} points of a generated dataset (digits keeps its fixed split)"
            specs.append((name, int, param(int(defaults[name]), help_, gt=0)))
    return dataclasses.make_dataclass("Data", specs, frozen=True)
