import csv
import dataclasses
import errno
import io
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

import phenomlab
from phenomlab.cli import app
from phenomlab.errors import ConfigError
from phenomlab.phenomena import grokking
from phenomlab.store.sqlite import RunStore

runner = CliRunner()

# config key names before and after the catalogue-wide rename (max_steps -> steps, wd -> weight_decay)
_FIELDS = set(grokking.Config.field_names())
STEPS = "steps" if "steps" in _FIELDS else "max_steps"
WD = "weight_decay" if "weight_decay" in _FIELDS else "wd"
CONTROL_WD = "control_weight_decay" if "control_weight_decay" in _FIELDS else "control_wd"

SMALL_NO_LR = ["--set", "p=47", "--set", "embed_dim=32", "--set", "width=128", "--quiet"]
SMALL = [*SMALL_NO_LR, "--set", "lr=0.01"]
# seconds per run: the verdict is "not reproduced" (too few steps), which is all these tests need
TINY = {"p": "11", STEPS: "60", "eval_every": "20", "embed_dim": "8", "width": "16"}
TINY_ARGS = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")] + ["--quiet"]


def error_lines(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.startswith("error:")]


def assert_one_line_error(r, code: int = 2) -> str:
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output, r.output
    lines = error_lines(r.output)
    assert len(lines) == 1, r.output
    return lines[0]


def test_list():
    r = runner.invoke(app, ["list", "--format", "csv"])
    assert r.exit_code == 0
    status = {row["id"]: row["status"] for row in csv.DictReader(io.StringIO(r.output))}
    assert status["grokking"] == "reproduced" and status["feature-merging"] == "not reproduced", status
    r = runner.invoke(app, ["list", "--config", "grokking"])
    assert r.exit_code == 0 and "train_fraction" in r.output


@pytest.mark.parametrize(
    "args, msg",
    [
        (["run", "nope"], "unknown phenomenon"),
        (["run", "grokking", "--set", f"{WD}=-1"], f"{WD} must be >= 0"),
        (["run", "grokking", "--set", "wdd=1"], "unknown config key"),
        (["run", "grokking", "--set", "train_fraction=1.5"], "train_fraction must be < 1.0"),
        (["run", "grokking", "--set", "novalue"], "key=value"),
        (["run", "grokking", "--preset", "huge"], "unknown preset"),
        (["run", "grokking", "--device", "tpu9"], "device"),
        (["run", "grokking", "--seed", "-1"], "seed must be a non-negative integer"),
        (["run", "grokking", "--set", "p=31", "--set", "p=abc"], "'p' twice"),
        (["run", "grokking", "--set", "p=31", "--set", "p=31"], "'p' twice"),
        (["run", "grokking", "--seed", "1", "--seeds", "0-2"], "--seed or --seeds"),
        (["run", "grokking", "--seeds", "2-0"], "seed"),
        (["run", "grokking", "--seeds", "0-1", "--log", "tensorboard"], "--log streams one run"),
        (["run", "grokking", "--workers", "2"], "--workers goes with --seeds"),
        (["show", "0000"], "no run"),
        (["runs", "--status", "bogus"], "choose one of running, finished, failed, interrupted"),
        (["run", "grokking", "--seeds", "0-1500"], "`phenomlab sweep grokking --seeds 0-1500 --yes` runs more"),
        (["sweep", "grokking", "--grid", "p=11,,13"], "has an empty value"),
        (["sweep", "grokking", "--grid", "p=11,13", "--set", "p=17"], "p given both as a fixed override"),
        (["run", "grokking", "--set", "p=1e30"], "p expects"),
        # click's usage errors, which came as a usage block and a framed message
        (["run", "grokking", "--bogus"], "No such option: --bogus"),
        (["runz"], "No such command 'runz'. Did you mean 'run', 'runs'?"),
        (["run"], "Missing argument 'ID'. (see '"),
        (["run", "grokking", "--seed", "x"], "Invalid value for '--seed'"),
        (["store", "check", "--bogus"], " store check --help')"),
        (["--bogus"], "No such option: --bogus (see '"),
        # found by a new-user audit (2026-12-05): each was a traceback, a hidden option suggested, or 24 GB of RAM
        (["run", "grokking", "--seeds", "0-99999999999999999999"], "seed must be at most 2**63 - 1"),
        (["run", "grokking", "--seed", "99999999999999999999"], "seed must be at most 2**63 - 1"),
        (["run", "grokking", "--seeds", "1,,2"], "--seeds has an empty value"),
        (["run", "grokking", "--device", "meta"], "device 'meta' is not supported"),
        (["report", "--outdir", "x"], "(Possible options: --report-dir)"),
        (["run", "grokking", "--log-dir", "tb"], "--log-dir is the folder of --log"),
        (["sweep", "grokking", "--address", "auto"], "--address names a Ray cluster"),
        (["show", ""], "the run id is empty"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, msg):
    RunStore(tmp_path)
    r = runner.invoke(app, [*args, "--store", str(tmp_path)])
    assert r.exit_code == 2, r.output
    assert msg in r.output
    assert "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    assert RunStore(tmp_path).list_runs() == []  # bad input stores nothing


def test_duplicate_key_through_its_old_name_is_refused(tmp_path, monkeypatch):
    from phenomlab.phenomena import config

    monkeypatch.setitem(config.DEPRECATED_KEYS, "old_p", "p")
    r = runner.invoke(app, ["run", "grokking", "--set", "p=11", "--set", "old_p=13", "--store", str(tmp_path)])
    assert "'p' twice" in assert_one_line_error(r)


def test_deprecated_config_key_is_one_warning_line(tmp_path, monkeypatch):
    from phenomlab.phenomena import config

    monkeypatch.setitem(config.DEPRECATED_KEYS, "old_p", "p")
    args = ["run", "grokking", "--set", "old_p=11", *TINY_ARGS[2:], "--store", str(tmp_path)]
    r = runner.invoke(app, args)
    assert r.exit_code in (0, 1), r.output
    warn = [ln for ln in r.output.splitlines() if ln.startswith("warning")]
    assert warn == ["warning: config key 'old_p' is deprecated; use 'p'"], r.output
    assert "FutureWarning" not in r.output and "warnings.warn" not in r.output
    assert RunStore(tmp_path).list_runs()[0]["config"]["p"] == 11


@pytest.mark.parametrize(
    "command",
    [[], ["list"], ["run"], ["runs"], ["show"], ["sweep"], ["compare"], ["report"], ["store"], ["store", "check"]]
    + [["store", "rebuild"]],
)
def test_help_names_the_store_and_phenomlab_home(command):
    r = runner.invoke(app, [*command, "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "$PHENOMLAB_HOME" in r.output
    assert not re.search(r"--out\b", r.output)  # the old name still works but is not advertised
    if command and command[0] in ("run", "runs", "show", "sweep", "compare", "report"):
        assert "--store" in r.output
    if command == ["report"]:
        assert "--report-dir" in r.output


def test_version_prints_package_and_torch_versions():
    import torch

    from phenomlab import __version__

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0, r.output
    assert r.output.strip().startswith(f"phenomlab {__version__} (torch {torch.__version__}, Python ")


def test_out_is_a_hidden_alias_of_store(tmp_path):
    r = runner.invoke(app, ["run", "grokking", *TINY_ARGS, "--out", str(tmp_path)])
    assert r.exit_code in (0, 1), r.output
    assert len(RunStore(tmp_path).list_runs()) == 1
    r = runner.invoke(app, ["runs", "--out", str(tmp_path)])
    assert r.exit_code == 0 and RunStore(tmp_path).list_runs()[0]["run_id"] in r.output
    r = runner.invoke(app, ["runs", "--out", str(tmp_path), "--store", str(tmp_path / "other")])
    assert "not both" in assert_one_line_error(r)


def test_unwritable_out_dir(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    r = runner.invoke(app, ["run", "grokking", "--store", str(f / "sub")])
    assert "not writable" in assert_one_line_error(r)


def test_read_commands_never_create_a_store(tmp_path):
    missing = tmp_path / "nothing-here"
    empty = tmp_path / "empty"
    empty.mkdir()
    for where in (missing, empty):
        for args in (["runs"], ["show", "abc"], ["compare", "abc"], ["report", "abc"], ["store", "check"]):
            r = runner.invoke(app, [*args, "--store", str(where)])
            assert r.exit_code == 2, r.output
            assert "Traceback" not in r.output
            assert "no run store" in r.output or "missing" in r.output, r.output
    assert not missing.exists()
    assert list(empty.iterdir()) == []


def test_run_passes_then_reads_store_then_show(tmp_path):
    r = runner.invoke(app, ["run", "grokking", *SMALL, "--store", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "PASSED" in r.output and "T_fit=" in r.output and "control test acc" in r.output
    assert "running grokking (preset quick, seed 0) as run" in r.output  # announced by the lifecycle
    t0 = time.perf_counter()
    r2 = runner.invoke(app, ["run", "grokking", *SMALL, "--store", str(tmp_path)])
    assert r2.exit_code == 0 and "read from the store" in r2.output and "running grokking" not in r2.output
    assert time.perf_counter() - t0 < 5
    rid = RunStore(tmp_path).list_runs()[0]["run_id"]
    # a trained run's exact numbers depend on the CPU thread count: the run records it
    assert RunStore(tmp_path).get(rid)["versions"]["torch_threads"] == str(torch.get_num_threads())
    s = runner.invoke(app, ["show", rid[:6], "--store", str(tmp_path)])
    assert s.exit_code == 0 and "PASSED" in s.output and "accuracy.png" in s.output and "main/test_acc" in s.output
    lr = runner.invoke(app, ["runs", "--store", str(tmp_path)])
    assert lr.exit_code == 0 and rid in lr.output


def test_failing_verdict_exits_1(tmp_path):
    # too few steps to generalise: the verdict is honest and the exit code says so
    r = runner.invoke(app, ["run", "grokking", *SMALL, "--set", f"{STEPS}=100", "--store", str(tmp_path)])
    assert r.exit_code == 1, r.output
    assert "NOT REPRODUCED" in r.output


def test_run_of_a_row_marked_not_reproduced_says_so(tmp_path, monkeypatch):
    from phenomlab.phenomena import registry

    args = ["run", "grokking", *TINY_ARGS, "--store", str(tmp_path)]
    assert "not reproduced at quick scale" not in runner.invoke(app, args).output
    row = dataclasses.replace(registry.entry("grokking"), reproduced=False)
    monkeypatch.setitem(registry._BY_ID, "grokking", row)
    r = runner.invoke(app, args)
    assert r.exit_code == 1 and "note: the catalogue marks grokking not reproduced at quick scale" in r.output
    assert "not reproduced at quick scale" not in runner.invoke(app, [*args, "--preset", "smoke"]).output


def test_diverging_run_is_stored_failed(tmp_path):
    args = ["--set", "lr=1e30", "--set", f"{WD}=0", "--set", f"{STEPS}=50"]
    r = runner.invoke(app, ["run", "grokking", *SMALL_NO_LR, *args, "--store", str(tmp_path)])
    assert r.exit_code == 1, r.output
    assert "diverged at step" in r.output
    assert RunStore(tmp_path).list_runs()[0]["status"] == "failed"


def test_plot_bug_keeps_the_data_and_show_replot_finishes_the_run(tmp_path, monkeypatch):
    def broken_plot(result, out_dir):
        raise ValueError("a bug in plot")

    monkeypatch.setattr(grokking, "plot", broken_plot)
    r = runner.invoke(app, ["run", "grokking", *TINY_ARGS, "--store", str(tmp_path)])
    assert r.exit_code != 0
    row = RunStore(tmp_path).list_runs()[0]
    rid = row["run_id"]
    assert row["status"] == "failed" and "a bug in plot" in row["error"]
    assert row["result"]["test_acc"]  # the measured data is stored
    assert RunStore(tmp_path).metrics(rid)  # and so are its metrics
    s = runner.invoke(app, ["show", rid, "--store", str(tmp_path)])
    assert s.exit_code == 1 and "--replot" in s.output and "a bug in plot" in s.output

    monkeypatch.undo()  # the fix
    t0 = time.perf_counter()
    s = runner.invoke(app, ["show", rid[:8], "--replot", "--store", str(tmp_path)])
    assert s.exit_code in (0, 1), s.output
    assert "judged and plotted again" in s.output and "accuracy.png" in s.output and "status finished" in s.output
    assert time.perf_counter() - t0 < 10  # no training
    row = RunStore(tmp_path).get(rid)
    assert row["status"] == "finished" and row["verdict"]["checks"] and row["error"] is None
    assert s.exit_code == (0 if row["passed"] else 1)
    figs = RunStore(tmp_path).artifacts(rid)
    assert figs and all(os.path.exists(p) for p in figs.values())
    assert row["attempts"] == 1  # judged again, not trained again


def test_corrupt_checkpoint_error_suggests_force(tmp_path, monkeypatch):
    real_run = grokking.run

    def damaged(cfg, ctx):
        ctx.checkpoint_path("main").write_bytes(b"not a checkpoint")  # as if truncated on disk
        return real_run(cfg, ctx)

    monkeypatch.setattr(grokking, "run", damaged)
    r = runner.invoke(app, ["run", "grokking", *TINY_ARGS, "--store", str(tmp_path)])
    line = assert_one_line_error(r)
    assert "main.ckpt" in line and "--force" in line
    assert RunStore(tmp_path).list_runs()[0]["status"] == "failed"


def test_out_of_memory_is_one_line_and_the_run_is_failed(tmp_path, monkeypatch):
    def huge(cfg, ctx):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: "
            "you tried to allocate 4000000000000 bytes."
        )

    monkeypatch.setattr(grokking, "run", huge)
    r = runner.invoke(app, ["run", "grokking", *TINY_ARGS, "--store", str(tmp_path)])
    line = assert_one_line_error(r)
    assert "needs more memory than this machine has" in line and "4000000000000 bytes" in line
    row = RunStore(tmp_path).list_runs()[0]
    assert row["status"] == "failed" and "more memory" in row["error"]


def test_huge_width_with_a_memory_limit_is_one_line(tmp_path):
    """A real allocation failure: width=1e9 in a process limited to 16 GB of address space."""
    import resource

    limit = 16 * 2**30

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    exe = os.path.join(os.path.dirname(sys.executable), "phenomlab")
    tiny = {**TINY, "width": "1000000000"}
    args = [exe, "run", "grokking", *[a for k, v in tiny.items() for a in ("--set", f"{k}={v}")], "--quiet"]
    args += ["--store", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(args, capture_output=True, text=True, timeout=120, preexec_fn=cap, env=env)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    lines = error_lines(p.stderr)
    assert len(lines) == 1 and "needs more memory than this machine has" in lines[0], p.stderr
    assert RunStore(tmp_path).list_runs()[0]["status"] == "failed"


def test_python_api_refuses_bad_seeds(tmp_path):
    for seed in ("x", 1.5, -1, True, None):
        with pytest.raises(ConfigError, match="seed must be a non-negative integer"):
            phenomlab.run("grokking", seed=seed, store=tmp_path, **TINY)
    assert not (tmp_path / "store.sqlite").exists()


def test_python_api_names_the_run_store_store_and_still_takes_out(tmp_path):
    first = phenomlab.run("grokking", seed=0, store=tmp_path, **TINY)
    with pytest.warns(FutureWarning, match="out= is deprecated; use store="):
        again = phenomlab.run("grokking", seed=0, out=tmp_path, **TINY)
    assert again.run_id == first.run_id and len(RunStore(tmp_path).list_runs()) == 1
    with pytest.warns(FutureWarning, match="use store="):
        swept = phenomlab.sweep("grokking", None, "0", out=tmp_path, base=TINY)
    assert [t.run_id for t in swept.trials] == [first.run_id]
    with pytest.raises(phenomlab.errors.PhenomlabError, match="store= only"):
        phenomlab.run("grokking", seed=0, store=tmp_path, out=tmp_path / "other", **TINY)


def test_force_keeps_the_run_in_its_sweeps(tmp_path):
    r = runner.invoke(app, ["run", "grokking", *TINY_ARGS, "--store", str(tmp_path)])
    assert r.exit_code in (0, 1)
    store = RunStore(tmp_path)
    rid = store.list_runs()[0]["run_id"]
    store.add_sweep("s0123456789abcde", "grokking", {"grid": {}}, [rid])
    r = runner.invoke(app, ["run", "grokking", *TINY_ARGS, "--force", "--store", str(tmp_path)])
    assert r.exit_code in (0, 1) and "read from the store" not in r.output
    row = store.get(rid)
    assert row["status"] == "finished" and row["attempts"] == 2
    assert store.sweep("s0123456789abcde")["run_ids"] == [rid]
    c = runner.invoke(app, ["compare", "--sweep", "s0123", "--store", str(tmp_path)])
    assert c.exit_code == 0 and "pass rate" in c.output


def test_ambiguous_prefixes_list_the_candidates(tmp_path):
    store = RunStore(tmp_path)
    for rid in ("abc1000000000000", "abc2000000000000"):
        store.start_run(rid, "grokking", {"p": 11}, 0)
    store.add_sweep("s1110000000000000", "grokking", {}, ["abc1000000000000"])
    store.add_sweep("s1120000000000000", "grokking", {}, ["abc2000000000000"])
    for args in (["show", "abc"], ["compare", "abc"], ["report", "abc"]):
        line = assert_one_line_error(runner.invoke(app, [*args, "--store", str(tmp_path)]))
        assert "ambiguous" in line and "abc1000000000000" in line and "abc2000000000000" in line
    for args in (["compare", "--sweep", "s11"], ["report", "s11"]):
        line = assert_one_line_error(runner.invoke(app, [*args, "--store", str(tmp_path)]))
        assert "ambiguous" in line and "s1110000000000000" in line and "s1120000000000000" in line
    # % and _ are not wildcards
    for ref in ("%", "abc_", "a%"):
        assert "no run" in assert_one_line_error(runner.invoke(app, ["show", ref, "--store", str(tmp_path)]))


def test_compare_and_export_take_every_run_of_a_phenomenon(tmp_path):
    store = RunStore(tmp_path)
    for rid, seed, passed in (("a100000000000000", 0, True), ("a200000000000000", 1, False)):
        store.start_run(rid, "grokking", {"p": 11}, seed)
        verdict = {"checks": [{"name": "t_gen", "value": 10.0 + seed}]}
        store.finish_run(rid, passed, verdict, {"x": 1.0}, 1.0)
    store.start_run("a300000000000000", "grokking", {"p": 11}, 2)
    store.fail_run("a300000000000000", "boom")
    store.start_run("b100000000000000", "lottery-ticket", {"k": 1}, 0)
    where = ["--store", str(tmp_path)]
    groups = json.loads(runner.invoke(app, ["compare", "--phenomenon", "grokking", *where, "--format", "json"]).output)
    assert len(groups) == 1 and groups[0]["seeds"] == [0, 1, 2] and groups[0]["pass_rate"] == 0.5
    assert groups[0]["metrics"]["t_gen"]["values"] == [10.0, 11.0]  # in seed order, as the seeds
    table = runner.invoke(app, ["compare", "--phenomenon", "grokking", *where], env={"COLUMNS": "80"})
    assert (
        table.exit_code == 0
        and "grokking  (all runs)  seeds [0, 1, 2]  pass rate 50% of 2 finished, 1 run(s)" in table.output
    )
    # a phenomenon id where a run id belongs points to --phenomenon
    line = assert_one_line_error(runner.invoke(app, ["compare", "grokking", *where]))
    assert "phenomenon, not a run id" in line and "--phenomenon grokking" in line
    # a typo is named as one, by compare, export and runs alike
    for args in (
        ["compare", "--phenomenon", "grokkin"],
        ["export", "--phenomenon", "grokkin"],
        ["runs", "--phenomenon", "grokkin"],
    ):
        assert "did you mean 'grokking'" in assert_one_line_error(runner.invoke(app, [*args, *where]))
    # a catalogue id without runs: an empty listing, but nothing to compare
    assert runner.invoke(app, ["runs", "--phenomenon", "grokking-x", *where]).exit_code == 2
    assert runner.invoke(app, ["runs", "--phenomenon", "memorization", *where]).exit_code == 0
    assert "no runs of 'memorization'" in assert_one_line_error(
        runner.invoke(app, ["compare", "--phenomenon", "memorization", *where])
    )
    # the selectors are exclusive
    line = assert_one_line_error(runner.invoke(app, ["compare", "a1", "--phenomenon", "grokking", *where]))
    assert "not several" in line


def test_report_takes_every_run_of_a_phenomenon(tmp_path):
    store = RunStore(tmp_path / "store")
    for rid, seed in (("a100000000000000", 0), ("a200000000000000", 1)):
        store.start_run(rid, "grokking", {"p": 11}, seed)
        verdict = {"passed": seed == 0, "summary": "ok", "checks": []}
        store.finish_run(rid, seed == 0, verdict, {"x": 1.0}, 1.0)
    store.start_run("b100000000000000", "lottery-ticket", {"k": 1}, 0)
    out = tmp_path / "report"
    where = ["--store", str(tmp_path / "store"), "--report-dir", str(out)]
    r = runner.invoke(app, ["report", "--phenomenon", "grokking", *where])
    assert r.exit_code == 0, r.output
    page = (out / "grokking.html").read_text()
    assert "a100000000000000" in page and "a200000000000000" in page and "b100000000000000" not in page
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["a100000000000000.html", "a200000000000000.html"]
    # a phenomenon id where a run id belongs points to --phenomenon; a typo and an empty phenomenon write nothing
    empty = ["--store", str(tmp_path / "store"), "--report-dir", str(tmp_path / "none")]
    line = assert_one_line_error(runner.invoke(app, ["report", "grokking", *empty]))
    assert "not a run or sweep id" in line and "--phenomenon grokking" in line
    assert "did you mean 'grokking'" in assert_one_line_error(
        runner.invoke(app, ["report", "--phenomenon", "grokkin", *empty])
    )
    assert "no runs of 'memorization'" in assert_one_line_error(
        runner.invoke(app, ["report", "--phenomenon", "memorization", *empty])
    )
    assert "not several" in assert_one_line_error(runner.invoke(app, ["report", "--all", "--phenomenon", "x", *empty]))
    assert not (tmp_path / "none").exists()


def test_report_of_an_unknown_or_ambiguous_id_writes_nothing(tmp_path):
    store = RunStore(tmp_path / "store")
    for rid in ("abc1000000000000", "abc2000000000000"):
        store.start_run(rid, "grokking", {"p": 11}, 0)
    report_dir = tmp_path / "report"
    for ref in ("abc", "zzz", "s99"):
        args = ["report", ref, "--store", str(tmp_path / "store"), "--report-dir", str(report_dir)]
        assert_one_line_error(runner.invoke(app, args))
    assert not report_dir.exists()


def test_compare_csv_to_an_unwritable_path(tmp_path):
    store = RunStore(tmp_path)
    store.start_run("abc1000000000000", "grokking", {"p": 11}, 0)
    store.finish_run("abc1000000000000", True, {"passed": True, "checks": []}, {"x": 1.0}, 1.0)
    for bad in (tmp_path / "no-such-dir" / "c.csv", tmp_path / "runs"):
        r = runner.invoke(app, ["compare", "abc", "--store", str(tmp_path), "--csv", str(bad)])
        assert "cannot write the CSV file" in assert_one_line_error(r)


@pytest.fixture
def make_readonly():
    """Make a folder read-only for this process: chmod for a normal user; root ignores modes, so a
    read-only bind mount is used instead (skipped where mounting is not allowed)."""
    undo = []

    def make(d):
        if os.geteuid() != 0:
            for p in [d, *[q for q in d.rglob("*") if q.is_dir()]]:
                p.chmod(0o555)
                undo.append(lambda p=p: p.chmod(0o755))
            return
        r = subprocess.run(["mount", "--bind", "-o", "ro", str(d), str(d)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot make a read-only folder as root: {r.stderr.decode().strip()}")
        undo.append(lambda: subprocess.run(["umount", str(d)], check=True))

    yield make
    for u in reversed(undo):
        u()


def test_read_only_store_dir(tmp_path, make_readonly):
    r = runner.invoke(app, ["run", "grokking", *TINY_ARGS, "--store", str(tmp_path)])
    assert r.exit_code in (0, 1)
    make_readonly(tmp_path)
    r = runner.invoke(app, ["run", "grokking", *TINY_ARGS, "--seed", "1", "--store", str(tmp_path)])
    assert "not writable" in assert_one_line_error(r)
    r = runner.invoke(app, ["runs", "--store", str(tmp_path)])  # reading still works
    assert r.exit_code == 0, r.output
    rid = RunStore(tmp_path, readonly=True).list_runs()[0]["run_id"]
    r = runner.invoke(app, ["show", rid, "--replot", "--store", str(tmp_path)])
    assert "not writable" in assert_one_line_error(r)


@pytest.mark.parametrize("where", ["record", "figure"])
def test_full_disk_while_finishing_a_run(tmp_path, monkeypatch, where):
    """The disk fills up after training: writing run.json (fsync) or a figure fails with ENOSPC."""
    import matplotlib.figure

    full = {"on": False}
    real_run, real_fsync, real_savefig = grokking.run, os.fsync, matplotlib.figure.Figure.savefig

    def run_then_fill(cfg, ctx):
        out = real_run(cfg, ctx)
        full["on"] = True
        return out

    def fsync(fd):
        if full["on"] and where == "record" and os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    def savefig(self, fname, *a, **k):
        if full["on"] and where == "figure":
            with open(fname, "wb") as fh:
                fh.write(b"\x89PNG half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(fname))
        return real_savefig(self, fname, *a, **k)

    monkeypatch.setattr(grokking, "run", run_then_fill)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    r = runner.invoke(app, ["run", "grokking", *TINY_ARGS, "--store", str(tmp_path)])
    assert "No space left on device" in assert_one_line_error(r)
    row = RunStore(tmp_path).list_runs()[0]
    assert row["status"] == "failed" and row["result"] is not None  # not left "running"; data kept
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob(".*.tmp"))

    full["on"] = False  # space freed
    s = runner.invoke(app, ["show", row["run_id"], "--replot", "--store", str(tmp_path)])
    assert s.exit_code in (0, 1), s.output
    assert RunStore(tmp_path).get(row["run_id"])["status"] == "finished"


def test_the_console_script_names_itself_in_usage_errors():
    exe = os.path.join(os.path.dirname(sys.executable), "phenomlab")
    p = subprocess.run([exe, "run", "grokking", "--bogus"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith("error: No such option: --bogus") and line.endswith("(see 'phenomlab run --help')")


def test_python_dash_m_runs_the_same_command_line():
    cmd = [sys.executable, "-m", "phenomlab"]
    p = subprocess.run([*cmd, "list"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "grokking" in p.stdout, p.stderr
    p = subprocess.run([*cmd, "run", "grokking", "--bogus"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith("error: No such option: --bogus") and line.endswith("(see 'python -m phenomlab run --help')")


def test_a_parse_error_without_a_context_names_the_subcommand():
    # click raises "requires an argument" without a context; the line still points at the subcommand's help
    line = assert_one_line_error(runner.invoke(app, ["run", "grokking", "--preset"]))
    assert "Option '--preset' requires an argument." in line and line.endswith(" run --help')")


def test_kill_midway_then_resume(tmp_path):
    """SIGKILL the real console script mid-run; the same command resumes from the checkpoint."""
    exe = os.path.join(os.path.dirname(sys.executable), "phenomlab")
    args = [exe, "run", "grokking", *SMALL, "--set", f"{STEPS}=800", "--set", f"{WD}=0"]
    args += ["--set", f"{CONTROL_WD}=0", "--store", str(tmp_path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PHENOMLAB_CHECKPOINT_SECONDS": "0.5"}
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 60
    ckpt = None
    while time.time() < deadline and ckpt is None:
        found = list((tmp_path / "runs").glob("*/main.ckpt")) if (tmp_path / "runs").exists() else []
        ckpt = found[0] if found else None
        time.sleep(0.2)
    assert ckpt is not None, "no checkpoint written"
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    row = RunStore(tmp_path).list_runs()[0]
    assert row["status"] == "running"  # killed: nothing had the chance to mark it
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert "resuming run" in out.stderr
    row = RunStore(tmp_path).get(row["run_id"])
    assert row["status"] == "finished" and row["attempts"] == 2
    assert out.returncode in (0, 1)


def test_report_dir_and_the_old_report_out(tmp_path):
    store = RunStore(tmp_path / "store")
    store.start_run("abc1000000000000", "grokking", {"p": 11}, 0)
    store.finish_run("abc1000000000000", True, {"passed": True, "summary": "ok", "checks": []}, {"x": 1.0}, 1.0)
    r = runner.invoke(app, ["report", "abc", "--store", str(tmp_path / "store"), "--report-dir", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "a" / "runs" / "abc1000000000000.html").exists()
    r = runner.invoke(app, ["report", "abc", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "b")])
    assert r.exit_code == 0 and "warning: `report --out` is deprecated; use --report-dir" in r.output
    assert (tmp_path / "b" / "runs" / "abc1000000000000.html").exists()
    assert not (tmp_path / "store" / "runs" / "abc1000000000000.html").exists()


def test_tables_take_a_format_and_fold_at_80_columns(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    for seed in (0, 1):
        r = runner.invoke(app, ["run", "grokking", *TINY_ARGS, "--seed", str(seed), "--store", str(tmp_path)])
        assert r.exit_code in (0, 1), r.output
    table = runner.invoke(app, ["runs", "--store", str(tmp_path)])
    assert table.exit_code == 0 and "…" not in table.output
    assert max(len(line) for line in table.output.splitlines()) <= 80
    runs = json.loads(runner.invoke(app, ["runs", "--store", str(tmp_path), "--format", "json"]).output)
    assert sorted(r["seed"] for r in runs) == [0, 1] and {r["status"] for r in runs} == {"finished"}
    as_csv = runner.invoke(app, ["runs", "--store", str(tmp_path), "--format", "csv"]).output
    rows = list(csv.DictReader(io.StringIO(as_csv)))
    assert {r["phenomenon"] for r in rows} == {"grokking"}
    ids = [r["run_id"] for r in runs]
    shown = json.loads(runner.invoke(app, ["show", ids[0], "--store", str(tmp_path), "--format", "json"]).output)
    assert shown["run_id"] == ids[0] and "checks" in shown["verdict"] and shown["metrics"]
    # two seeds: no bootstrap interval, the values instead
    cmp = runner.invoke(app, ["compare", *ids, "--store", str(tmp_path)])
    assert cmp.exit_code == 0 and "…" not in cmp.output, cmp.output
    groups = json.loads(runner.invoke(app, ["compare", *ids, "--store", str(tmp_path), "--format", "json"]).output)
    m = next(iter(groups[0]["metrics"].values()))
    assert m["n"] == 2 and m["lo"] is None and m["hi"] is None and len(m["values"]) == 2
    listing = runner.invoke(app, ["list"])
    assert "…" not in listing.output and max(len(line) for line in listing.output.splitlines()) <= 80
    assert json.loads(runner.invoke(app, ["list", "--format", "json"]).output)[0]["id"] == "grokking"
    bad = runner.invoke(app, ["runs", "--store", str(tmp_path), "--format", "xml"])
    assert_one_line_error(bad)


def test_run_several_seeds_gives_each_seeds_verdict_and_the_pass_rate(tmp_path):
    """``run --seeds`` runs the seeds in parallel processes (cores // processes torch threads each); each seed's
    stored measurements and verdict are those of ``run --seed S`` on as many threads (same run id, same data:
    float rounding depends on the thread count), and the exit code says whether every seed passed."""
    r = runner.invoke(app, ["run", "grokking", *TINY_ARGS, "--seeds", "0-1", "--store", str(tmp_path / "a")])
    assert r.exit_code == 1, r.output  # TINY is too short to grok: not reproduced on both seeds
    assert "passed on 0 of 2 seeds (0-1)" in r.output
    assert r.output.count("NOT REPRODUCED") == 2 and "seed 0" in r.output and "seed 1" in r.output
    together = {row["seed"]: row for row in RunStore(tmp_path / "a").list_runs()}
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))  # what each of the 2 worker processes had
    try:
        for seed in (0, 1):
            args = ["run", "grokking", *TINY_ARGS, "--seed", str(seed), "--store", str(tmp_path / "b")]
            r1 = runner.invoke(app, args)
            assert r1.exit_code == 1, r1.output
    finally:
        torch.set_num_threads(threads)
    alone = {row["seed"]: row for row in RunStore(tmp_path / "b").list_runs()}
    assert set(together) == set(alone) == {0, 1}
    for seed in (0, 1):
        a, b = together[seed], alone[seed]
        assert a["run_id"] == b["run_id"] and a["result"] == b["result"] and a["verdict"] == b["verdict"]
    again = runner.invoke(app, ["run", "grokking", *TINY_ARGS, "--seeds", "0-1", "--store", str(tmp_path / "a")])
    assert again.exit_code == 1 and "passed on 0 of 2 seeds" in again.output  # read back from the store
    assert [row["attempts"] for row in RunStore(tmp_path / "a").list_runs()] == [1, 1]
    args = ["run", "grokking", *TINY_ARGS, "--seeds", "1", "--force", "--store", str(tmp_path / "a")]
    forced = runner.invoke(app, args)
    assert forced.exit_code == 1 and "passed on 0 of 1 seeds (1)" in forced.output
    attempts = {row["seed"]: row["attempts"] for row in RunStore(tmp_path / "a").list_runs()}
    assert attempts == {0: 1, 1: 2}  # only the forced seed was computed again


def test_bad_input_with_log_creates_no_store_and_no_log_folder(tmp_path):
    args = ["--store", str(tmp_path / "store"), "--log", "tensorboard", "--log-dir", str(tmp_path / "tb")]
    r = runner.invoke(app, ["run", "nope", *args])
    assert r.exit_code == 2 and "unknown phenomenon" in r.output
    r = runner.invoke(app, ["run", "grokking", "--set", "wdd=1", *args])
    assert r.exit_code == 2 and "unknown config key" in r.output
    assert not (tmp_path / "store").exists() and not (tmp_path / "tb").exists()


def test_compare_json_and_csv_outputs_stay_parseable_when_also_writing_a_csv_file(tmp_path):
    assert runner.invoke(app, ["run", "grokking", *TINY_ARGS, "--store", str(tmp_path)]).exit_code == 1
    for fmt, parse in (("json", json.loads), ("csv", lambda t: list(csv.DictReader(io.StringIO(t))))):
        args = ["compare", "--phenomenon", "grokking", "--format", fmt, "--csv", str(tmp_path / "x.csv")]
        r = runner.invoke(app, [*args, "--store", str(tmp_path)])
        assert r.exit_code == 0 and parse(r.stdout), r.output
        assert "wrote" in r.stderr and "wrote" not in r.stdout


def test_store_check_of_no_store_is_bad_input(tmp_path):
    for root in (tmp_path / "missing", tmp_path):
        r = runner.invoke(app, ["store", "check", "--store", str(root)])
        assert r.exit_code == 2 and "no run store" in r.output, r.output


def test_a_failing_smoke_verdict_says_it_tests_the_pipeline_only(tmp_path):
    r = runner.invoke(app, ["run", "grokking", "--preset", "smoke", *TINY_ARGS, "--store", str(tmp_path)])
    assert r.exit_code == 1 and "the smoke preset runs seconds of training to check the pipeline" in r.output


def test_an_empty_phenomlab_home_is_unset(monkeypatch):
    from phenomlab.store.sqlite import default_root

    monkeypatch.setenv("PHENOMLAB_HOME", "")
    assert default_root() == pathlib.Path("phenomlab-runs")


def test_sigterm_midway_stores_the_run_interrupted_and_it_resumes(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "phenomlab")
    args = [exe, "run", "grokking", *SMALL, "--set", f"{STEPS}=800", "--set", f"{WD}=0"]
    args += ["--set", f"{CONTROL_WD}=0", "--store", str(tmp_path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PHENOMLAB_CHECKPOINT_SECONDS": "0.5"}
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob("runs/*/main.ckpt")):
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)  # what `kill`, Slurm and `docker stop` send
    _, stderr = p.communicate(timeout=60)
    assert p.returncode == 130 and "interrupted" in stderr, stderr
    (row,) = RunStore(tmp_path).list_runs()
    assert row["status"] == "interrupted"
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert "resuming run" in out.stderr and RunStore(tmp_path).get(row["run_id"])["status"] == "finished"


def test_compare_csv_has_the_same_columns_for_any_number_of_groups_and_keeps_failed_groups(tmp_path):
    assert runner.invoke(app, ["run", "grokking", *TINY_ARGS, "--store", str(tmp_path)]).exit_code == 1
    diverging = ["run", "grokking", *TINY_ARGS, "--set", "lr=1e30", "--store", str(tmp_path)]
    assert runner.invoke(app, diverging).exit_code == 1
    finished = [r["run_id"] for r in RunStore(tmp_path).list_runs(status="finished")]

    def rows(*args: str) -> list[dict[str, str]]:
        r = runner.invoke(app, ["compare", *args, "--format", "csv", "--store", str(tmp_path)])
        assert r.exit_code == 0, r.output
        return list(csv.DictReader(io.StringIO(r.stdout)))

    one, both = rows(finished[0]), rows("--phenomenon", "grokking")
    assert list(one[0]) == list(both[0])  # one header, whatever the number of groups
    assert "phenomenon" in one[0] and "failed" in one[0]
    failed_only = [r for r in both if r["failed"] == "1"]
    assert len(failed_only) == 1 and failed_only[0]["metric"] == "" and failed_only[0]["finished"] == "0"
