"""Dependencies run one way (design brief): errors, seeding, _version <- data, models, probes, store, report
<- train <- phenomena <- sweep <- cli. Every module under src/phenomlab is parsed (imports inside functions
included); an import of a higher layer, or of the package root, fails the test."""

import ast
import shutil
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "phenomlab"

LAYERS = {
    "errors": 0,
    "seeding": 0,
    "_version": 0,
    "data": 1,
    "models": 1,
    "probes": 1,
    "store": 1,
    "report": 1,
    "train": 2,
    "phenomena": 3,
    "sweep": 4,
    "cli": 5,
    "__main__": 6,  # `python -m phenomlab`: the entry point above the CLI
}


def _module_name(path: Path) -> list[str]:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imports(path: Path) -> list[tuple[int, list[str], list[str]]]:
    """(line, imported module as parts, names imported from it) for every phenomlab import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    me = _module_name(path)
    package = me if _is_package(path) else me[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "phenomlab":
                    out.append((node.lineno, a.name.split("."), []))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = base + (node.module.split(".") if node.module else [])
            else:
                target = (node.module or "").split(".")
            if target and target[0] == "phenomlab":
                out.append((node.lineno, target, [a.name for a in node.names]))
    return out


def _is_submodule(parts: list[str]) -> bool:
    p = SRC.parent.joinpath(*parts)
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def violations() -> list[str]:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        me = _module_name(path)
        if me == ["phenomlab"]:
            continue  # the package root may import anything
        mine = LAYERS.get(me[1])
        if mine is None:
            bad.append(f"{path.relative_to(SRC)}: top-level module {me[1]!r} has no layer in LAYERS")
            continue
        for line, target, names in imports(path):
            where = f"{path.relative_to(SRC)}:{line}"
            if len(target) == 1:
                # `import phenomlab` / `from phenomlab import x` reach the package root unless x is a module
                roots = [n for n in names if not _is_submodule(["phenomlab", n])] or (
                    ["phenomlab"] if not names else []
                )
                if roots:
                    bad.append(f"{where} imports the package root ({', '.join(roots)})")
                targets = [["phenomlab", n] for n in names if _is_submodule(["phenomlab", n])]
            else:
                targets = [target]
            for t in targets:
                theirs = LAYERS.get(t[1])
                if theirs is None:
                    bad.append(f"{where} imports {'.'.join(t)}, which has no layer")
                elif theirs > mine and t[1] != me[1]:
                    bad.append(f"{where}: {me[1]} (layer {mine}) imports {'.'.join(t)} (layer {theirs})")
    return bad


def test_imports_follow_the_layers():
    assert violations() == []


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from ..sweep.compare import aggregate\n", "report (layer 1) imports phenomlab.sweep.compare (layer 4)"),
        ("def f():\n    from ..phenomena import registry\n", "imports phenomlab.phenomena (layer 3)"),
        ("import phenomlab\n", "imports the package root"),
        ("from phenomlab import run\n", "imports the package root (run)"),
        ("from .. import sweep\n", "imports phenomlab.sweep (layer 4)"),
    ],
)
def test_the_check_catches_upward_imports(tmp_path, monkeypatch, source, expected):
    # a module planted in a copy of the tree: the check must report it
    root = tmp_path / "src" / "phenomlab"
    shutil.copytree(SRC, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "report" / "planted.py").write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "SRC", root)
    found = violations()
    assert any(expected in v and "planted.py" in v for v in found), found
