"""The catalogue (docs/CATALOG.md) as data, and lookup of implemented phenomenon modules by id."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..errors import UnknownPhenomenon
from .config import PhenomenonConfig, build_config


@dataclass(frozen=True)
class Entry:
    """One catalogue row; ``module`` names an implementation outside ``phenomlab.phenomena`` (a plugin).

    ``reproduced`` is False for an implemented row whose quick preset's verdict fails (docs/CATALOG.md: "not
    reproduced at quick scale"; the numbers are in docs/phenomena/<id>.md)."""

    id: str
    tier: int
    title: str
    source: str
    module: str | None = None
    reproduced: bool = True

    @property
    def module_name(self) -> str:
        return self.module or "phenomlab.phenomena." + self.id.replace("-", "_")

    @property
    def implemented(self) -> bool:
        return importlib.util.find_spec(self.module_name) is not None

    @property
    def status(self) -> str:
        """``reproduced``, ``not reproduced`` (at quick scale) or ``not implemented``."""
        if not self.implemented:
            return "not implemented"
        return "reproduced" if self.reproduced else "not reproduced"


#: The rows docs/CATALOG.md marks "not reproduced at quick scale" (tests/phenomena/test_catalog.py keeps them in sync).
NOT_REPRODUCED = frozenset(
    {
        "double-descent-epoch",
        "neural-collapse",
        "low-rank-bias",
        "effective-depth",
        "ssl-clustering",
        "ntk-mup",
        "information-plane",
        "mode-connectivity",
        "supcon-simplex",
        "scaling-laws",
        "model-collapse",
        "multiplicative-nets",
        "sparse-norm-bounds",
        "discrete-attributes",
        "hyper-singan",
        "contrastive-inversion",
        "feature-merging",
        "representation-similarity",
    }
)


_ROWS: tuple[Entry, ...] = (
    Entry("grokking", 1, "Delayed generalisation on modular arithmetic", "Power et al. 2022; Nanda et al. 2023"),
    Entry("double-descent", 1, "Model-wise double descent", "Belkin et al. 2019; Nakkiran et al. 2019"),
    Entry("double-descent-epoch", 1, "Epoch-wise double descent", "Nakkiran et al. 2019"),
    Entry("neural-collapse", 1, "Neural collapse in the terminal phase", "Papyan, Han, Donoho 2020"),
    Entry("lottery-ticket", 1, "Winning tickets by iterative magnitude pruning", "Frankle & Carbin 2019"),
    Entry("low-rank-bias", 1, "Low-rank bias of SGD with weight decay", "Galanti & Poggio 2022 (2206.05794)"),
    Entry("probabilistic-stability", 1, "Probabilistic stability of SGD", "Ziyin, Li, Galanti, Ueda 2023 (2303.13093)"),
    Entry("effective-depth", 1, "Effective depth from layer-wise NCC", "Galanti et al. 2022 (2202.09028)"),
    Entry(
        "collapse-transfer",
        1,
        "Collapse on new classes and few-shot transfer",
        "Galanti et al. 2022/2023 (2112.15121, 2212.12532)",
    ),
    Entry("ssl-clustering", 1, "Semantic clustering in self-supervised learning", "Ben-Shaul et al. 2023 (2305.15614)"),
    Entry("sgd-fluctuation", 1, "Exact stationary fluctuations of SGD", "Liu, Ziyin, Ueda 2021"),
    Entry("edge-of-stability", 1, "Sharpness at 2/lr under full-batch GD", "Cohen et al. 2021"),
    Entry(
        "ntk-mup",
        1,
        "Lazy NTK training vs muP feature learning",
        "Jacot et al. 2018; Yang & Hu 2021; Yang et al. 2021 (2203.03466)",
    ),
    Entry("information-plane", 2, "Information-plane compression", "Shwartz-Ziv & Tishby 2017; Saxe et al. 2018"),
    Entry(
        "mode-connectivity",
        2,
        "Linear mode connectivity and permutation matching",
        "Frankle et al. 2020; Entezari et al. 2022; Ainsworth et al. 2023",
    ),
    Entry("supcon-simplex", 2, "SupCon and CE reach a simplex", "Graf et al. 2021"),
    Entry("sparse-training", 2, "Dynamic sparse training (in-time over-parameterisation)", "Liu et al. 2021"),
    Entry("representation-similarity", 2, "CKA across seeds", "Kornblith et al. 2019"),
    Entry("memorization", 2, "Fitting random labels", "Zhang et al. 2017; Arpit et al. 2017"),
    Entry("intrinsic-dimension", 2, "Intrinsic dimension of objective landscapes", "Li et al. 2018"),
    Entry("scaling-laws", 2, "Power-law scaling of test loss", "Kaplan et al. 2020; Yang et al. 2021 (muTransfer)"),
    Entry("simplicity-bias", 2, "Simplicity bias on linear+slab data", "Shah et al. 2020"),
    Entry("model-collapse", 2, "Recursive training on own samples", "Shumailov et al. 2024 (2305.17493)"),
    Entry("sharpness-sam", 2, "SAM finds flatter minima", "Foret et al. 2021"),
    Entry("multiplicative-nets", 3, "Multiplicative-gate nets on band-limited targets", "arXiv 2301.04605"),
    Entry("sparse-norm-bounds", 3, "Sparse/conv norm-based generalisation bounds", "arXiv 2301.12033"),
    Entry("conditional-fid-is", 3, "Class-conditional FID and IS", "Benny et al. 2020 (2004.12361)"),
    Entry("hypernet-ntk", 3, "NTK of hypernetworks", "arXiv 2003.12193"),
    Entry("causal-complexity", 3, "Cause-effect by autoencoder complexity", "arXiv 2002.10007"),
    Entry("discrete-attributes", 3, "Recovering hidden binary attributes", "arXiv 2103.11888"),
    Entry("hyper-singan", 3, "Hypernetwork single-image GANs", "arXiv 2110.02900"),
    Entry("contrastive-inversion", 3, "Contrastive learning inverts the generator", "Zimmermann et al. 2021"),
    Entry("resnet-depth-scaling", 3, "Scaling of ResNet weights with depth", "Cohen, Cont, Rossier, Xu 2021"),
    Entry(
        "ntk-universality",
        3,
        "NTK universality across architectures",
        "Yang & Littwin 2021 (Tensor Programs IIb, 2105.03703)",
    ),
    Entry("feature-merging", 3, "Merging functionally equivalent neurons", "2023"),
)

CATALOG: tuple[Entry, ...] = tuple(dataclasses.replace(e, reproduced=e.id not in NOT_REPRODUCED) for e in _ROWS)

_BY_ID = {e.id: e for e in CATALOG}


def add(e: Entry) -> None:
    """Register a row at run time, e.g. a phenomenon module of your own package (``module="mypkg.myid"``)."""
    if e.id in _BY_ID and _BY_ID[e.id] != e:
        raise UnknownPhenomenon(f"catalogue id {e.id!r} is taken")
    _BY_ID[e.id] = e


def remove(pid: str) -> None:
    """Forget a row added with :func:`add` (rows of the shipped catalogue stay)."""
    if pid not in {e.id for e in CATALOG}:
        _BY_ID.pop(pid, None)


def known(pid: str) -> bool:
    """Whether ``pid`` is a catalogue id (shipped or added), implemented or not."""
    return pid in _BY_ID


def entry(pid: str) -> Entry:
    if pid not in _BY_ID:
        close = difflib.get_close_matches(pid, list(_BY_ID), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else " (see `phenomlab list`)"
        raise UnknownPhenomenon(f"unknown phenomenon {pid!r}{hint}")
    return _BY_ID[pid]


def get(pid: str) -> ModuleType:
    """The implementation module of ``pid``; raises :class:`UnknownPhenomenon` for unknown or
    not-yet-implemented ids."""
    e = entry(pid)
    if not e.implemented:
        raise UnknownPhenomenon(f"phenomenon {pid!r} is in the catalogue but not implemented yet")
    from .contract import check_module

    return check_module(importlib.import_module(e.module_name), pid)


def make_config(pid: str, preset: str = "quick", overrides: Mapping[str, Any] | None = None) -> PhenomenonConfig:
    """The validated config of ``pid`` for ``preset`` with ``overrides`` (strings parsed by field type)."""
    mod = get(pid)
    return build_config(mod.Config, mod.PRESETS, preset, overrides)


def implemented() -> list[str]:
    """Ids of the shipped catalogue that have an implementation (rows added with :func:`add` are not listed)."""
    return [e.id for e in CATALOG if e.implemented]
