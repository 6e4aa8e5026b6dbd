"""Grids over configs and seeds: parsing, expansion into trials, sweep identity."""

from __future__ import annotations

import hashlib
import itertools
import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import PhenomlabError
from ..store.ids import canonical_json
from ..store.ids import run_id as make_run_id

#: sweeps with more trials than this need ``--yes`` / ``confirm=True``
MAX_TRIALS = 1000


class TooManyTrials(PhenomlabError):
    """A sweep larger than the trial limit, refused before any trial is built."""


@dataclass(frozen=True)
class Trial:
    """One run of a sweep: phenomenon, preset, the full override set, seed and its run id
    (``force``: recompute it even if the store has it finished)."""

    phenomenon: str
    preset: str
    overrides: Mapping[str, Any]
    seed: int
    config: Mapping[str, Any] = field(default_factory=dict)
    run_id: str = ""
    force: bool = False

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
            values = values.strip()
            values = values[:-1] if values.endswith(",") else values  # a trailing comma, as in Python
            vals = [v.strip().replace(";", ",") for v in values.split(",")]
            if not key or not any(vals):
                raise PhenomlabError(f"--grid expects key=v1,v2,..., got {item!r}")
            if not all(vals):
                raise PhenomlabError(f"--grid {item!r} has an empty value (two commas in a row, or a leading one)")
            if key in out:
                raise PhenomlabError(f"--grid names {key!r} twice")
            out[key] = vals
    for key, vals in out.items():
        if not vals:
            raise PhenomlabError(f"grid key {key!r} has no values")
    return out


def parse_seed_ranges(spec: str | int | Sequence[int]) -> list[range]:
    """A seed spec as ranges, without listing its seeds: ``"0-4,9"`` -> ``[range(0, 5), range(9, 10)]``.

    ``spec`` is a string (``"0-4"``, ``"0,3,7"``, ``"5"``), one int (that seed) or a sequence of ints. Seeds
    are checked as ``phenomlab run --seed`` checks them (:func:`~phenomlab.phenomena.lifecycle.check_seed`).
    """
    from ..phenomena.lifecycle import check_seed

    if isinstance(spec, range) and spec.step == 1:
        if len(spec):
            check_seed(spec.start)
            check_seed(spec.stop - 1)
        ranges = [spec] if len(spec) else []
    elif isinstance(spec, str):
        ranges = []
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                # as --grid refuses "0.5,,0.7": a doubled comma is more likely a lost seed than a wish
                raise PhenomlabError(f"--seeds has an empty value: {spec!r}")
            if re.fullmatch(r"-\d+", part):
                check_seed(int(part))
            m = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", part)
            if m is None:
                raise PhenomlabError(f"--seeds expects e.g. 0-4 or 0,1,5, got {spec!r}")
            lo = int(m[1])
            hi = int(m[2]) if m[2] is not None else lo
            if hi < lo:
                raise PhenomlabError(f"seed range {part!r} is empty")
            check_seed(hi)
            ranges.append(range(lo, hi + 1))
    else:
        items = list(spec) if isinstance(spec, Iterable) else [spec]
        # numpy integers are ints too; bools and floats are not seeds
        ranges = [
            range(s, s + 1)
            for s in (
                check_seed(int(x) if isinstance(x, numbers.Integral) and not isinstance(x, bool) else x) for x in items
            )
        ]
    if not ranges:
        raise PhenomlabError("no seeds given")
    return ranges


def count_seeds(ranges: Sequence[range]) -> int:
    """How many distinct seeds ``ranges`` hold (overlaps counted once), without listing them."""
    n, end = 0, -1
    for r in sorted(ranges, key=lambda r: r.start):
        if r.stop > end:
            n += r.stop - max(r.start, end)
            end = r.stop
    return n


def seed_list(ranges: Sequence[range]) -> list[int]:
    """The seeds of ``ranges``, each once, in the order given."""
    return list(dict.fromkeys(itertools.chain.from_iterable(ranges)))


def parse_seeds(spec: str | int | Sequence[int]) -> list[int]:
    """``"0-4"`` -> [0..4]; ``"0,3,7"``; ``"5"`` or ``5`` -> [5]; repeated seeds once, in order given."""
    return seed_list(parse_seed_ranges(spec))


def check_size(grid: Mapping[str, Sequence[Any]], ranges: Sequence[range], limit: int | None) -> int:
    """The number of trials of ``grid`` x seeds, counted before any is built; :class:`TooManyTrials` above ``limit``."""
    points = math.prod(len(v) for v in grid.values())
    seeds = count_seeds(ranges)
    n = points * seeds
    if limit is not None and n > limit:
        raise TooManyTrials(
            f"this sweep has {n:,} trials ({points:,} grid point(s) x {seeds:,} seed(s)), more than the limit of"
            f" {limit:,}; pass --yes (CLI) or confirm=True (Python) to run it anyway"
        )
    return n


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

    both = sorted(set(base or {}) & set(grid))
    if both:
        # the grid's values would silently win over the fixed override: say which one is meant
        raise PhenomlabError(f"{', '.join(both)} given both as a fixed override (--set) and in the grid (--grid)")
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
