import importlib
import inspect
import pkgutil
import subprocess
import sys

import pytest

import phenomlab.probes as probes

SUBMODULES = sorted(m.name for m in pkgutil.iter_modules(probes.__path__) if not m.name.startswith("_"))


def test_every_submodule_export_is_reachable_as_the_same_object():
    assert len(SUBMODULES) >= 10
    seen: dict[str, str] = {}
    for name in [*SUBMODULES, "_threads"]:
        mod = importlib.import_module(f"phenomlab.probes.{name}")
        assert mod.__all__, name
        for export in mod.__all__:
            assert export not in seen, f"{export} exported by {seen.get(export)} and {name}"
            seen[export] = name
            assert getattr(probes, export) is getattr(mod, export), f"probes.{export} is not {name}.{export}"
    assert sorted(seen) == probes.__all__
    assert set(probes.__all__) <= set(dir(probes))


def test_no_export_is_shadowed_by_a_submodule():
    # Importing a submodule sets it as an attribute of the package: a function of the same name would be lost.
    assert not set(SUBMODULES) & set(probes.__all__)
    importlib.import_module("phenomlab.probes.activations")
    assert inspect.isfunction(probes.features)
    assert probes.features is importlib.import_module("phenomlab.probes.activations").features
    assert callable(probes.threads)


def test_submodules_and_unknown_names():
    assert probes.collapse is importlib.import_module("phenomlab.probes.collapse")
    with pytest.raises(AttributeError, match="no_such_probe"):
        probes.no_such_probe  # noqa: B018


def test_importing_the_package_imports_no_submodule():
    code = (
        "import sys, phenomlab; before = set(sys.modules); import phenomlab.probes as p; "
        "names = p.__all__; dir(p); assert len(names) > 50; "
        "new = sorted(m for m in set(sys.modules) - before if m.startswith('phenomlab.probes.')); "
        "assert not new, new; p.linear_cka; "
        "assert 'phenomlab.probes.curvature' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
