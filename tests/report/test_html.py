import re
import shutil
import subprocess

import numpy as np
import pytest

import phenomlab
from phenomlab.errors import PhenomlabError
from phenomlab.phenomena import grokking
from phenomlab.report.html import render
from phenomlab.store.sqlite import RunStore

_FIELDS = set(grokking.Config.field_names())
STEPS = "steps" if "steps" in _FIELDS else "max_steps"
WD = "weight_decay" if "weight_decay" in _FIELDS else "wd"
TINY = {"p": "11", "embed_dim": "8", "width": "16", STEPS: "60", "eval_every": "20"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    phenomlab.sweep("grokking", {WD: ["0.5", "1"]}, "0-1", store=root, base=TINY)
    return RunStore(root)


def test_pages_are_self_contained(store, tmp_path):
    rid = store.list_runs()[0]["run_id"]
    page = render(store, tmp_path, rid[:8])
    text = page.read_text()
    assert "data:image/png;base64," in text and "<table class='verdict'>" in text
    assert "T_gen/T_fit" in text and "torch" in text and "duration" in text
    assert not re.search(r"src=['\"](?!data:)", text)  # no external resources
    sid = store.list_sweeps()[0]["sweep_id"]
    sweep_page = render(store, tmp_path, sid).read_text()
    assert "pass rate" in sweep_page and sweep_page.count("runs/") >= 4
    # each deciding number against the swept value, and every seed's figures (the first of each config open)
    assert f"Deciding numbers against {WD}" in sweep_page and "alt='train_acc_reached'" in sweep_page
    assert sweep_page.count("<details") == 4 and sweep_page.count("<details open>") == 2
    assert "<div class='scroll'>" in sweep_page
    index = render(store, tmp_path, everything=True)
    assert index.name == "index.html" and "Sweeps" in index.read_text()
    with pytest.raises(PhenomlabError):
        render(store, tmp_path, "zzzz")
    with pytest.raises(PhenomlabError):
        render(store, tmp_path)


def test_catalogue_page_shows_each_phenomenons_latest_verdict(store, tmp_path):
    from phenomlab.phenomena.registry import CATALOG

    page = render(store, tmp_path, catalogue=CATALOG)
    text = page.read_text()
    assert page.name == "catalogue.html" and "<h2 id='grokking'>" in text
    latest = max(store.list_runs(phenomenon="grokking", status="finished"), key=lambda r: r["created"])
    assert latest["run_id"] in text and "T_gen/T_fit" in text and "data:image/png;base64," in text
    assert "<td><a href='#grokking'>grokking</a></td><td>reproduced</td>" in text  # the catalogue's status
    assert "no finished run stored for:" in text and "neural-collapse" in text


def _chromium(args, tmp_path, timeout=120):
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_report_renders_figures_and_verdict_in_chromium(store, tmp_path):
    from matplotlib.image import imread

    rid = store.list_runs()[0]["run_id"]
    page = render(store, tmp_path / "report", rid)
    dom = _chromium(["--virtual-time-budget=5000", "--dump-dom", page.as_uri()], tmp_path).stdout
    # the page's own script marks the body once every embedded figure decoded with a real size
    m = re.search(r"data-images-ok=\"(\w+)\"", dom)
    assert m and m.group(1).isdigit() and int(m.group(1)) >= 1, dom[:500]
    assert 'class="verdict"' in dom and "T_gen/T_fit" in dom

    shot = tmp_path / "shot.png"
    _chromium(["--window-size=1200,1400", f"--screenshot={shot}", page.as_uri()], tmp_path)
    img = (imread(shot)[..., :3] * 255).round().astype(int)

    # matplotlib's C0 blue and C1 orange lines (the figure) and the verdict cells' green/red backgrounds
    def count(rgb, tol=12):
        return int((np.abs(img - np.array(rgb)).max(-1) <= tol).sum())

    assert count((31, 119, 180)) > 200, "no figure lines on the screenshot"
    assert count((255, 127, 14)) > 200, "no figure lines on the screenshot"
    assert count((217, 242, 217)) + count((248, 215, 215)) > 500, "no verdict table cells on the screenshot"


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_sweep_and_catalogue_pages_render_in_chromium(store, tmp_path):
    from phenomlab.phenomena.registry import CATALOG

    sid = store.list_sweeps()[0]["sweep_id"]
    for page in (render(store, tmp_path / "r", sid), render(store, tmp_path / "r", catalogue=CATALOG)):
        dom = _chromium(["--virtual-time-budget=5000", "--dump-dom", page.as_uri()], tmp_path).stdout
        m = re.search(r"data-images-ok=\"(\w+)\"", dom)
        assert m and m.group(1).isdigit() and int(m.group(1)) >= 1, dom[:500]


def _png(path):
    from matplotlib.image import imsave

    imsave(path, np.zeros((4, 4, 3)))
    return path


def test_only_files_inside_the_run_folder_are_embedded(tmp_path, monkeypatch):
    """Figure paths in the database that leave the run's folder are skipped with a note and never read."""
    import pathlib

    s = RunStore(tmp_path / "store")
    rid = "a" * 16
    s.start_run(rid, "grokking", {"p": 11}, 0)
    folder = s.run_dir(rid)
    s.add_artifact(rid, "good", _png(folder / "good.png"))
    secret = tmp_path / "secret.png"  # a real PNG outside the store: still not embedded
    _png(secret)
    (folder / "link.png").symlink_to(secret)
    s.add_artifact(rid, "passwd", "/etc/passwd")
    s.add_artifact(rid, "outside", secret)
    s.add_artifact(rid, "link", folder / "link.png")
    with s.transaction() as con:  # a crafted relative path, as someone editing the database could write
        con.execute("INSERT INTO artifacts (run_id, name, path) VALUES (?, 'dots', '../../../secret.png')", (rid,))
    (folder / "notes.txt").write_text("not a figure")
    s.add_artifact(rid, "text", folder / "notes.txt")
    s.finish_run(rid, True, {"passed": True, "summary": "ok", "checks": []}, {}, 1.0)

    read = []
    real = pathlib.Path.read_bytes

    def spy(self):
        read.append(str(self))
        return real(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", spy)
    text = render(s, tmp_path / "report", rid).read_text()
    assert text.count("data:image/png;base64,") == 1  # only good.png
    for name in ("passwd", "outside", "link", "dots"):
        assert f"figure {name} skipped" in text, name
    assert "notes.txt skipped: not a PNG" in text
    assert "/etc/passwd" not in read and str(secret) not in read
    assert not any(p.endswith("secret.png") for p in read)
