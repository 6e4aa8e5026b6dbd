"""Grids over configs and seeds: parsing, expansion into trials, sweep identity."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import PhenomlabError
from ..store.ids import canonical_json
from ..store.ids import run_id as make_run_id


@dataclass(frozen=True)
class Trial:
    """One run of a sweep: phenomenon, preset, the full override set, seed and its run id."""

    phenomenon: str
    preset: str
    overrides: Mapping[str, Any]
    seed: int
    config: Mapping[str, Any] = field(default_factory=dict)
    run_id: str = ""

    @property
    def label(self) -> str:
        over = " ".join(f"{k}={v}" for k, v in self.overrides.items())
        return f"{self.phenomenon} seed={self.seed} {over}".strip()


def parse_grid(items: Iterable[str] | Mapping[str, Sequence[Any]] | None) -> dict[str, list[Any]]:
    """``["wd=0,0.5", "lr=1e-3"]`` -> ``{"wd": ["0", "0.5"], "lr": ["1e-3"]}``; a mapping passes through.

    Values stay strings here and are parsed by the phenomenon's field types when configs are built.
    A value holding a list (a tuple field) is written with ``;`` between items: ``widths=1;2;4,8;16``.
    """
    if items is None:
        return {}
    if isinstance(items, Mapping):
        out = {str(k): list(v) if isinstance(v, (list, tuple)) else [v] for k, v in items.items()}
    else:
        out = {}
        for item in items:
            if "=" not in item:
                raise PhenomlabError(f"--grid expects key=v1,v2,..., got {item!r}")
            key, values = item.split("=", 1)
            key = key.strip().replace("-", "_")
            vals = [v.strip().replace(";", ",") for v in values.split(",") if v.strip()]
            if not key or not vals:
                raise PhenomlabError(f"--grid expects key=v1,v2,..., got {item!r}")
            if key in out:
                raise PhenomlabError(f"--grid names {key!r} twice")
            out[key] = vals
    for key, vals in out.items():
        if not vals:
            raise PhenomlabError(f"grid key {key!r} has no values")
    return out


def parse_seeds(spec: str | int | Sequence[int]) -> list[int]:
    """``"0-4"`` -> [0..4]; ``"0,3,7"``; ``"5"``; an int n means seeds 0..n-1 when given as a count."""
    if isinstance(spec, int):
        return [spec]
    if not isinstance(spec, str):
        seeds = [int(s) for s in spec]
    else:
        seeds = []
        try:
            for part in spec.split(","):
                part = part.strip()
                if not part:
                    continue
                if "-" in part[1:]:
                    a, b = part.split("-", 1) if not part.startswith("-") else (part, "")
                    lo, hi = int(a), int(b)
                    if hi < lo:
                        raise PhenomlabError(f"seed range {part!r} is empty")
                    seeds.extend(range(lo, hi + 1))
                else:
                    seeds.append(int(part))
        except ValueError:
            raise PhenomlabError(f"--seeds expects e.g. 0-4 or 0,1,5, got {spec!r}") from None
    if not seeds:
        raise PhenomlabError("no seeds given")
    if any(s < 0 for s in seeds):
        raise PhenomlabError("seeds must be non-negative")
    return list(dict.fromkeys(seeds))


def expand(
    pid: str,
    grid: Mapping[str, Sequence[Any]],
    seeds: Sequence[int],
    preset: str = "quick",
    base: Mapping[str, Any] | None = None,
) -> list[Trial]:
    """Every combination of grid values x seeds, each validated into a config with its run id.

    Validation happens here, before anything runs, so a bad grid value fails the whole sweep at once.
    """
    from ..phenomena.registry import make_config

    keys = list(grid)
    trials = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        overrides = {**(base or {}), **dict(zip(keys, combo, strict=True))}
        cfg = make_config(pid, preset, overrides).to_dict()
        for seed in seeds:
            trials.append(Trial(pid, preset, overrides, int(seed), cfg, make_run_id(pid, cfg, seed)))
    return trials


def sweep_id(
    pid: str,
    preset: str,
    grid: Mapping[str, Sequence[Any]],
    seeds: Sequence[int],
    base: Mapping[str, Any] | None = None,
) -> str:
    payload = canonical_json(
        {
            "phenomenon": pid,
            "preset": preset,
            "grid": {k: list(map(str, v)) for k, v in grid.items()},
            "seeds": list(seeds),
            "base": {k: str(v) for k, v in (base or {}).items()},
        }
    )
    return "s" + hashlib.sha256(payload.encode()).hexdigest()[:15]
