"""Measurements on any PyTorch model or on plain tensors.

Each probe is a pure function on tensors (tested against an exact or brute-force reference), plus
model helpers that collect features by module name with forward hooks. Submodules:

- ``activations``: ``features`` of named modules by forward hooks
- ``collapse``: NC1-NC4, CDNV, NCC accuracy, few-shot NCC error (Papyan et al. 2020; Galanti et al. 2022)
- ``spectra``: singular values, numerical/stable/effective rank, ESD power-law alpha (Martin & Mahoney 2021)
- ``curvature``: Hessian-vector products, Lanczos top-k, Hutchinson trace, SLQ density, Gauss-Newton
- ``kernels``: empirical NTK, kernel change and alignment (Jacot et al. 2018)
- ``similarity``: linear/RBF/unbiased/minibatch CKA, SVCCA, PWCCA (Kornblith et al. 2019)
- ``information``: binned mutual information for the information plane (Shwartz-Ziv & Tishby 2017)
- ``stability``: Lyapunov exponents and moment growth of SGD (Ziyin et al. 2023)
- ``landscape``: loss slices, interpolation barriers, permutation matching (Ainsworth et al. 2023)
- ``generative``: FID and class-conditional FID/IS (Heusel et al. 2017; Benny et al. 2020)
- ``bounds``: norm-based Rademacher bounds, sparse (filter-norm) vs standard (Galanti et al. 2023)
- ``causal``: distribution complexity as an autoencoder's reconstruction error on quantiles
- ``patches``: patch features and single-image FID for single-image GANs
- ``attributes``: mean best correlation of units with hidden attributes
- ``coords``: coordinate check, activation size per layer vs width (Yang et al. 2021, muP)
- ``merging``: data-free merging of functionally equivalent units (Iterative Feature Merging, Chen et al. 2023)

``probes.X`` is every name of every submodule's ``__all__`` (plus :func:`threads`, the opt-in thread
control), resolved lazily: importing this package imports no submodule, and ``probes.linear_cka``
imports only ``similarity``. Example: ``probes.neural_collapse(model, (x, y), layer="act2")``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import re
from typing import Any

# Private modules whose ``__all__`` is public as well.
_PUBLIC_PRIVATE = ("_threads",)
_INDEX: dict[str, str] = {}
_ALL_RE = re.compile(r"^__all__(?:\s*:[^=\n]*)?\s*=\s*(\[[^\]]*\]|\([^)]*\))", re.MULTILINE)


def _submodules() -> list[str]:
    public = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    return public + list(_PUBLIC_PRIVATE)


def _declared_all(module: str) -> list[str]:
    """``module.__all__`` read from the module's source, so that nothing is imported."""
    spec = importlib.util.find_spec(f"{__name__}.{module}")
    get_source = getattr(spec.loader, "get_source", None) if spec is not None else None
    source = get_source(spec.name) if get_source is not None and spec is not None else None
    if source is None:  # bytecode only: importing is the one way to read it
        return list(importlib.import_module(f".{module}", __name__).__all__)
    # Parsing just the assignment is ~50x cheaper than the whole module; the full parse is the fallback.
    found = _ALL_RE.search(source)
    if found is not None:
        try:
            return list(ast.literal_eval(found.group(1)))
        except (ValueError, SyntaxError):
            pass
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return list(ast.literal_eval(value))
    return []


def _index() -> dict[str, str]:
    """``{public name: submodule}`` over all submodules, built once on first use."""
    if not _INDEX:
        for module in _submodules():
            for name in _declared_all(module):
                if name in _INDEX:
                    raise ImportError(f"phenomlab.probes: {name!r} is exported by both {_INDEX[name]} and {module}")
                _INDEX[name] = module
    return _INDEX


def __getattr__(name: str) -> Any:
    if name == "__all__":
        return sorted(_index())
    where = _index().get(name)
    if where is not None:
        value = getattr(importlib.import_module(f".{where}", __name__), name)
        globals()[name] = value  # later look-ups skip __getattr__
        return value
    if name in _submodules():
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'phenomlab.probes' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*_index(), *_submodules(), *globals()})
