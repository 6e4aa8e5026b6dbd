"""Behaviour-preservation check: the stored ``data`` of every quick preset, before and after a change.

``--save DIR`` runs each implemented phenomenon's quick preset (seed 0 by default, computed afresh in a
throw-away store) and writes its ``data`` as canonical JSON to ``DIR/<id>.json``; ``--compare DIR`` runs the
same and reports, for each id, whether the data are identical to the saved ones (and, when not, the
largest absolute difference among the numbers and the first differing key path). Wall-clock keys
(``WALL_CLOCK_KEYS``) are left out: they differ between any two runs of the same code.

    python benchmarks/identical_data.py --save BEFORE_DIR         # on the old commit
    python benchmarks/identical_data.py --compare BEFORE_DIR      # on the new one
    python benchmarks/identical_data.py --preset smoke --save DIR  # every id in a few minutes

Exit status 0 when every compared id is identical, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import phenomlab
from phenomlab.phenomena import registry

#: data keys that measure wall-clock time, not behaviour: they differ between any two runs
WALL_CLOCK_KEYS = {"train_seconds"}


def _canonical(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=lambda o: o.tolist() if hasattr(o, "tolist") else o))


def diff(a: Any, b: Any, path: str = "") -> tuple[float, str | None]:
    """(largest absolute numeric difference, first differing path or None) between two JSON trees."""
    if isinstance(a, dict) and isinstance(b, dict):
        worst, first = 0.0, None
        for k in sorted((set(a) | set(b)) - WALL_CLOCK_KEYS):
            if k not in a or k not in b:
                return math.inf, f"{path}/{k} (missing on one side)"
            w, f = diff(a[k], b[k], f"{path}/{k}")
            worst, first = max(worst, w), first or f
        return worst, first
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return math.inf, f"{path} (length {len(a)} vs {len(b)})"
        worst, first = 0.0, None
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            w, f = diff(x, y, f"{path}[{i}]")
            worst, first = max(worst, w), first or f
        return worst, first
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)):
            return 0.0, None
        return abs(a - b), path
    return (0.0, None) if a == b else (math.inf, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", help="write each id's data to DIR/<id>.json")
    group.add_argument("--compare", help="compare each id's data with DIR/<id>.json")
    ap.add_argument("--ids", default="", help="comma-separated ids (default: every implemented id)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="quick", help="e.g. smoke: every code path of a row in seconds")
    args = ap.parse_args(argv)
    ids = [i for i in args.ids.split(",") if i] or registry.implemented()
    folder = Path(args.save or args.compare)
    folder.mkdir(parents=True, exist_ok=True)
    same = True
    for pid in ids:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            data = _canonical(phenomlab.run(pid, preset=args.preset, seed=args.seed, store=tmp).data)
        wall = time.perf_counter() - t0
        if args.save:
            (folder / f"{pid}.json").write_text(json.dumps(data, sort_keys=True))
            print(f"{pid:26s} saved ({wall:.0f} s)", flush=True)
            continue
        ref_path = folder / f"{pid}.json"
        if not ref_path.exists():
            print(f"{pid:26s} no saved data in {folder}", flush=True)
            same = False
            continue
        worst, where = diff(json.loads(ref_path.read_text()), data)
        status = "identical" if where is None else f"DIFFERS (max |diff| {worst:.3g} at {where})"
        same &= where is None
        print(f"{pid:26s} {status} ({wall:.0f} s)", flush=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
