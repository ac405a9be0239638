"""The PIB analysis experiment: contract, resume after a crash, summary and plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from ibscope.experiments import _iiw as exp
from ibscope.experiments import get

CFG = {**exp.PROFILES["test"], "iterations": 24, "n_evals": 3}


def test_contract_and_configs():
    assert get("iiw") is exp and exp.NAME == "iiw"
    assert "test" in exp.PROFILES
    root = Path(__file__).resolve().parents[1] / "configs"
    for name, key in [("batch_size", "batch_size"), ("width", "width"), ("label_noise", "label_noise"),
                      ("activation", "activation")]:
        spec = yaml.safe_load((root / f"iiw_{name}.yaml").read_text())
        assert spec["experiment"] == "iiw" and key in spec["grid"]
        exp._config({**spec["config"], **{k: v[0] for k, v in spec["grid"].items()}})  # valid keys
    assert yaml.safe_load((root / "iiw_batch_size.yaml").read_text())["grid"]["batch_size"] == [4, 16, 64, 256]
    with pytest.raises(ValueError, match="Unknown iiw config"):
        exp._config({"batch": 3})


def test_run_resumes_after_crash(tmp_path, monkeypatch):
    clean = exp.run_seed(CFG, 0, tmp_path / "clean")
    fin = clean[clean.method == "final"].set_index("quantity").value
    assert {"iiw", "train_acc", "test_acc", "gap"} <= set(fin.index)
    assert fin["gap"] == pytest.approx(fin["train_acc"] - fin["test_acc"])
    assert (clean.unit.notna()).all() and set(clean[clean.quantity == "iiw"].unit) == {"bits"}
    assert sorted(clean.iteration.unique()) == [0, 8, 16, 24]
    # crash after the second tracked point, then resume from the checkpoint
    calls = {"n": 0}
    real = exp._accuracy

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(exp, "_accuracy", flaky)
    with pytest.raises(KeyboardInterrupt):
        exp.run_seed(CFG, 0, tmp_path / "crash")
    monkeypatch.setattr(exp, "_accuracy", real)
    assert (tmp_path / "crash" / "iiw_seed0.ckpt").exists()
    resumed = exp.run_seed(CFG, 0, tmp_path / "crash")
    pd.testing.assert_frame_equal(resumed.reset_index(drop=True), clean.reset_index(drop=True))
    # a finished seed is kept by the runner (tests/test_runner_cache.py), not by run_seed


def test_summarize_and_plot(tmp_path):
    frames = [exp.run_seed({**CFG, "label_noise": r, "prior": "init"}, 0, tmp_path / f"n{r}")
              for r in (0.0, 0.3, 0.6)]
    res = pd.concat(frames, ignore_index=True)
    s = exp.summarize(res)
    assert list(s.dataset) == ["digits"] and s.varied.iloc[0] == "label_noise" and s.n_points.iloc[0] == 3
    assert -1.0 <= s.spearman_rho.iloc[0] <= 1.0
    pts = exp.sweep_points(res)
    assert np.all(np.isfinite(pts.iiw)) and len(pts) == 3
    paths = exp.plot(res, tmp_path / "plots")
    assert len(paths) == 2 and all(p.exists() and p.stat().st_size > 0 for p in paths)


def test_fit_checkpoint_threads_restored_and_small_batches_train(tmp_path):
    from ibscope.training import load_checkpoint

    threads = torch.get_num_threads()
    df = exp.run_seed({**CFG, "torch_threads": 1, "prior": "init"}, 1, tmp_path)
    assert torch.get_num_threads() == threads
    ck = load_checkpoint(tmp_path / "iiw_seed1.ckpt" / "checkpoint.pt")  # fit's weights_only format
    assert ck["epoch"] == 3 and len(next(iter(ck["callbacks"].values()))["rows"]) == len(df[df.method != "final"])
    with pytest.raises(ValueError, match="torch_threads"):
        exp.run_seed({**CFG, "torch_threads": -1}, 0, tmp_path / "bad")
    # the batch-size sweep's lr trains its smallest batch (lr 0.05, momentum 0.9 did not)
    spec = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "iiw_batch_size.yaml").read_text())
    small = {"dataset": "digits", "momentum": spec["config"]["momentum"], "batch_size": 4, "width": 64, "depth": 2,
             "iterations": 400, "n_evals": 1, "prior": "init", "iiw_examples": 64}

    def train_acc(lr, where):
        fin = exp.run_seed({**small, "lr": lr}, 0, tmp_path / where)
        return float(fin[(fin.method == "final") & (fin.quantity == "train_acc")].value.iloc[0])

    assert train_acc(spec["config"]["lr"], "yaml_lr") > 0.85  # chance is 0.1 (measured: 0.96)
    assert train_acc(0.05, "old_lr") < 0.8  # the old setting (measured: 0.55)


def test_both_priors_on_one_run_and_log_spacing(tmp_path):
    both = exp.run_seed({**CFG, "prior": "both", "eval_spacing": "log", "n_evals": 4}, 0, tmp_path / "both")
    held = exp.run_seed({**CFG, "prior": "heldout", "eval_spacing": "log", "n_evals": 4}, 0, tmp_path / "held")
    assert sorted(both.iteration.unique()) == [0, 1, 3, 8, 24]  # 0 and geomspace(1, 24, 4), rounded
    fin = both[both.method == "final"].set_index("quantity").value
    assert {"iiw", "iiw_init", "phase_confidence", "phase_confidence_init", "gap"} <= set(fin.index)
    init = both[(both.quantity == "iiw_init") & (both.layer == "total") & (both.method != "final")]
    assert init.sort_values("iteration").value.iloc[0] == pytest.approx(0.0, abs=1e-9)  # dtheta = 0 at start
    assert (init.value.iloc[1:] > 0).all() and set(init.unit) == {"bits"}
    # 'iiw' of prior='both' is the held-out prior's: the same run as prior='heldout' (same S, prior, batches)
    a = both[(both.quantity == "iiw") & (both.method != "final")].sort_values(["iteration", "layer"])
    b = held[(held.quantity == "iiw") & (held.method != "final")].sort_values(["iteration", "layer"])
    np.testing.assert_allclose(a.value.to_numpy(), b.value.to_numpy(), rtol=1e-6)
    assert "iiw_init" not in set(held.quantity)
    for bad, match in [({"prior": "oracle"}, "'prior'"), ({"eval_spacing": "cubic"}, "'eval_spacing'")]:
        with pytest.raises(ValueError, match=match):
            exp._config({**CFG, **bad})


@pytest.mark.parametrize("prior", ["both", "init"])
def test_batched_seeds_equal_the_one_seed_path(tmp_path, prior, one_thread, assert_batched_rows, monkeypatch):
    cfg = {**CFG, "prior": prior, "label_noise": 0.2}
    seeds = [0, 3]
    calls = _spy_measure_weights(monkeypatch)
    single = {s: exp.run_seed(cfg, s, tmp_path / f"single{s}") for s in seeds}
    n_priors, n_points = (2 if prior == "both" else 1), 4
    assert len(calls) == len(seeds) * n_priors * n_points
    batched = exp.run_seeds(cfg, seeds, tmp_path / "batch")
    # the batched path measures each seed's unbatched model through the same function
    assert len(calls) == 2 * len(seeds) * n_priors * n_points
    assert all(type(c["model"]).__name__ == "MLP" for c in calls)
    assert_batched_rows(single, batched, seeds)
    # the two seeds are different runs (their own data, init and minibatches)
    iw = [batched[s].query("method == 'final' and quantity == 'iiw'").value.iloc[0] for s in seeds]
    assert iw[0] != iw[1]


def test_batched_seeds_resume_after_crash(tmp_path, monkeypatch, one_thread):
    seeds = [1, 2]
    clean = exp.run_seeds(CFG, seeds, tmp_path / "clean")
    calls = {"n": 0}
    real = exp._accuracy

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 9:  # the third tracked point (2 seeds x 2 accuracies per point)
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(exp, "_accuracy", flaky)
    with pytest.raises(KeyboardInterrupt):
        exp.run_seeds(CFG, seeds, tmp_path / "crash")
    monkeypatch.setattr(exp, "_accuracy", real)
    assert (tmp_path / "crash" / "checkpoint.pt").exists()
    resumed = exp.run_seeds(CFG, seeds, tmp_path / "crash")
    for s in seeds:
        pd.testing.assert_frame_equal(resumed[s], clean[s])
    with pytest.raises(ValueError, match="distinct"):
        exp.run_seeds(CFG, [1, 1], tmp_path / "dup")


def _spy_measure_weights(monkeypatch) -> list[dict]:
    """Record every call of the shared measuring function (fails where it does not exist)."""
    from ibscope.weights import _tracker

    calls: list[dict] = []
    real = _tracker.measure_weights

    def spy(model, loss_fn, data, **kwargs):
        rows = real(model, loss_fn, data, **kwargs)
        calls.append({"model": model, "loss_fn": loss_fn, "data": data, "kwargs": kwargs, "rows": rows})
        return rows

    monkeypatch.setattr(_tracker, "measure_weights", spy)
    return calls


def test_iiw_is_measured_by_the_weight_information_code(tmp_path, monkeypatch, one_thread):
    """One measuring path: the experiment's IIW rows come from ``weights._tracker.measure_weights``,
    which WeightInformation.record also calls, and the two agree on the same model, data and prior."""
    from ibscope.weights import WeightInformation

    calls = _spy_measure_weights(monkeypatch)
    df = exp.run_seed({**CFG, "prior": "both"}, 0, tmp_path / "one")
    tracked = df[df.quantity.isin(["iiw", "iiw_init"]) & (df.method != "final")]
    assert len(calls) == 2 * 4  # two priors at each of the four tracked iterations
    assert all(c["kwargs"]["quantities"] == ("iiw",) for c in calls)
    n_train = calls[0]["kwargs"]["iiw_kwargs"]["n_train"]
    assert n_train > exp.PROFILES["test"]["iiw_examples"]  # IIW scales with |S|, not the subset measured
    measured = [r for c in calls for r in c["rows"]]
    assert len(measured) == len(tracked)
    np.testing.assert_array_equal(tracked.value.to_numpy(), [r["value"] for r in measured])
    assert list(tracked.layer) == [r["layer"] for r in measured]
    assert set(tracked.method) == {r["method"] for r in measured} == {"fisher_quadratic"}
    # the callback, given the last point's model, data and prior, records through the same function
    last = calls[-1]
    wi = WeightInformation(last["loss_fn"], last["data"], prior_mean=last["kwargs"]["prior_mean"],
                           iiw_kwargs={"n_train": n_train})
    rec = wi.record(3, last["model"])
    assert len(calls) == 2 * 4 + 1
    assert list(rec.layer) == [r["layer"] for r in last["rows"]] and set(rec.unit) == {"bits"}
    np.testing.assert_allclose(rec.value.to_numpy(), [r["value"] for r in last["rows"]], rtol=1e-12)


def test_measure_weights_names_bad_arguments():
    from torch import nn

    from ibscope.weights._tracker import measure_weights

    model = nn.Linear(3, 2)
    data = [(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))]
    loss = nn.CrossEntropyLoss(reduction="none")
    for kwargs, match in [({"quantities": ()}, "'quantities'"), ({"quantities": ("iiw", "iiw")}, "'quantities'"),
                          ({"quantities": ("mi",)}, "'quantities'"), ({"quantities": ("iiw",)}, "'prior_mean'"),
                          ({"quantities": ("lagrangian",)}, "beta")]:
        with pytest.raises(ValueError, match=match):
            measure_weights(model, loss, data, **kwargs)


def test_cli_run_with_progress_bars_on(tmp_path, capsys, one_thread):
    """``ibscope run iiw`` with its default progress bars trains one seed through fit with the bar on
    (it failed: fit() got multiple values for keyword argument 'progress')."""
    from ibscope import cli

    out = tmp_path / "run"
    rc = cli.main(["run", "iiw", "--profile", "test", "--seeds", "1", "--out", str(out),
                   "--set", "iterations=16", "--set", "n_evals=2", "--set", "iiw_examples=64"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "iiw seed 0" in err  # fit's progress bar (its desc) was drawn
    res = pd.read_parquet(out / "results.parquet")
    assert sorted(res.iteration.unique()) == [0, 8, 16]
    fin = res[(res.method == "final") & (res.quantity == "iiw")]
    assert len(fin) == 1 and np.isfinite(fin.value).all() and set(fin.unit) == {"bits"}
