import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from phenomlab.cli import app
from phenomlab.store.sqlite import RunStore

runner = CliRunner()
SMALL = ["--set", "p=47", "--set", "embed_dim=32", "--set", "width=128", "--set", "lr=0.01", "--quiet"]


def test_list():
    r = runner.invoke(app, ["list"])
    assert r.exit_code == 0 and "grokking" in r.output and "implemented" in r.output
    r = runner.invoke(app, ["list", "--config", "grokking"])
    assert r.exit_code == 0 and "train_fraction" in r.output


@pytest.mark.parametrize(
    "args, msg",
    [
        (["run", "nope"], "unknown phenomenon"),
        (["run", "grokking", "--set", "wd=-1"], "wd must be >= 0"),
        (["run", "grokking", "--set", "wdd=1"], "unknown config key"),
        (["run", "grokking", "--set", "train_fraction=1.5"], "train_fraction must be < 1.0"),
        (["run", "grokking", "--set", "novalue"], "key=value"),
        (["run", "grokking", "--preset", "huge"], "unknown preset"),
        (["run", "grokking", "--device", "tpu9"], "device"),
        (["show", "0000"], "no run"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, msg):
    r = runner.invoke(app, [*args, "--out", str(tmp_path)])
    assert r.exit_code == 2, r.output
    assert msg in r.output
    assert "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_unwritable_out_dir(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    r = runner.invoke(app, ["run", "grokking", "--out", str(f / "sub")])
    assert r.exit_code == 2 and "not writable" in r.output


def test_run_passes_then_reads_store_then_show(tmp_path):
    r = runner.invoke(app, ["run", "grokking", *SMALL, "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "PASSED" in r.output and "T_fit=" in r.output and "control test acc" in r.output
    t0 = time.perf_counter()
    r2 = runner.invoke(app, ["run", "grokking", *SMALL, "--out", str(tmp_path)])
    assert r2.exit_code == 0 and "read from the store" in r2.output
    assert time.perf_counter() - t0 < 5
    rid = RunStore(tmp_path).list_runs()[0]["run_id"]
    s = runner.invoke(app, ["show", rid[:6], "--out", str(tmp_path)])
    assert s.exit_code == 0 and "PASSED" in s.output and "accuracy.png" in s.output and "main/test_acc" in s.output
    lr = runner.invoke(app, ["runs", "--out", str(tmp_path)])
    assert lr.exit_code == 0 and rid in lr.output


def test_failing_verdict_exits_1(tmp_path):
    # too few steps to generalise: the verdict is honest and the exit code says so
    r = runner.invoke(app, ["run", "grokking", *SMALL, "--set", "max_steps=100", "--out", str(tmp_path)])
    assert r.exit_code == 1, r.output
    assert "NOT REPRODUCED" in r.output


def test_diverging_run_is_stored_failed(tmp_path):
    r = runner.invoke(
        app,
        [
            "run",
            "grokking",
            *SMALL,
            "--set",
            "lr=1e30",
            "--set",
            "wd=0",
            "--set",
            "max_steps=50",
            "--out",
            str(tmp_path),
        ],
    )
    assert r.exit_code == 1
    assert "diverged at step" in r.output
    assert RunStore(tmp_path).list_runs()[0]["status"] == "failed"


def test_kill_midway_then_resume(tmp_path):
    """SIGKILL the real console script mid-run; the same command resumes from the checkpoint."""
    exe = os.path.join(os.path.dirname(sys.executable), "phenomlab")
    args = [
        exe,
        "run",
        "grokking",
        *SMALL,
        "--set",
        "max_steps=2000",
        "--set",
        "wd=0",
        "--set",
        "control_wd=0",
        "--out",
        str(tmp_path),
    ]
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
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert "resuming run" in out.stderr
    row = RunStore(tmp_path).get(row["run_id"])
    assert row["status"] == "finished" and row["attempts"] == 2
    assert out.returncode in (0, 1)
