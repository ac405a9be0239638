"""Files of run and sweep directories: damaged files are named, locks, file modes, result columns, CLI input."""

from __future__ import annotations

import os
import re
import stat

import numpy as np
import pandas as pd
import pytest
import torch

from ibscope import experiments
from ibscope.cli import main
from ibscope.experiments import runner
from ibscope.store import DamagedFile, DirectoryLock, atomic_write_text, read_json
from ibscope.sweep import SweepSpec, run_sweep
from ibscope.tracking import ActivationRecorder

TOY = "_sweep_toy"  # tests/_sweep_toy.py: a user experiment module, milliseconds per seed


@pytest.fixture
def toy():
    experiments.allow_module(TOY)
    yield TOY
    experiments._ALLOWED.discard(TOY)


def _toy_run(out, toy, **kw):
    return runner.run(toy, seeds=[0, 1], out_dir=out, progress=False, **kw)


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# --------------------------------------------------------------------------- damaged JSON


def test_read_json_names_the_file_and_the_remedy(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"a": 1, "b"')
    with pytest.raises(DamagedFile, match=r"The thing '.*x\.json' is damaged: not valid JSON.*Do this\."):
        read_json(p, what="the thing", hint="Do this.")
    p.write_text("")
    with pytest.raises(DamagedFile, match="empty"):
        read_json(p, what="the thing")
    p.write_text("[1, 2]")
    with pytest.raises(DamagedFile, match="JSON list, not a dict"):
        read_json(p, what="the thing")
    p.write_bytes(b"\xff\xfe{}")
    with pytest.raises(DamagedFile, match="not UTF-8"):
        read_json(p, what="the thing")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_json(tmp_path / "missing.json", what="the thing")
    p.write_text('{"a": [1]}')
    assert read_json(p, what="the thing") == {"a": [1]}


def test_truncated_run_config_is_named_on_resume_and_collect(tmp_path, toy):
    out = _toy_run(tmp_path / "run", toy, report=False)
    _truncate(out / "config.json")
    with pytest.raises(DamagedFile, match=r"run's config '.*config\.json' is damaged.*--overwrite-config"):
        _toy_run(out, toy, report=False)
    with pytest.raises(DamagedFile, match=r"config\.json"):
        runner.collect_results(out)
    # the CLI reports it as an error with the file's name, not a traceback
    assert main(["run", toy, "--allow-module", toy, "--seeds", "2", "--out", str(out), "--no-progress"]) == 2
    # the remedy given works: start over, rewriting config.json
    assert len(runner.run(toy, seeds=[0], out_dir=out, progress=False, report=False, overwrite_config=True)
               .joinpath("results.parquet").read_bytes()) > 0


@pytest.mark.parametrize("name", ["sweep.json", "manifest.json"])
def test_truncated_sweep_records_are_named(tmp_path, toy, name):
    d = tmp_path / "sw"
    spec = SweepSpec(toy, grid={"scale": [1.0, 2.0]}, seeds=1)
    assert run_sweep(spec, d, workers=0, progress=False, report=False).ok
    _truncate(d / name)
    with pytest.raises(DamagedFile, match=rf"'{re.escape(str(d.resolve() / name))}' is damaged.*Delete it"):
        run_sweep(spec, d, workers=0, progress=False, report=False)
    (d / name).unlink()  # the remedy given: finished tasks are kept, nothing is recomputed
    res = run_sweep(spec, d, workers=0, progress=False, report=False)
    assert res.ok and res.ran == 0 and len(res.done) == 2


# --------------------------------------------------------------------------- activation snapshots


def _recorder(out_dir):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    return ActivationRecorder(model, torch.randn(5, 3), layers=["1", "2"], out_dir=out_dir)


def test_truncated_snapshot_is_skipped_on_resume_and_named_on_load(tmp_path):
    rec = _recorder(tmp_path / "acts")
    for epoch in (0, 1, 2):
        rec.record(epoch)
    _truncate(rec.path(1), keep=0.7)
    damaged: list = []
    assert ActivationRecorder.epochs_on_disk(tmp_path / "acts", damaged=damaged) == [0, 2]
    assert damaged == [rec.path(1)]
    with pytest.raises(ValueError, match=r"epoch_000001\.npz' is damaged.*delete it to recompute"):
        ActivationRecorder.load(tmp_path / "acts", 1)
    snap = ActivationRecorder.load(tmp_path / "acts", 2)
    assert set(snap) == {"1", "2"} and snap["2"].shape == (5, 2)


def test_recorder_out_dir_that_is_a_file(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ValueError, match=r"'out_dir'.*file\.txt' is a file"):
        _recorder(f)


# --------------------------------------------------------------------------- run directory lock


def test_second_run_on_one_out_is_refused(tmp_path, toy, capsys):
    out = tmp_path / "run"
    args = ["run", toy, "--allow-module", toy, "--out", str(out), "--no-progress"]
    with DirectoryLock(out, what="run"):  # another process (same effect: flock is per open file)
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "run directory" in err and "in use by another process" in err and f"pid {os.getpid()}" in err
        assert not (out / "config.json").exists() and not (out / "seed_0").exists()
    assert main(args) == 0  # released: the run proceeds
    assert (out / "results.parquet").is_file()


# --------------------------------------------------------------------------- file modes


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_results_respect_the_umask(tmp_path, toy, umask, mode):
    old = os.umask(umask)
    try:
        out = _toy_run(tmp_path / "run", toy, report=True)
        atomic_write_text(tmp_path / "plain.txt", "x")
    finally:
        os.umask(old)
    files = [out / "config.json", out / "results.parquet", out / "report.html", out / "seed_0" / "result.parquet",
             out / "seed_0" / "result.json", tmp_path / "plain.txt"]
    assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {f.name: oct(mode) for f in files}


# --------------------------------------------------------------------------- result columns


def test_iiw_run_collects_with_the_runners_config_hash_only(tmp_path):
    out = runner.run("iiw", profile="test", overrides={"iterations": 8, "n_evals": 2, "iiw_examples": 32, "prior": "init"},
                     seeds=[0], out_dir=tmp_path / "iiw", progress=False, report=False)
    res = pd.read_parquet(out / "results.parquet")
    record = read_json(out / "config.json", what="config")
    assert list(res.columns[:2]) == ["run_id", "config_hash"]
    assert set(res["config_hash"]) == {record["config_hash"]} and set(res["run_id"]) == {"iiw"}
    # the runner owns the config hash: iiw's rows carry no hash of their own
    assert "experiment_config_hash" not in res.columns
    pd.testing.assert_frame_equal(runner.collect_results(out), res)


# --------------------------------------------------------------------------- CLI input


def test_estimate_ci_prints_the_interval(tmp_path, capsys):
    from ibscope import mutual_information

    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    y = 0.8 * x + 0.6 * rng.normal(size=400)  # rho = 0.8: I = -log2(1 - 0.64) / 2 = 0.737 bits
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    xs, ys = str(tmp_path / "x.npy"), str(tmp_path / "y.npy")
    assert main(["estimate", xs, ys, "--ci", "0.9", "--resamples", "12"]) == 0
    line = capsys.readouterr().out
    m = re.search(r"I\(X;Y\) = ([\d.]+) bits, 90% CI \[([\d.]+), ([\d.]+)\] \(auto; 12 subsamples of 200 rows\)", line)
    assert m, line
    value, low, high = map(float, m.groups())
    ref = mutual_information(x, y, ci=0.9, n_resamples=12)
    assert (value, low, high) == pytest.approx((ref.value, ref.low, ref.high), rel=1e-5)
    assert low <= high and abs(value - 0.737) < 0.15
    with pytest.raises(SystemExit, match="--ci LEVEL"):
        main(["estimate", xs, ys, "--set", "ci=0.95"])
    with pytest.raises(SystemExit, match="need --ci"):
        main(["estimate", xs, ys, "--resamples", "5"])


def test_set_with_a_yaml_tag_is_a_clear_error(tmp_path):
    evil = "key=!!python/object/apply:os.system ['echo pwned']"
    for cmd in (["run", "tishby", "--out", str(tmp_path / "r")], ["estimate", "x.npy", "y.npy"]):
        with pytest.raises(SystemExit, match=r"--set .*not a plain YAML value.*no tags"):
            main([*cmd, "--set", evil])
    assert not (tmp_path / "r").exists()


def test_umask_is_read_without_proc_too(monkeypatch):
    import builtins

    from ibscope import store

    real_open = builtins.open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            raise OSError("no /proc here")
        return real_open(path, *args, **kwargs)

    old = os.umask(0o027)
    try:
        assert store._umask() == 0o027  # from /proc (Linux)
        monkeypatch.setattr(builtins, "open", no_proc)
        assert store._umask() == 0o027  # the fallback, which leaves the umask as it was
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(old)
