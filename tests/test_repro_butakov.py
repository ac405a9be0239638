"""Butakov et al. (2024) reproductions: the statistics, the compressed_images and noisy_convnet experiments."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from ibscope.data import data_dir
from ibscope.experiments import _compressed_images as ci
from ibscope.experiments import _noisy_convnet as nc
from ibscope.reproduce import get_claim
from ibscope.reproduce._statistics import STATISTICS, compute_statistic

HAVE_MNIST = (data_dir() / "mnist").is_dir() and any((data_dir() / "mnist").glob("t10k-images-idx3-ubyte*"))
CLAIMS = ("butakov-compressed-images", "butakov-noisy-convnet-fitting", "butakov-noisy-convnet-compression")


# ------------------------------------------------------------------ statistics
def _grid_table(errors: dict[int, list[float]]) -> pd.DataFrame:
    rows = []
    for seed, errs in errors.items():
        for i, e in enumerate(errs):
            rows.append({"seed": seed, "task_id": f"p{i % 2}-s{seed}", "size": 16 if i % 2 else 32,
                         "true_mi": float(i), "estimate": float(i) + e, "unit": "nats"})
    return pd.DataFrame(rows)


def test_mean_abs_error_on_a_known_table():
    df = _grid_table({0: [-1.0, 1.0, -2.0, 0.0], 1: [-3.0, 1.0, 0.0, 0.0], 2: [-0.5, -0.5, -0.5, -0.5]})
    s = compute_statistic("mean_abs_error", {"r": df}, {"run": "r"}, 0.95)
    per_seed = np.array([1.0, 1.0, 0.5])  # mean |error| over the 4 cells of each seed
    assert s.n == 3 and s.unit == "nats"
    assert s.estimate == pytest.approx(per_seed.mean())
    half = 4.302652729911275 * per_seed.std(ddof=1) / math.sqrt(3)  # t_{0.975, 2}
    assert (s.low, s.high) == pytest.approx((per_seed.mean() - half, per_seed.mean() + half))
    signed = compute_statistic("mean_abs_error", {"r": df}, {"run": "r", "signed": True}, 0.95)
    assert signed.estimate == pytest.approx(np.mean([-0.5, -0.5, -0.5]))
    sub = compute_statistic("mean_abs_error", {"r": df}, {"run": "r", "where": {"size": 32}}, 0.95)
    assert sub.estimate == pytest.approx(np.mean([1.5, 1.5, 0.5]))  # cells 0 and 2 of each seed


def test_mean_abs_error_refuses_unequal_grids_and_missing_columns():
    df = _grid_table({0: [0.0, 1.0, 1.0], 1: [0.0, 1.0]})
    with pytest.raises(ValueError, match="different numbers of cells"):
        compute_statistic("mean_abs_error", {"r": df}, {"run": "r"}, 0.95)
    with pytest.raises(ValueError, match="no column 'truth'"):
        compute_statistic("mean_abs_error", {"r": df}, {"run": "r", "truth": "truth"}, 0.95)


def _plane(values: dict[int, list[float]], column: str = "i_ty") -> pd.DataFrame:
    rows = []
    for seed, vals in values.items():
        for epoch, v in zip((0, 1, 5, 20), vals, strict=True):
            for idx, layer in enumerate(("hidden1", "hidden2", "output"), start=1):
                rows.append({"seed": seed, "epoch": epoch, "layer": layer, "layer_index": idx, "estimator": "e",
                             "i_xt": 1.0, "i_ty": 1.0, column: v if layer == "hidden2" else 0.0, "unit": "bits"})
    return pd.DataFrame(rows)


def test_rise_from_init_last_and_peak():
    df = _plane({0: [0.5, 2.0, 1.5, 1.0], 1: [1.0, 1.2, 3.0, 2.0], 2: [2.0, 1.0, 1.0, 1.5]})
    last = compute_statistic("rise_from_init", {"r": df}, {"run": "r", "estimator": "e"}, 0.95)
    assert last.details["layer"] == "hidden2"  # last_hidden: the deepest layer that is not 'output'
    assert list(last.per_replicate["value"]) == pytest.approx([0.5, 1.0, -0.5])  # signed: seed 2 lost
    peak = compute_statistic("rise_from_init", {"r": df}, {"run": "r", "estimator": "e", "to": "peak"}, 0.95)
    assert list(peak.per_replicate["value"]) == pytest.approx([1.5, 2.0, 0.0])
    with pytest.raises(ValueError, match="'to'"):
        compute_statistic("rise_from_init", {"r": df}, {"run": "r", "estimator": "e", "to": "max"}, 0.95)
    with pytest.raises(ValueError, match="estimator"):
        compute_statistic("rise_from_init", {"r": df}, {"run": "r", "estimator": "nope"}, 0.95)


def test_new_statistics_are_registered_after_the_old_ones():
    names = list(STATISTICS)
    assert names[-2:] == ["mean_abs_error", "rise_from_init"]


@pytest.mark.parametrize("claim", CLAIMS)
def test_claims_load_with_their_profiles(claim):
    c = get_claim(claim)
    assert c.seeds("quick") >= 5 and c.seeds("paper") >= 10
    assert c.statistic in STATISTICS and c.notes


def test_convnet_claims_share_one_run():
    from ibscope.reproduce._run import _run_key, run_spec

    keys = {_run_key(run_spec(get_claim(c), "convnet", p, 5)) for c in CLAIMS[1:] for p in ("quick",)}
    assert len(keys) == 1


# ----------------------------------------------------------- compressed_images
@pytest.mark.parametrize("key, value", [("compression", "jpeg"), ("mi_nats", [-1.0]), ("latent_dim", 5),
                                        ("unit", "bans"), ("k", 200), ("size", 4)])
def test_compressed_images_config_errors_name_the_setting(key, value):
    with pytest.raises(ValueError, match=f"'{key}'"):
        ci.Config(**{**ci.PROFILES["test"], key: value})


def test_compressed_images_units_ground_truth_and_resume(tmp_path, monkeypatch):
    cfg = ci.Config(mi_nats=(0.0, 2.0), size=16, compression="pca", n_samples=1000)
    df = ci.run_seed(cfg, 0, tmp_path / "bits")
    assert list(df["unit"].unique()) == ["bits"]
    assert list(df["true_mi"]) == pytest.approx([0.0, 2.0 / math.log(2)])
    assert list(df["error"]) == pytest.approx(list(df["estimate"] - df["true_mi"]))
    # ground truth: ~0 at independence; at 2 nats a clearly positive estimate, not above the truth by much
    assert abs(df["estimate"].iloc[0]) < 0.15
    assert 0.3 * df["true_mi"].iloc[1] < df["estimate"].iloc[1] < df["true_mi"].iloc[1] + 0.2
    nats = ci.run_seed(ci.Config(**{**cfg.__dict__, "unit": "nats"}), 0, tmp_path / "nats")
    assert list(nats["true_mi"]) == pytest.approx([0.0, 2.0])
    assert list(nats["estimate"]) == pytest.approx(list(df["estimate"] * math.log(2)))
    # resumable: finished cells are not recomputed (neither from the result file nor from the cell files)
    monkeypatch.setattr(ci, "_cell", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    pd.testing.assert_frame_equal(ci.run_seed(cfg, 0, tmp_path / "bits"), df)
    next((tmp_path / "bits").glob("compressed_images_seed0_*.parquet")).unlink()
    pd.testing.assert_frame_equal(ci.run_seed(cfg, 0, tmp_path / "bits"), df)


def test_compressed_images_summary_and_plot(tmp_path):
    cfg = ci.Config(**{**ci.PROFILES["test"], "compression": "autoencoder"})
    df = pd.concat([ci.run_seed(cfg, s, tmp_path / str(s)) for s in (0, 1)], ignore_index=True)
    s = ci.summarize(df)
    assert list(s["seeds"]) == [2, 2] and {"estimate_lo", "estimate_hi", "error"} <= set(s.columns)
    assert s["estimate"].tolist() == pytest.approx(df.groupby("true_mi_nats")["estimate"].mean().tolist())
    assert ci.plot(df, tmp_path / "fig")[0].is_file()


# --------------------------------------------------------------- noisy_convnet
@pytest.mark.parametrize("key, value", [("noise_std", 0.0), ("noise_mode", "uniform"), ("compression", "jpeg"),
                                        ("n_snapshots", 1), ("activation", "swishy"), ("max_features", 2)])
def test_noisy_convnet_config_errors_name_the_setting(key, value):
    with pytest.raises(ValueError, match=f"'{key}'"):
        nc.Config(**{**nc.PROFILES["test"], key: value})


@pytest.mark.parametrize("mode", ["additive", "multiplicative"])
def test_noisy_convnet_layers_are_noisy_when_recorded(mode):
    net = nc.NoisyConvNet(noise_std=0.1, noise_mode=mode, channels=(2, 4), dense=8, seed=0).eval()
    seen = []
    hook = net.hidden1.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    x = torch.rand(64, 784)
    with torch.no_grad():
        net(x), net(x)
        clean = net.hidden1[0](net.conv1(x.reshape(64, 1, 28, 28)))
    hook.remove()
    diff = seen[0] - seen[1]  # two noise draws on the first layer
    if mode == "additive":  # t + N(0, 0.1^2): the difference has std 0.1 sqrt(2)
        assert float(diff.std()) == pytest.approx(0.1 * math.sqrt(2), rel=0.15)
    else:  # t + 0.1 |t| N(0, 1): zero where t is zero, std 0.1 sqrt(2) |t| elsewhere
        assert torch.all(diff[clean == 0] == 0)
        ratio = diff[clean != 0] / clean[clean != 0].abs()
        assert float(ratio.std()) == pytest.approx(0.1 * math.sqrt(2), rel=0.15)
    assert float((seen[0] - clean).abs().max()) > 0


def test_codes_once_compresses_each_variable_once(monkeypatch):
    from ibscope.estimators import _compressed

    calls = []
    real = _compressed.pca_compress
    monkeypatch.setattr(_compressed, "pca_compress", lambda a, dim, **k: calls.append(a.shape) or real(a, dim, **k))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 20))
    t = x[:, :10] + 0.5 * rng.standard_normal((500, 10))
    y = (x[:, 0] > 0).astype(np.int64)
    fresh = nc.CodesOnce(dim_x=4, dim_y=4).estimate(x, t)
    assert fresh == pytest.approx(_compressed.Compressed(dim_x=4, dim_y=4).estimate(x, t))  # same first value
    calls.clear()
    est = nc.CodesOnce(dim_x=4, dim_y=4)
    est.estimate(x, t), est.estimate(t, y, discrete_y=True), est.estimate(x, t)
    assert calls == [(500, 20), (500, 10)]  # x once, t once, labels never


def test_noisy_convnet_fails_clearly_without_mnist(tmp_path):
    cfg = nc.Config(**{**nc.PROFILES["test"], "data_dir": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="IBSCOPE_DATA"):
        nc.run_seed(cfg, 0, tmp_path / "run")


@pytest.mark.skipif(not HAVE_MNIST, reason="MNIST test images not found (IBSCOPE_DATA / ../shared/data)")
def test_noisy_convnet_tiny_run_rows_units_and_resume(tmp_path):
    cfg = nc.Config(**nc.PROFILES["test"])
    df = nc.run_seed(cfg, 0, tmp_path)
    assert {"seed", "epoch", "layer", "layer_index", "estimator", "i_xt", "i_ty", "unit", "eval_acc"} <= set(df)
    assert list(df["unit"].unique()) == ["bits"] and list(df["estimator"].unique()) == ["autoencoder+ksg"]
    assert sorted(df["epoch"].unique()) == [0, 2]
    assert list(df[df["epoch"] == 0]["layer"]) == ["hidden1", "hidden2", "hidden3", "output"]
    assert np.isfinite(df[["i_xt", "i_ty"]].to_numpy()).all()
    assert (df["i_ty"] <= math.log2(10) + 0.5).all()  # I(T;Y) <= H(Y) (up to the estimator's bias)
    next(tmp_path.glob("noisy_convnet_seed0_*.parquet")).unlink()  # the plane on disk is reused, not re-estimated
    again = nc.run_seed(cfg, 0, tmp_path)
    pd.testing.assert_frame_equal(again[["epoch", "layer", "i_xt", "i_ty"]], df[["epoch", "layer", "i_xt", "i_ty"]])
    s = nc.summarize(df)
    assert list(s["layer"]) == ["hidden1", "hidden2", "hidden3", "output"]
    assert nc.plot(df, tmp_path / "fig")[0].is_file()


@pytest.mark.slow
@pytest.mark.parametrize("claim", CLAIMS)
def test_claim_runs_end_to_end_at_tiny(claim, tmp_path):
    from ibscope.reproduce import reproduce

    if "convnet" in claim and not HAVE_MNIST:
        pytest.skip("MNIST test images not found")
    res = reproduce(claim, profile="tiny", out=tmp_path, workers=0, progress=False, catalogue_report=False)
    assert res.verdict.n == 3
