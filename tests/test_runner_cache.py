"""The runner owns orchestration: the one result cache, the config hash, the device and the threads.

* a second run reuses the finished seeds (``seed_<s>/result.parquet`` + sidecar),
  and the experiment keeps no final-result file or hash column of its own;
* the config hash leaves out the execution-only settings (``device``,
  ``torch_threads``): changing them reuses the finished seeds;
* a changed setting recomputes (``overwrite_config=True``), a damaged result
  is recomputed with a :class:`DamagedResultWarning` naming the file;
* ``device='auto'`` resolves to the CPU on a machine without CUDA, and
  ``'cuda'`` there is a ValueError naming ``device`` before any work, in every
  experiment that takes a device.
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from ibscope.experiments import get, has_build, runner

# a tiny ib_compare: a few tenths of a second per seed
TINY = {"hidden": (8,), "epochs": 1, "n_train": 60, "batch_size": 30, "iiw_examples": 16}
DEVICE_EXPERIMENTS = ["ib_compare", "csib_regression", "noisy_convnet", "ntk", "tishby"]
NO_CUDA = not torch.cuda.is_available()


def _counting(monkeypatch, mod):
    """Count the seeds computed (and the device each got): the calls of ``mod.build`` for a declared
    experiment (the runner trains it), else of ``mod.run_seed``."""
    calls: list[tuple[int, str | None]] = []
    entry = "build" if has_build(mod) else "run_seed"
    real = getattr(mod, entry)

    def counted(config, seed, out_dir, **kw):
        calls.append((int(seed), getattr(config, "device", None)))
        return real(config, seed, out_dir, **kw)

    monkeypatch.setattr(mod, entry, counted)
    return calls


def _run(out, **overrides):
    return runner.run("ib_compare", seeds=[0, 1], out_dir=out, overrides={**TINY, **overrides},
                      progress=False, report=False, batched=False)


def test_second_run_reuses_the_runners_per_seed_results(tmp_path, monkeypatch, one_thread):
    calls = _counting(monkeypatch, get("ib_compare"))
    out = _run(tmp_path / "run")
    assert sorted(s for s, _ in calls) == [0, 1]
    first = pd.read_parquet(out / "results.parquet")
    # the one cache: the runner's result file and its sidecar; no per-experiment result file or hash column
    assert sorted(p.name for p in (out / "seed_0").iterdir() if p.is_file()) == ["result.json", "result.parquet"]
    assert "experiment_config_hash" not in first.columns
    calls.clear()
    _run(tmp_path / "run")
    assert calls == []  # nothing recomputed
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), first)


def test_execution_settings_are_not_part_of_the_hash(tmp_path, monkeypatch, one_thread):
    mod = get("ib_compare")
    calls = _counting(monkeypatch, mod)
    out = _run(tmp_path / "run", device="cpu")
    calls.clear()
    _run(tmp_path / "run", device="auto")  # same settings on another device spec: not "another configuration"
    assert calls == []
    a = runner.config_record(mod, runner.resolve_config(mod, overrides={"device": "cpu"}))
    b = runner.config_record(mod, runner.resolve_config(mod, overrides={"device": "auto"}))
    assert a["config_hash"] == b["config_hash"] and a["config"]["device"] != b["config"]["device"]
    tishby = get("tishby")
    t1 = runner.config_record(tishby, runner.resolve_config(tishby, overrides={"torch_threads": 1}))
    t2 = runner.config_record(tishby, runner.resolve_config(tishby, overrides={"torch_threads": 2}))
    assert t1["config_hash"] == t2["config_hash"]
    assert (out / "config.json").is_file()


def test_changed_config_recomputes(tmp_path, monkeypatch, one_thread):
    calls = _counting(monkeypatch, get("ib_compare"))
    out = _run(tmp_path / "run")
    before = pd.read_parquet(out / "results.parquet")
    calls.clear()
    with pytest.raises(runner.RunConfigMismatch):
        _run(tmp_path / "run", epochs=2)
    assert calls == []
    runner.run("ib_compare", seeds=[0, 1], out_dir=out, overrides={**TINY, "epochs": 2}, progress=False,
               report=False, batched=False, overwrite_config=True)
    assert sorted(s for s, _ in calls) == [0, 1]
    after = pd.read_parquet(out / "results.parquet")
    assert set(after["epochs"]) == {2} and after["config_hash"].iloc[0] != before["config_hash"].iloc[0]
    # the old settings' folders (results, intermediate checkpoints) are kept aside, never resumed
    old = out / f"replaced_{before['config_hash'].iloc[0]}"
    assert runner.seed_result_done(old / "seed_0", expect={"config_hash": before["config_hash"].iloc[0]})


def test_damaged_result_is_recomputed_with_a_warning_naming_the_file(tmp_path, monkeypatch, one_thread):
    calls = _counting(monkeypatch, get("ib_compare"))
    out = _run(tmp_path / "run")
    victim = out / "seed_1" / "result.parquet"
    victim.write_bytes(victim.read_bytes()[:-20])  # truncated
    calls.clear()
    with pytest.warns(runner.DamagedResultWarning, match=r"seed_1[/\\]result\.parquet.*damaged"):
        _run(tmp_path / "run")
    assert [s for s, _ in calls] == [1]  # only the damaged seed
    assert runner.seed_result_done(out / "seed_1")
    assert len(pd.read_parquet(out / "results.parquet")) == len(runner.collect_results(out))


@pytest.mark.parametrize("name", DEVICE_EXPERIMENTS)
def test_device_auto_resolves_once_in_the_runner(name, tmp_path, monkeypatch):
    mod = get(name)
    seen = []

    def run_seed(config, seed, out_dir, *args, **kw):  # records the device the experiment is handed
        seen.append(config.device)
        raise KeyboardInterrupt  # stop before any work

    # an experiment that declares its training (build/rows) is handed the config in build
    monkeypatch.setattr(mod, "build" if has_build(mod) else "run_seed", run_seed)
    overrides = {"device": "auto", **({"datasets": ["digits-30"]} if name == "ntk" else {})}
    with pytest.raises(KeyboardInterrupt):
        runner.run(name, seeds=[0], out_dir=tmp_path / "run", overrides=overrides, progress=False,
                   report=False, batched=False)
    assert seen == ["cpu" if NO_CUDA else "cuda"]


@pytest.mark.skipif(not NO_CUDA, reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("name", DEVICE_EXPERIMENTS)
def test_device_cuda_without_cuda_is_refused_before_any_work(name, tmp_path, monkeypatch):
    mod = get(name)
    monkeypatch.setattr(mod, "run_seed", lambda *a, **k: pytest.fail("run_seed was called"))
    if has_build(mod):
        monkeypatch.setattr(mod, "build", lambda *a, **k: pytest.fail("build was called"))
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match="'device' is 'cuda.*CUDA is not available"):
            runner.run(name, seeds=[0], out_dir=tmp_path / device, overrides={"device": device}, progress=False,
                       report=False, batched=False)
        assert not (tmp_path / device).exists()
    with pytest.raises(ValueError, match="'device' must be 'cpu', 'cuda', 'cuda:N' or 'auto'"):
        runner.resolve_config(name, overrides={"device": "gpu"})


@pytest.mark.skipif(not NO_CUDA, reason="checks the refusal on a machine without CUDA")
def test_direct_run_seed_resolves_the_device_too(tmp_path, one_thread):
    """A sweep worker or a test calls run_seed directly: the same resolution applies."""
    ibc = get("ib_compare")
    df = ibc.run_seed(ibc.Config(device="auto", **TINY), 0, tmp_path / "auto")
    assert set(df["quantity"]) >= {"test_accuracy", "iiw"}
    with pytest.raises(ValueError, match="'device' is 'cuda'"):
        ibc.run_seed(ibc.Config(device="cuda", **TINY), 0, tmp_path / "cuda")
    reg = get("csib_regression")
    cfg = reg.Config(device="auto", hidden=(4,), epochs=1, n_synthetic=60, batch_size=30, dataset="heteroscedastic")
    assert len(reg.run_seed(cfg, 0, tmp_path / "csib"))


def test_resolve_execution_and_threads(tmp_path, monkeypatch, one_thread):
    from ibscope.experiments import resolve_device, resolve_execution

    tishby = get("tishby")
    cfg = tishby.Config(device="auto", torch_threads=1)
    resolved = resolve_execution(cfg)
    assert resolved.device == resolve_device("auto") and dataclasses.replace(resolved, device="auto") == cfg
    assert resolve_execution({"device": "cpu"}) == {"device": "cpu"}
    for bad in (-1, True, 1.5, "2"):
        with pytest.raises(ValueError, match="torch_threads"):
            runner.resolve_config("tishby", overrides={"torch_threads": bad})
    # the threads are set once around the experiment's work, and restored after
    iiw = get("iiw")
    seen = []
    real = iiw._run_seed

    def probe(cfg, seed, out, *, progress):
        seen.append(torch.get_num_threads())
        return real(cfg, seed, out, progress=progress)

    monkeypatch.setattr(iiw, "_run_seed", probe)
    before = torch.get_num_threads()
    iiw.run_seed({**iiw.PROFILES["test"], "iterations": 4, "n_evals": 1, "iiw_examples": 16, "prior": "init",
                  "torch_threads": 2}, 0, tmp_path)
    assert seen == [2] and torch.get_num_threads() == before


def test_unknown_settings_are_refused():
    for name in DEVICE_EXPERIMENTS + ["iiw", "lagrangian", "compressed_images"]:
        with pytest.raises(ValueError, match="Unknown setting"):
            runner.resolve_config(name, overrides={"no_such_setting": 1})


@pytest.mark.parametrize("name, key, bad", [
    ("ib_compare", "lr", True), ("ib_compare", "split_seed", "0"), ("ib_compare", "dropout", True),
    ("ib_compare", "test_fraction", True), ("csib_regression", "lr", True), ("csib_regression", "split_seed", 1.5),
    ("csib_regression", "test_fraction", True), ("iiw", "width", 2.0), ("lagrangian", "epochs", "3"),
    ("noisy_convnet", "dense", True), ("compressed_images", "k", 2.5), ("tishby", "device", "gpu")])
def test_declarative_constraints_refuse_bool_str_float_for_numbers(name, key, bad):
    """An int setting takes an integral number, a float setting a finite real: never a bool or a str."""
    with pytest.raises(ValueError, match=f"'{key}'"):
        runner.resolve_config(name, overrides={key: bad})
