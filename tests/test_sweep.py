"""Sweeps: store integrity under kill/corruption/concurrency, retries, growth, executors, aggregation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ibscope
from ibscope.store import (
    DirectoryLock,
    DirectoryLocked,
    checked_parquet_ok,
    concat_parquet_files,
    write_checked_parquet,
)
from ibscope.sweep import (
    SweepConfigMismatch,
    SweepSpec,
    common_grid,
    load_spec,
    mean_interval,
    parse_grid_args,
    run_sweep,
    task_id,
    trajectory_bands,
)

TOY = "_sweep_toy"  # tests/_sweep_toy.py, imported by dotted name
SRC = str(Path(ibscope.__file__).resolve().parents[1])
TINY_TISHBY = {"epochs": 30, "n_snapshots": 4, "hidden": [6, 4], "estimators": {"binning": {"n_bins": 30}},
               "keep_activations": False}


@pytest.fixture(autouse=True)
def _allow_toy():
    """The toy module is a user experiment module: these tests opt in to it (tests/test_security.py
    checks that nothing runs without the opt-in)."""
    from ibscope import experiments

    experiments.allow_module(TOY)
    yield
    experiments._ALLOWED.discard(TOY)


def _toy(grid=None, seeds=3, **config):
    return SweepSpec(TOY, config=config, grid=grid or {}, seeds=seeds)


def _calls(sweep_dir: Path, tid: str) -> int:
    p = sweep_dir / "tasks" / tid / "calls.txt"
    return len(p.read_text().splitlines()) if p.exists() else 0


# --------------------------------------------------------------------------- spec


def test_spec_file_format_and_grid_args(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("experiment: tishby\nprofile: test\nseeds: 3\nconfig: {epochs: 5}\n"
                 "grid:\n  activation: [tanh, relu]\n  lr: [0.001, 0.01]\n")
    spec = load_spec(f)
    assert (spec.experiment, spec.profile, spec.seeds, spec.config) == ("tishby", "test", [0, 1, 2], {"epochs": 5})
    assert spec.grid == {"activation": ["tanh", "relu"], "lr": [0.001, 0.01]}
    f.write_text("experiment: tishby\nconfg: {}\n")
    with pytest.raises(ValueError, match="confg"):
        load_spec(f)
    with pytest.raises(ValueError, match="twice"):
        SweepSpec("tishby", grid={"activation": ["tanh", "tanh"]})
    assert parse_grid_args(["activation=tanh,relu", "hidden=[10,7],[5]"]) == {
        "activation": ["tanh", "relu"], "hidden": [[10, 7], [5]]}
    with pytest.raises(ValueError, match="KEY=V1"):
        parse_grid_args(["activation"])
    assert task_id({"activation": "relu", "lr": 0.001}, 3) == "activation=relu__lr=0.001__seed=3"
    # lossy slugs get a hash: distinct points never share an id
    ids = {task_id({"a": v}, 0) for v in ["x y", "x/y", "x-y", [1, 2], "1"]} | {task_id({"a": 1}, 0)}
    assert len(ids) == 6


# --------------------------------------------------------------------------- store pieces


def test_checked_parquet_detects_damage_and_concat_unifies(tmp_path):
    p = tmp_path / "r.parquet"
    write_checked_parquet(p, pd.DataFrame({"a": [1, 2, 3]}), {"config_hash": "h1"})
    assert checked_parquet_ok(p) and checked_parquet_ok(p, expect={"config_hash": "h1"})
    assert not checked_parquet_ok(p, expect={"config_hash": "h2"})
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # partial file
    assert not checked_parquet_ok(p)
    p.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, one bit flipped
    assert not checked_parquet_ok(p)
    q = tmp_path / "q.parquet"
    q.write_bytes(data)  # no sidecar
    assert not checked_parquet_ok(q)

    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pd.DataFrame({"x": [1, 2], "y": ["u", "v"]}).to_parquet(a)
    pd.DataFrame({"x": [0.5], "z": [True]}).to_parquet(b)
    n = concat_parquet_files([(a, {"k": "A", "y": "u"}), (b, {"k": "B"})], tmp_path / "all.parquet")
    out = pd.read_parquet(tmp_path / "all.parquet")
    assert n == 3 and list(out.columns[:1]) == ["k"]
    assert out["x"].tolist() == [1.0, 2.0, 0.5] and out["k"].tolist() == ["A", "A", "B"]
    assert out["config_y"].tolist()[:2] == ["u", "u"]  # a constant that disagrees with the file's column
    assert out["y"].tolist()[:2] == ["u", "v"] and pd.isna(out["y"].iloc[2]) and pd.isna(out["z"].iloc[0])


def test_directory_lock_refuses_second_holder(tmp_path):
    with DirectoryLock(tmp_path, what="sweep"):
        with pytest.raises(DirectoryLocked, match=rf"pid {os.getpid()}"):
            DirectoryLock(tmp_path, what="sweep").acquire()
    with DirectoryLock(tmp_path, what="sweep"):  # released: free again
        pass


# --------------------------------------------------------------------------- sweep semantics (toy, in-process)


def test_corrupted_result_is_detected_and_only_that_task_rerun(tmp_path):
    d = tmp_path / "sw"
    res = run_sweep(_toy({"scale": [1.0, 2.0]}), d, workers=0, progress=False, report=False)
    assert res.ok and len(res.done) == 6 and res.ran == 6
    first = pd.read_parquet(d / "results.parquet")
    victim = res.done[2]
    f = d / "tasks" / victim / "result.parquet"
    f.write_bytes(f.read_bytes()[:100])  # a partial file, as a disk-full crash would leave it
    res2 = run_sweep(_toy({"scale": [1.0, 2.0]}), d, workers=0, progress=False, report=False)
    assert res2.ok and res2.ran == 1
    assert {tid: _calls(d, tid) for tid in res.done} == {tid: 2 if tid == victim else 1 for tid in res.done}
    again = pd.read_parquet(d / "results.parquet")
    pd.testing.assert_frame_equal(again, first)
    assert again.groupby("task_id").size().eq(3).all() and again["task_id"].nunique() == 6


def test_config_change_refused_grow_keeps_finished_force_reruns(tmp_path):
    d = tmp_path / "sw"
    run_sweep(_toy({"scale": [1.0]}, seeds=2), d, workers=0, progress=False, report=False)
    with pytest.raises(SweepConfigMismatch, match="fail: False -> True"):
        run_sweep(_toy({"scale": [1.0]}, seeds=2, fail=True), d, workers=0, progress=False, report=False)
    # grow: a new grid value and a new seed; the 2 finished tasks are kept, 4 new ones run
    res = run_sweep(_toy({"scale": [1.0, 3.0]}, seeds=3), d, workers=0, progress=False, report=False)
    assert res.ran == 4 and len(res.done) == 6
    assert all(_calls(d, t) == 1 for t in res.done)
    # a smaller request later still reports the whole sweep (a sweep never forgets tasks)
    res = run_sweep(_toy({"scale": [1.0]}, seeds=1), d, workers=0, progress=False, report=False)
    assert res.ran == 0 and res.tasks == 6
    # forced config change: every task's settings changed, so every task reruns from scratch
    res = run_sweep(_toy({"scale": [1.0, 3.0]}, seeds=3, fail=False, scale=5.0), d, workers=0,
                    progress=False, report=False)  # base scale changes nothing (axis wins) -> same tasks
    assert res.ran == 0
    with pytest.raises(SweepConfigMismatch):
        run_sweep(_toy({"fail": [False]}, seeds=1), d, workers=0, progress=False, report=False)
    res = run_sweep(_toy({"fail": [False]}, seeds=1), d, workers=0, progress=False, report=False,
                    force_config=True)
    assert res.ran == 1 and res.tasks == 1 and res.ok


def test_retries_then_failure_recorded_with_traceback(tmp_path):
    d = tmp_path / "sw"
    res = run_sweep(_toy({"fail": [False, True]}, seeds=1), d, workers=0, retries=2, progress=False, report=True)
    bad = task_id({"fail": True}, 0)
    assert list(res.failed) == [bad] and "deliberate failure" in res.failed[bad]
    assert _calls(d, bad) == 3  # 1 + 2 retries
    err = json.loads((d / "tasks" / bad / "error.json").read_text())
    assert [a["attempt"] for a in err["attempts"]] == [1, 2, 3]
    assert "Traceback" in err["attempts"][-1]["traceback"] and "RuntimeError" in err["attempts"][-1]["traceback"]
    status = json.loads((d / "status.json").read_text())
    assert status["failed"] == [bad] and status["counts"] == {"done": 1, "failed": 1, "pending": 0}
    table = pd.read_parquet(d / "results.parquet")
    assert set(table["task_id"]) == {task_id({"fail": False}, 0)}
    assert "Failed tasks" in (d / "report.html").read_text()


# --------------------------------------------------------------------------- kill -9 and resume (tishby)


def test_sigkill_then_resume_every_task_once_finished_not_recomputed(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(json.dumps({"experiment": "tishby", "profile": "test", "seeds": 3, "config": TINY_TISHBY,
                               "grid": {"activation": ["tanh", "relu"]}}))
    d = tmp_path / "sw"
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ibscope", "sweep", str(cfg), "--out", str(d), "--workers", "1",
                             "--no-progress", "--no-report"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    locked_msg = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            done = sorted(d.glob("tasks/*/result.json"))
            if done and locked_msg is None:  # a second process on the same directory is refused
                with pytest.raises(DirectoryLocked) as info:
                    run_sweep(load_spec(cfg), d, workers=0, progress=False, report=False)
                locked_msg = str(info.value)
            if len(done) >= 2:
                break
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-sweep
    finally:
        proc.wait()
    assert locked_msg is not None and "in use by another process" in locked_msg
    finished = {p.parent.name: (p.stat().st_mtime_ns, (p.parent / "result.parquet").stat().st_mtime_ns)
                for p in d.glob("tasks/*/result.json")}
    assert 0 < len(finished) < 6, f"kill came too late or too early: {len(finished)} finished"
    res = run_sweep(load_spec(cfg), d, workers=0, progress=False, report=False)
    assert res.ok and len(res.done) == 6 and res.ran == 6 - len(finished)
    for tid, mtimes in finished.items():  # finished tasks were not recomputed
        side = d / "tasks" / tid / "result.json"
        assert (side.stat().st_mtime_ns, (side.parent / "result.parquet").stat().st_mtime_ns) == mtimes
    table = pd.read_parquet(d / "results.parquet")
    assert table["task_id"].nunique() == 6
    assert not table.duplicated(["task_id", "epoch", "layer", "estimator"]).any()
    per_task = table.groupby("task_id").size()
    assert (per_task == per_task.iloc[0]).all()  # same snapshots x layers x estimators each
    assert set(zip(table["activation"], table["seed"], strict=False)) == {(a, s) for a in ("tanh", "relu") for s in range(3)}


# --------------------------------------------------------------------------- executors


def test_results_written_by_driver_equal_results_written_by_workers(tmp_path):
    spec = _toy(grid={"scale": [1.0, 2.0]}, seeds=2)
    by_workers = run_sweep(spec, tmp_path / "w", workers=2, progress=False, report=False)
    by_driver = run_sweep(spec, tmp_path / "d", workers=2, progress=False, report=False, results="driver")
    assert by_workers.ok and by_driver.ok and by_driver.ran == 4
    pd.testing.assert_frame_equal(pd.read_parquet(by_workers.results), pd.read_parquet(by_driver.results))
    for tid in by_driver.done:  # the tasks ran elsewhere: their side files never reached the sweep directory
        assert _calls(tmp_path / "w", tid) == 1 and _calls(tmp_path / "d", tid) == 0
        assert (tmp_path / "d" / "tasks" / tid / "task.json").is_file()
    again = run_sweep(spec, tmp_path / "d", workers=2, progress=False, report=False, results="driver")
    assert again.ok and again.ran == 0  # finished tasks are known to the store, not recomputed
    with pytest.raises(ValueError, match="'results'"):
        run_sweep(spec, tmp_path / "x", results="nfs", progress=False, report=False)


@pytest.mark.parametrize("results", ["workers", pytest.param("driver", marks=pytest.mark.slow)])  # 22 s each
def test_ray_sweep_matches_local_pool(tmp_path, results):
    pytest.importorskip("ray")
    spec = SweepSpec("tishby", profile="test", config=TINY_TISHBY, grid={"activation": ["tanh"]}, seeds=2)
    local = run_sweep(spec, tmp_path / "local", executor="local", workers=2, progress=False, report=False)
    ray_ = run_sweep(spec, tmp_path / "ray", executor="ray", workers=2, progress=False, report=False,
                     results=results)
    assert local.ok and ray_.ok
    a = pd.read_parquet(local.results).drop(columns="seconds")
    b = pd.read_parquet(ray_.results).drop(columns="seconds")
    assert len(a) == 2 * 4 * 3  # seeds x snapshots x layers (binning only)
    pd.testing.assert_frame_equal(a, b)


def test_ray_missing_gives_install_hint(monkeypatch, tmp_path):
    import builtins

    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    with pytest.raises(ImportError, match=r"ibscope\[ray\]"):
        run_sweep(_toy(seeds=1), tmp_path / "sw", executor="ray", progress=False, report=False)


# --------------------------------------------------------------------------- aggregation


def test_mean_interval_is_student_t():
    from scipy import stats

    vals = np.array([1.0, 2.0, 4.0, 7.0])
    df = pd.DataFrame({"g": ["a"] * 4 + ["b"], "v": [*vals, 3.0]})
    out = mean_interval(df, ["g"], ["v"]).set_index("g")
    half = stats.t.ppf(0.975, 3) * vals.std(ddof=1) / 2
    assert out.loc["a", "v"] == pytest.approx(3.5)
    assert out.loc["a", "v_lo"] == pytest.approx(3.5 - half) and out.loc["a", "v_hi"] == pytest.approx(3.5 + half)
    assert out.loc["b", "n"] == 1 and np.isnan(out.loc["b", "v_lo"])  # one seed: interval unknown


def test_common_grid_interpolates_in_log_epoch_without_extrapolating():
    df = pd.DataFrame({"k": "a", "seed": [0, 0, 0, 1, 1], "epoch": [0, 3, 15, 0, 7], "v": [0.0, 2.0, 4.0, 1.0, 3.0]})
    g = common_grid(df, ["k"], ["v"]).set_index(["seed", "epoch"])["v"]
    assert g.loc[(0, 7)] == pytest.approx(2.0 + 2.0 * (np.log(8) - np.log(4)) / (np.log(16) - np.log(4)))
    assert g.loc[(1, 3)] == pytest.approx(1.0 + 2.0 * np.log(4) / np.log(8))
    assert np.isnan(g.loc[(1, 15)])  # beyond seed 1's last epoch
    assert g.loc[(0, 15)] == 4.0


def test_trajectory_bands_over_seeds():
    rows = []
    for seed in range(5):  # compression grows with seed, and so does the gap: rho = +1
        for epoch, ixt in ((0, 5.0), (10, 8.0), (100, 8.0 - seed)):
            rows.append({"seed": seed, "epoch": epoch, "layer": "h1", "layer_index": 1, "estimator": "binning",
                         "i_xt": ixt, "i_ty": 0.5, "unit": "bits", "train_acc": 1.0, "test_acc": 1.0 - 0.01 * seed,
                         "train_loss": 0.1, "test_loss": 0.1 + 0.02 * seed})
    res = pd.DataFrame(rows)  # the compression statistics of these rows: tests/test_report.py
    bands = trajectory_bands(res).set_index("epoch")
    assert bands.loc[100, "i_xt"] == pytest.approx(6.0) and bands.loc[100, "n"] == 5
    assert bands.loc[0, "i_xt_lo"] == pytest.approx(5.0)  # no spread: zero-width interval
    with pytest.raises(ValueError, match="information-plane"):
        trajectory_bands(res.drop(columns="i_ty"))


def test_cli_sweep_reports_failures_with_exit_status(tmp_path, capsys):
    from ibscope.cli import main

    cfg = tmp_path / "toy.yaml"
    cfg.write_text(f"experiment: {TOY}\nseeds: 1\nconfig: {{scale: 2.0}}\n")
    args = ["sweep", str(cfg), "--out", str(tmp_path / "sw"), "--workers", "0", "--no-progress", "--no-report",
            "--allow-module", TOY, "--retries", "0", "--grid", "fail=false,true", "--seeds", "2"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "2 task(s) failed" in err and "fail=true__seed=1" in err and "deliberate failure" in err
    assert main([*args[:-2], "--set", "scale=3.0"]) == 2  # changed base config: refused
    assert "--force-config" in capsys.readouterr().err


def test_summarize_points_keeps_grid_columns_the_summary_already_has():
    import types

    import pandas as pd

    from ibscope.sweep import summarize_points

    mod = types.SimpleNamespace(summarize=lambda r: r.groupby("method", as_index=False)["value"].mean())
    res = pd.DataFrame({"method": ["a", "a", "b"], "lr": [1, 1, 2], "value": [1.0, 3.0, 5.0]})
    out = summarize_points(res, mod, ["method", "lr"])
    assert out.columns.tolist() == ["lr", "method", "value"]
    assert out.sort_values("method")["value"].tolist() == [2.0, 5.0]


# --------------------------------------------------------------------------- seeds batched per grid point

TOY_BATCHED = "_sweep_toy_batched"  # tests/_sweep_toy_batched.py: the toy with a run_seeds


def _batch_calls(sweep_dir: Path) -> list[list[int]]:
    return sorted([int(s) for s in line.split()] for p in (sweep_dir / "batches").glob("*/batch_calls.txt")
                  for line in p.read_text().splitlines())


def test_batched_sweep_equals_one_task_per_seed_and_batches_per_grid_point(tmp_path):
    from ibscope import experiments

    experiments.allow_module(TOY_BATCHED)
    try:
        spec = SweepSpec(TOY_BATCHED, config={}, grid={"scale": [1.0, 2.0]}, seeds=4)
        a = run_sweep(spec, tmp_path / "a", workers=0, progress=False, report=False, allow_module=TOY_BATCHED)
        b = run_sweep(spec, tmp_path / "b", workers=0, progress=False, report=False, allow_module=TOY_BATCHED,
                      batch_seeds=False)
        assert a.ok and b.ok and a.ran == b.ran == 8
        assert _batch_calls(tmp_path / "a") == [[0, 1, 2, 3], [0, 1, 2, 3]]  # one batch per grid point
        assert not (tmp_path / "b" / "batches").exists()
        key = ["task_id", "epoch"]
        ta = pd.read_parquet(a.results).sort_values(key).reset_index(drop=True)
        tb = pd.read_parquet(b.results).sort_values(key).reset_index(drop=True)
        pd.testing.assert_frame_equal(ta.drop(columns=["config_hash"]), tb.drop(columns=["config_hash"]))
        # more seeds later: only the new ones run, again as one batch per grid point
        again = run_sweep(spec.with_changes(seeds=6), tmp_path / "a", workers=0, progress=False, report=False,
                          allow_module=TOY_BATCHED)
        assert again.ran == 4 and len(again.done) == 12
        assert _batch_calls(tmp_path / "a") == [[0, 1, 2, 3], [0, 1, 2, 3], [4, 5], [4, 5]]
    finally:
        experiments._ALLOWED.discard(TOY_BATCHED)


def test_failed_batch_is_retried_seed_by_seed_with_its_error_recorded(tmp_path):
    from ibscope import experiments

    experiments.allow_module(TOY_BATCHED)
    try:
        d = tmp_path / "sw"
        spec = SweepSpec(TOY_BATCHED, config={"fail_batch": True}, grid={}, seeds=3)
        res = run_sweep(spec, d, workers=0, progress=False, report=False, allow_module=TOY_BATCHED)
        assert res.ok and len(res.done) == 3
        assert _batch_calls(d) == [[0, 1, 2]]
        for s in range(3):  # each seed then ran once on its own
            tid = task_id({}, s)
            assert _calls(d, tid) == 1
            err = json.loads((d / "tasks" / tid / "error.json").read_text())
            assert "deliberate batch failure" in err["attempts"][0]["traceback"]
    finally:
        experiments._ALLOWED.discard(TOY_BATCHED)


def test_batches_split_a_grid_point_to_keep_workers_busy():
    from ibscope.sweep._run import _batches
    from ibscope.sweep._spec import Task

    def tasks(point, seeds):
        return [Task(task_id(point, s), point, s, "h" + str(point)) for s in seeds]

    one = _batches(tasks({"a": 1}, range(5)), parallel=2)
    assert [[t.seed for t in u] for u in one] == [[0, 1, 2], [3, 4]]
    many = _batches(tasks({"a": 1}, range(3)) + tasks({"a": 2}, range(3)) + tasks({"a": 3}, range(3)), parallel=2)
    assert [len(u) for u in many] == [3, 3, 3]
    assert [[t.seed for t in u] for u in _batches(tasks({"a": 1}, [7]), parallel=4)] == [[7]]


def test_tishby_sweep_batches_seeds_with_the_one_seed_results(tmp_path):
    cfg = {**TINY_TISHBY, "epochs": 6, "n_snapshots": 3}
    spec = SweepSpec("tishby", config=cfg, grid={}, seeds=2)
    a = run_sweep(spec, tmp_path / "a", workers=0, progress=False, report=False)
    b = run_sweep(spec, tmp_path / "b", workers=0, progress=False, report=False, batch_seeds=False)
    assert a.ok and b.ok and any((tmp_path / "a" / "batches").iterdir())
    key = ["seed", "epoch", "estimator", "layer_index"]
    ta = pd.read_parquet(a.results).sort_values(key).reset_index(drop=True)
    tb = pd.read_parquet(b.results).sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(ta["i_xt"], tb["i_xt"], atol=1e-6)
    np.testing.assert_allclose(ta["train_acc"], tb["train_acc"], atol=1e-6)


@pytest.mark.parametrize("seeds, match", [
    ("12", "number of seeds or a list"),          # was seeds 1 and 2
    ([0.5, 1.7], "distinct ints"),                # was seeds 0 and 1
    (10**12, r"count must be in \[1, 100000\]"),   # was a MemoryError
    (True, "number of seeds or a list"),
])
def test_sweep_seeds_are_never_coerced(seeds, match):
    with pytest.raises(ValueError, match=match):
        _toy(seeds=seeds)
