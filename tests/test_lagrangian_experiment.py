"""The information-Lagrangian experiment: config checks, nuisances, the fit's curve, resumption, units."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from ibscope.experiments import _lagrangian as L
from ibscope.experiments.runner import resolve_config
from ibscope.weights import diagonal_gaussian_kl

FAST = {"width": 8, "epochs": 1, "n_train": 60, "batch_size": 30, "lagrangian_steps": 20,
        "lagrangian_batch_size": 64}


@pytest.mark.parametrize("key, value", [
    ("nuisance", "rotate"), ("n_train", 5000), ("n_train", 3), ("lagrangian_beta", 0.0),
    ("label_noise", 1.0), ("converge_window", 0.9), ("shift_pixels", 4), ("width", 0),
    ("n_noise_levels", 1), ("weight_decay", -1.0),
])
def test_config_rejects_bad_settings_by_name(key, value):
    with pytest.raises(ValueError, match=key):
        resolve_config("lagrangian", profile="test", overrides={key: value})


def test_unknown_key_is_named():
    with pytest.raises(ValueError, match="bogus"):
        L.run_seed({"bogus": 1}, 0, "/nonexistent")


def test_shift_moves_a_pixel_with_zero_fill():
    img = np.zeros((5, 8, 8), dtype=np.float32)
    img[:, 3, 4] = 1.0
    img[:, 0, 7] = 2.0  # falls off the image when moved right or up
    out = L.shift_images(img.reshape(5, 64), np.arange(5), 1).reshape(5, 8, 8)
    assert out[0, 3, 4] == 1 and out[0, 0, 7] == 2        # class 0: unchanged
    assert out[1, 3, 5] == 1 and out[1].sum() == 1        # right (the corner pixel left the image)
    assert out[2, 3, 3] == 1 and out[2, 0, 6] == 2        # left
    assert out[3, 4, 4] == 1 and out[3, 1, 7] == 2        # down
    assert out[4, 2, 4] == 1 and out[4].sum() == 1        # up


def test_noise_nuisance_scales_with_its_class():
    cfg = L.Config(nuisance="noise", n_noise_levels=3, noise_std=0.5)
    x = np.zeros((3000, 64), dtype=np.float32)
    xn, c = L.add_nuisance(x, cfg, seed=0)
    assert set(np.unique(c)) == {0, 1, 2}
    for k in range(3):
        assert xn[c == k].std() == pytest.approx(0.5 * k, abs=0.01)
    x0, c0 = L.add_nuisance(x, L.Config(), seed=0)
    assert x0 is x and not c0.any()


def test_fit_converged():
    assert L.fit_converged(np.full(100, 7.0), 0.1, 0.01) == (True, 0.0)
    ok, change = L.fit_converged(np.linspace(100.0, 50.0, 100), 0.1, 0.01)
    assert not ok and change == pytest.approx(5.0 / 52.5, rel=0.05)
    assert not L.fit_converged(np.ones(1), 0.5, 0.01)[0]


def test_nuisance_information_ground_truth():
    rng = np.random.default_rng(0)
    c = rng.integers(0, 4, 2000)
    separated = np.column_stack([c * 10.0 + rng.normal(size=c.size), rng.normal(size=c.size),
                                 np.zeros(c.size)])  # a dead unit too
    assert L.nuisance_information(separated, c) == pytest.approx(2.0, abs=0.1)  # log2(4) bits
    independent = rng.normal(size=(2000, 3))
    assert abs(L.nuisance_information(independent, c)) < 0.1
    assert L.nuisance_information(np.zeros((50, 3)), c[:50]) == 0.0


def test_fit_curve_starts_at_the_analytic_kl():
    """Step 0's KL (objective minus loss, over beta) is the KL at the initial noise of the trained weights."""
    cfg = L.Config(**{**FAST, "init_std": 0.02})
    model = L._model(cfg, seed=0)
    x, y = torch.rand(60, 64), torch.randint(0, 10, (60,))
    res, kl, loss = L.lagrangian_fit(model, x, y, cfg, seed=0)
    lv = torch.tensor(2 * math.log(0.02))
    kl0 = sum(float(diagonal_gaussian_kl(p.detach().double(), lv.double(), 1.0)) for p in model.parameters())
    assert kl.shape == loss.shape == (cfg.lagrangian_steps,)
    assert kl[0] == pytest.approx(kl0 / math.log(2), rel=1e-4)
    assert kl[-1] < kl[0]  # the noise grows from its small start: less information
    assert res.unit == "bits" and (loss > 0).all()


def test_run_seed_rows_units_and_resumption(tmp_path):
    cfg = {**FAST, "nuisance": "shift"}
    df = L.run_seed(cfg, 0, tmp_path)
    assert df["unit"].notna().all()
    fin = df[df.method == "final"].set_index(["layer", "quantity"])
    assert fin.loc[("total", "info_weights"), "unit"] == "bits"
    assert fin.loc[("total", "gap"), "value"] == pytest.approx(
        fin.loc[("total", "train_acc"), "value"] - fin.loc[("total", "test_acc"), "value"])
    per_layer = df[(df.quantity == "info_weights") & (df.layer != "total")].value.sum()
    assert per_layer == pytest.approx(fin.loc[("total", "info_weights"), "value"], rel=1e-6)
    assert ("hidden1", "i_t_nuisance") in fin.index
    curve = df[(df.method == "fit") & (df.quantity == "lagrangian_kl")]
    assert len(curve) == FAST["lagrangian_steps"] and curve.step.is_monotonic_increasing
    again = L.run_seed(cfg, 0, tmp_path)  # resumed from the finished training checkpoint
    pd.testing.assert_frame_equal(df, again)
    with pytest.raises(ValueError, match="another (configuration|run)"):
        L.run_seed({**cfg, "width": 9}, 0, tmp_path)
    with pytest.raises(ValueError, match="another configuration"):  # same shapes, other settings
        L.run_seed({**cfg, "lr": 0.01}, 0, tmp_path)


def test_summarize_and_plot(tmp_path):
    frames = [L.run_seed({**FAST, "label_noise": ln}, s, tmp_path / f"{ln}_{s}")
              for ln in (0.0, 0.3) for s in (0, 1)]
    results = pd.concat(frames, ignore_index=True)
    summ = L.summarize(results)
    assert len(summ) == 2 and {"info_weights", "gap", "n_converged", "n_seeds"} <= set(summ.columns)
    assert (summ.n_seeds == 2).all()
    paths = L.plot(results, tmp_path / "fig")
    assert [p.name for p in paths] == ["lagrangian_fit.png", "lagrangian_vs_gap.png"]
    assert all(p.stat().st_size > 0 for p in paths)


@pytest.mark.parametrize("extra", [{}, {"nuisance": "shift", "weight_decay": 1e-3, "label_noise": 0.2}])
def test_batched_seeds_equal_the_one_seed_path(tmp_path, extra, one_thread, assert_batched_rows):
    cfg = {**FAST, "epochs": 3, **extra}
    seeds = [0, 4]
    single = {s: L.run_seed(cfg, s, tmp_path / f"single{s}") for s in seeds}
    batched = L.run_seeds(cfg, seeds, tmp_path / "batch")
    assert_batched_rows(single, batched, seeds)
    fin = [batched[s].query("method == 'final' and quantity == 'info_weights' and layer == 'total'").value.iloc[0]
           for s in seeds]
    assert fin[0] != fin[1]  # two different runs


def test_batched_seeds_resume_without_remeasuring(tmp_path, monkeypatch, one_thread):
    seeds = [1, 2]
    clean = L.run_seeds(FAST, seeds, tmp_path / "clean")
    real = L.measure
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(L, "measure", flaky)
    with pytest.raises(KeyboardInterrupt):
        L.run_seeds(FAST, seeds, tmp_path / "crash")
    assert (tmp_path / "crash" / "seed_1.parquet").exists() and not (tmp_path / "crash" / "seed_2.parquet").exists()
    calls["n"] = 10  # measuring again works; seed 1 must not be measured again
    seen = []
    monkeypatch.setattr(L, "measure", lambda cfg, s, *a, **k: seen.append(s) or real(cfg, s, *a, **k))
    resumed = L.run_seeds(FAST, seeds, tmp_path / "crash")
    assert seen == [2]
    for s in seeds:
        pd.testing.assert_frame_equal(resumed[s], clean[s])
    with pytest.raises(ValueError, match="distinct"):
        L.run_seeds(FAST, [3, 3], tmp_path / "dup")
