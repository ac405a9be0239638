"""Butakov et al. (2024) reproductions: the statistics, the compressed_images and noisy_convnet experiments."""

import json
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
CLAIMS = ("butakov-compressed-images", "butakov-compressed-images-pca", "butakov-noisy-convnet-fitting",
          "butakov-noisy-convnet-compression")


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
    later = ["mean_abs_error", "rise_from_init", "interior_extreme", "interior_change"]
    assert [n for n in names if n in later] == later  # appended, in order
    assert names.index("mean_abs_error") > names.index("late_compression")  # after the old ones


@pytest.mark.parametrize("claim", CLAIMS)
def test_claims_load_with_their_profiles(claim):
    c = get_claim(claim)
    assert c.seeds("quick") >= 5 and c.seeds("paper") >= 10
    assert c.statistic in STATISTICS and c.notes


def test_convnet_claims_share_one_run():
    from ibscope.reproduce._run import _run_key, run_spec

    keys = {_run_key(run_spec(get_claim(c), "convnet", p, 5)) for c in CLAIMS[2:] for p in ("quick",)}
    assert len(keys) == 1


def test_compressed_images_arms_are_decided_separately_on_one_run():
    from ibscope.reproduce._run import _run_key, run_spec

    ae, pca = get_claim("butakov-compressed-images"), get_claim("butakov-compressed-images-pca")
    for p in ("tiny", "quick", "paper"):  # one sweep serves both claims
        assert _run_key(run_spec(ae, "images", p, 5)) == _run_key(run_spec(pca, "images", p, 5))
    assert ae.statistic_params["where"] == {"compression": "autoencoder"}
    assert pca.statistic_params["where"] == {"compression": "pca"}
    spec = run_spec(ae, "images", "paper", 10)
    assert spec.grid == {"task": ["blobs", "rectangles"], "compression": ["pca", "autoencoder"]}
    cfg = ci.Config(**spec.config)  # the paper profile is the paper's setting
    assert (cfg.n_samples, cfg.n_fit, cfg.k, cfg.whiten, cfg.estimator) == (5000, 6000, 5, True, "paper")
    assert cfg.mi_nats == pytest.approx(tuple(np.linspace(0, 10, 41)))
    # the blob autoencoder trains with the paper's loss, augmentation and noise; the rectangles' as before
    blob = ci.Config(**{**spec.config, "task": "blobs"}).ae_settings()
    assert (blob.ae_loss, blob.ae_zoom, blob.ae_input_noise, blob.ae_code_noise) == ("mae", 0.2, 0.1, 0.02)
    rect = ci.Config(**{**spec.config, "task": "rectangles"}).ae_settings()
    assert (rect.ae_loss, rect.ae_zoom, rect.ae_input_noise, rect.ae_code_noise) == ("mse", 0.0, 0.0, 0.0)
    # each arm's statistic reads only its own rows
    rows = [{"seed": s, "compression": c, "true_mi": 1.0, "estimate": 1.0 + (0.5 if c == "pca" else 0.1) * (s + 1),
             "unit": "nats"} for s in range(3) for c in ("pca", "autoencoder")]
    df = pd.DataFrame(rows)
    for claim, expected in ((ae, 0.2), (pca, 1.0)):
        s = compute_statistic("mean_abs_error", {"images": df}, claim.statistic_params, 0.95)
        assert s.estimate == pytest.approx(expected)


# ----------------------------------------------------------- compressed_images
@pytest.mark.parametrize("key, value", [("compression", "jpeg"), ("mi_nats", [-1.0]), ("latent_dim", 5),
                                        ("unit", "bans"), ("k", 200), ("size", 4), ("task", "circles"),
                                        ("estimator", "mine"), ("n_fit", 5), ("ae_patience", 0), ("whiten", 1),
                                        ("dim", 256), ("ae_zoom", 1.0), ("ae_zoom", -0.1), ("ae_loss", "l1"),
                                        ("ae_lr", 0.0), ("ae_batch_size", 1), ("ae_input_noise", -0.1),
                                        ("ae_code_noise", float("inf")), ("ae_lr_decays", -1),
                                        ("ae_patience", 2.5), ("ae_by_task", {"circles": {}}),
                                        ("ae_by_task", {"blobs": {"zoom": 0.2}}),
                                        ("ae_by_task", {"blobs": {"ae_zoom": 1.5}})])
def test_compressed_images_config_errors_name_the_setting(key, value):
    with pytest.raises(ValueError, match=f"'{key}'"):
        ci.Config(**{**ci.PROFILES["test"], key: value})
    with pytest.raises(ValueError, match="'latent_dim'"):  # rectangles have a 4-D latent
        ci.Config(task="rectangles", latent_dim=2)


def test_compressed_images_paper_tasks_and_inner_estimator():
    blobs, rect = ci.Config(), ci.Config(task="rectangles")
    assert (blobs.size, blobs.latent_dim, blobs.dim, blobs.inner) == (16, 2, 2, "kl")  # joint code dim 4
    assert (rect.size, rect.latent_dim, rect.dim, rect.inner) == (32, 4, 4, "wkl")  # joint code dim 8
    assert ci.Config(estimator="ksg").inner == "ksg"
    assert (blobs.n_samples, blobs.n_fit, blobs.k, blobs.whiten) == (5000, 6000, 5, True)
    assert blobs.mi_nats == pytest.approx(tuple(np.linspace(0, 10, 41)))


def test_rectangles_render_a_smooth_injective_map():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((20, 4))
    img = ci.render_rectangles(z, 32)
    assert img.shape == (20, 1024) and img.min() >= 0.0 and img.max() <= 1.0
    # the rectangle's area follows its half-sizes; wider rectangle, more mass
    wide = ci.render_rectangles(np.array([[0.0, 0.0, 2.0, 0.0]]), 32).sum()
    narrow = ci.render_rectangles(np.array([[0.0, 0.0, -2.0, 0.0]]), 32).sum()
    assert wide > 1.5 * narrow
    # locally injective: the Jacobian d image / d z has full rank 4 everywhere tested (a hard-edged
    # rectangle on a pixel grid is piecewise constant in z: rank 0)
    eps = 1e-5
    for zi in z[:8]:
        jac = np.stack([(ci.render_rectangles((zi + eps * e)[None], 32) - ci.render_rectangles(
            (zi - eps * e)[None], 32))[0] / (2 * eps) for e in np.eye(4)], axis=1)
        s = np.linalg.svd(jac, compute_uv=False)
        assert s[-1] > 1e-3 * s[0]
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        ci.render_rectangles(z[:, :2], 32)


def test_compressor_is_fitted_once_per_curve_on_separate_images(tmp_path, monkeypatch):
    from ibscope.estimators import _compressed

    seen = []
    real = _compressed.fit_autoencoder
    monkeypatch.setattr(_compressed, "fit_autoencoder", lambda train, dim, **k: seen.append(train) or real(
        train, dim, **k))
    cfg = ci.Config(**{**ci.PROFILES["test"], "compression": "autoencoder"})
    cells = []
    real_cell = ci._cell
    monkeypatch.setattr(ci, "_cell", lambda c, s, i, m, comp: cells.append(comp) or real_cell(c, s, i, m, comp))
    df = ci.run_seed(cfg, 0, tmp_path)
    assert len(seen) == 1 and seen[0].shape == (cfg.n_fit, 256)  # one fit, on n_fit images
    assert len(cells) == 2 and cells[0] is cells[1]  # that one compressor encodes every cell
    # the fitting images are not the estimated samples
    task = __import__("ibscope.tasks", fromlist=["get"]).get("gaussian_split", dim=2, mi=0.0, mixing_seed=0)
    u, _ = task.sample(cfg.n_samples, seed=0 * 100_003 + 0)
    x = ci._render(cfg, u)
    d2 = ((seen[0][:, None, :] - x[None, :50, :]) ** 2).sum(-1)
    assert d2.min() > 1e-6
    # recorded: epochs, convergence and the held-out MSE in every row, the history on disk
    assert (df["ae_epochs"] == 2).all() and df["reconstruction_mse"].gt(0).all()
    rec = json.loads(next(tmp_path.glob("compressor_seed0_*.json")).read_text())
    assert rec["kind"] == "autoencoder" and rec["epochs"] == 2 and len(rec["history"]) == 2
    assert rec["reconstruction_mse"] == pytest.approx(min(h["val_mse"] for h in rec["history"]))
    assert list(df["estimator"].unique()) == ["autoencoder+whitened kl5 (per-entropy whitening)"]


def test_autoencoder_training_options_reach_the_fit(tmp_path, monkeypatch):
    from ibscope.estimators import _compressed

    seen = []
    real = _compressed.fit_autoencoder
    monkeypatch.setattr(_compressed, "fit_autoencoder", lambda train, dim, **k: seen.append(k) or real(
        train, dim, **k))
    opts = {"ae_loss": "mae", "ae_zoom": 0.2, "ae_input_noise": 0.1, "ae_code_noise": 0.02, "ae_lr": 2e-3,
            "ae_batch_size": 100, "ae_patience": None, "ae_lr_decays": 1}
    cfg = ci.Config(**{**ci.PROFILES["test"], "compression": "autoencoder", "mi_nats": (1.0,), **opts})
    ci.run_seed(cfg, 0, tmp_path)
    assert len(seen) == 1
    assert {k: seen[0][k[3:]] for k in opts} == opts  # ae_<name> is fit_autoencoder's <name>
    rec = json.loads(next(tmp_path.glob("compressor_seed0_*.json")).read_text())
    assert rec["epochs"] == cfg.ae_max_epochs and not rec["converged"]  # patience None: fixed epochs
    assert "train_mae" in rec["history"][0]
    # per-task settings: they replace the common ones for their task only
    by = ci.Config(**{**ci.PROFILES["test"], "ae_by_task": {"blobs": {"ae_zoom": 0.2, "ae_channels": [2]}}})
    assert (by.ae_settings().ae_zoom, by.ae_settings().ae_channels) == (0.2, (2,))
    assert (by.ae_settings("rectangles").ae_zoom, by.ae_settings("rectangles").ae_channels) == (0.0, (4,))
    # the defaults train as before (MSE, no augmentation, the stopping rule)
    d = ci.Config()
    assert (d.ae_loss, d.ae_zoom, d.ae_input_noise, d.ae_code_noise, d.ae_patience, d.ae_lr_decays,
            d.ae_batch_size, d.ae_lr) == ("mse", 0.0, 0.0, 0.0, 10, 0, 128, 1e-3)


def test_compressed_images_units_ground_truth_and_resume(tmp_path, monkeypatch):
    cfg = ci.Config(mi_nats=(0.0, 2.0), compression="pca", n_samples=1000, n_fit=1000)
    df = ci.run_seed(cfg, 0, tmp_path / "bits")
    assert list(df["unit"].unique()) == ["bits"]
    assert list(df["true_mi"]) == pytest.approx([0.0, 2.0 / math.log(2)])
    assert list(df["error"]) == pytest.approx(list(df["estimate"] - df["true_mi"]))
    # ground truth: ~0 at independence; at 2 nats a positive estimate, not above the truth by much
    assert abs(df["estimate"].iloc[0]) < 0.15
    assert 0.3 * df["true_mi"].iloc[1] < df["estimate"].iloc[1] < df["true_mi"].iloc[1] + 0.2
    nats = ci.run_seed(ci.Config(**{**cfg.__dict__, "unit": "nats"}), 0, tmp_path / "nats")
    assert list(nats["true_mi"]) == pytest.approx([0.0, 2.0])
    assert list(nats["estimate"]) == pytest.approx(list(df["estimate"] * math.log(2)))
    # resumable: finished cells (intermediate checkpoints) are not recomputed; the finished rows are the runner's
    assert not list((tmp_path / "bits").glob("compressed_images_seed0_*.parquet"))
    monkeypatch.setattr(ci, "_cell", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
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
    assert not list(tmp_path.glob("noisy_convnet_seed0_*.parquet"))  # the runner keeps the finished rows
    again = nc.run_seed(cfg, 0, tmp_path)  # the plane on disk is reused, not re-estimated
    pd.testing.assert_frame_equal(again[["epoch", "layer", "i_xt", "i_ty"]], df[["epoch", "layer", "i_xt", "i_ty"]])
    s = nc.summarize(df)
    assert list(s["layer"]) == ["hidden1", "hidden2", "hidden3", "output"]
    assert nc.plot(df, tmp_path / "fig")[0].is_file()


@pytest.mark.slow
def test_autoencoder_arm_recovers_the_mi_of_2d_blobs(tmp_path):
    # the paper's pipeline at a reduced size (n = 2000, 2000 fitting images, 4 MI values up to 6 nats):
    # the conv autoencoder fitted apart + whitened KL5 tracks the truth (ground truth: the latents' MI)
    cfg = ci.Config(task="blobs", compression="autoencoder", mi_nats=(0.0, 2.0, 4.0, 6.0), n_samples=2000,
                    n_fit=2000, ae_max_epochs=80, unit="nats")
    df = ci.run_seed(cfg, 0, tmp_path)
    err = (df["estimate"] - df["true_mi"]).abs()
    assert err.iloc[0] < 0.2 and err.mean() < 1.0
    assert df["estimate"].is_monotonic_increasing
    assert df["ae_epochs"].iloc[0] <= 80 and df["reconstruction_mse"].iloc[0] < 0.2


@pytest.mark.slow
@pytest.mark.parametrize("claim", CLAIMS)
def test_claim_runs_end_to_end_at_tiny(claim, tmp_path):
    from ibscope.reproduce import reproduce

    if "convnet" in claim and not HAVE_MNIST:
        pytest.skip("MNIST test images not found")
    res = reproduce(claim, profile="tiny", out=tmp_path, workers=0, progress=False, catalogue_report=False)
    assert res.verdict.n == 3
