"""Compressed estimator (PCA / autoencoder + inner estimator) against ground truth.

Tolerances: compression is lossy (a lower bound on I by data processing)
and the inner KSG adds its own bias; on blob images of a 1- or 2-dim latent
(n = 2000) the compressed KSG recovers the latent MI within 0.2 bit (measured
errors 0.0-0.14 bit).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from ibscope import tasks
from ibscope.estimators import get
from ibscope.estimators._compressed import (
    Compressed,
    autoencoder_compress,
    fit_autoencoder,
    fit_pca,
    pca_compress,
    twonn_dimension,
    whiten_codes,
)
from ibscope.estimators._knn import KSG

TOL = 0.2  # bits


@pytest.fixture(scope="module")
def blobs2():
    task = tasks.get("blobs_image", latent_dim=2, mi=1.0)
    return (task, *task.sample(2000, seed=0))


@pytest.fixture(scope="module")
def blobs1():
    task = tasks.get("blobs_image", latent_dim=1, mi=2.0)
    return (task, *task.sample(2000, seed=0))


def test_blobs_image_two_dim_latent_pca(blobs2):
    task, x, y = blobs2
    assert x.shape[1] == 256
    est = get("compressed", estimator="ksg", compression="pca", dim_x=4, dim_y=4)
    value = est.estimate(x, y)
    assert abs(value - task.mutual_information) < TOL, value
    assert value <= task.mutual_information + 0.05  # lower bound up to KSG noise
    assert est.compression_["x"]["dim"] == 4 and 0 < est.compression_["x"]["explained_variance_ratio"] < 1


def test_blobs_image_two_dim_latent_autoencoder(blobs2):
    task, x, y = blobs2
    est = get("compressed", compression="autoencoder", dim_x=2, dim_y=2, epochs=20)
    value = est.estimate(x, y)
    assert abs(value - task.mutual_information) < TOL, value
    assert est.compression_["y"]["reconstruction_mse"] < 0.5  # in units of the data's std


def test_blobs_image_one_dim_latent(blobs1):
    task, x, y = blobs1
    pca = get("compressed", dim_x=2, dim_y=2).estimate(x, y)
    ae = get("compressed", compression="autoencoder", dim_x=1, dim_y=1, epochs=20).estimate(x, y)
    for value in (pca, ae):
        assert abs(value - task.mutual_information) < TOL, (pca, ae)
    # one linear component is not enough for a nonlinear 1-D manifold: strictly lossy
    lossy = get("compressed", dim_x=1, dim_y=1).estimate(x, y)
    assert lossy < task.mutual_information - 0.3


def test_wide_layer_with_labels():
    """16-dim Gaussian mixture, discrete labels: compress x only, Ross-KSG on the codes."""
    task = tasks.get("mixture_labels", n_classes=3, dim=16, separation=3.0)
    x, y = task.sample(2000, seed=0)
    value = get("compressed", dim_x=2).estimate(x, y, discrete_y=True)
    assert abs(value - task.mutual_information) < 0.15, value
    both = get("compressed", dim_x=2, dim_y=1)  # labels are never compressed
    assert both.estimate(x, y, discrete_y=True) == value
    assert both.compression_["y"] == {"dim": 1, "compressed": False, "reason": "discrete"}


def test_data_processing_inequality_with_exact_inner():
    """Gaussian inner estimator (canonical correlations): a projection can only lose MI."""
    task = tasks.get("gaussian_split", dim=4, mi=2.0)
    x, y = task.sample(3000, seed=0)
    full = get("gaussian").estimate(x, y)
    assert abs(full - task.mutual_information) < 0.1  # sampling error of the plug-in CCA
    for d in (1, 2, 3):
        assert get("compressed", estimator="gaussian", dim_x=d).estimate(x, y) <= full + 1e-9
        assert get("compressed", estimator="gaussian", dim_x=d, dim_y=d).estimate(x, y) <= full + 1e-9
    # a dimension >= the variable's leaves it untouched (PCA to full rank is a rotation)
    same = get("compressed", estimator="gaussian", dim_x=4, dim_y=9)
    assert same.estimate(x, y) == pytest.approx(full, abs=1e-9)
    assert same.compression_["x"]["compressed"] is False


def test_passthrough_instance_units_and_torch():
    task = tasks.get("gaussian_split", dim=3, mi=1.0)
    x, y = task.sample(1000, seed=0)
    inner = KSG(k=5)
    plain = Compressed(estimator=inner, dim_x=None, dim_y=None)
    assert plain.estimate(x, y) == pytest.approx(inner.estimate(x, y), abs=1e-12)
    auto = Compressed(estimator=inner)  # dim 'auto': a full-rank 3-dim Gaussian stays as it is
    assert auto.estimate(x, y) == pytest.approx(inner.estimate(x, y), abs=1e-12)
    assert auto.compression_["x"]["compressed"] is False
    by_name = get("compressed", estimator="ksg", estimator_params={"k": 5}, dim_x=2)
    by_inst = Compressed(estimator=KSG(k=5, unit="nats"), dim_x=2)
    v = by_name.estimate(x, y)
    assert by_inst.estimate(x, y) == pytest.approx(v, abs=1e-12)  # inner unit converted
    assert Compressed(dim_x=2, unit="nats").estimate(x, y) == pytest.approx(
        get("compressed", dim_x=2).estimate(x, y) * np.log(2), abs=1e-12)
    # torch input: PCA by SVD on the tensor's device, same projection up to signs
    vt = by_name.estimate(torch.from_numpy(x), torch.from_numpy(y))
    assert vt == pytest.approx(v, abs=1e-6)


def test_compression_helpers():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 5)) * np.array([5.0, 3.0, 1.0, 0.1, 0.01])
    codes, info = pca_compress(a, 2)
    assert codes.shape == (300, 2) and info["explained_variance_ratio"] > 0.95
    codes_t, info_t = pca_compress(torch.from_numpy(a), 2)
    assert np.allclose(np.abs(codes_t.numpy()), np.abs(codes), atol=1e-8)
    assert info_t["explained_variance_ratio"] == pytest.approx(info["explained_variance_ratio"])
    c1, i1 = autoencoder_compress(a, 2, epochs=3, seed=1)
    c2, _ = autoencoder_compress(a, 2, epochs=3, seed=1)
    assert c1.shape == (300, 2) and np.array_equal(c1, c2)  # deterministic on CPU
    assert np.isfinite(i1["reconstruction_mse"])


@pytest.mark.parametrize("params", [
    {"estimator": "nope"}, {"estimator": 3}, {"estimator": "compressed"},
    {"estimator": KSG(), "estimator_params": {"k": 2}}, {"estimator_params": {"k": 0}},
    {"estimator_params": {"bogus": 1}}, {"compression": "tsne"}, {"method": "pca"}, {"dim_x": 0}, {"dim_y": 1.5},
    {"hidden": (0,)}, {"epochs": 0}, {"lr": -1.0},
])
def test_bad_parameters(params):
    with pytest.raises((ValueError, TypeError)):
        Compressed(**params)


def test_unsupported_combination_is_reported():
    x = np.random.default_rng(0).integers(0, 3, size=(100, 1))
    with pytest.raises(ValueError, match="does not support"):
        get("compressed").estimate(x, x, discrete_x=True, discrete_y=True)  # KSG: no discrete pair


def test_randomized_pca_matches_the_exact_subspace():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(2000, 60)) * np.geomspace(10.0, 0.1, 60)  # decaying spectrum
    fast, info_fast = pca_compress(a, 4)
    exact, info_exact = pca_compress(a, 4, solver="full")
    assert fast.dtype == np.float64 and fast.shape == (2000, 4)
    assert np.allclose(np.abs(fast), np.abs(exact), atol=1e-3 * np.abs(exact).max())
    assert info_fast["explained_variance_ratio"] == pytest.approx(info_exact["explained_variance_ratio"],
                                                                  rel=1e-5)
    again, _ = pca_compress(a, 4)
    assert np.array_equal(fast, again)  # seeded
    t_codes, _ = pca_compress(torch.from_numpy(a), 4)
    assert isinstance(t_codes, torch.Tensor) and t_codes.device == torch.device("cpu")
    est = get("compressed", estimator="gaussian", dim_x=4)
    full = get("compressed", estimator="gaussian", dim_x=4, pca_solver="full")
    b = a[:, :2] + rng.normal(size=(2000, 2))
    assert est.estimate(a, b) == pytest.approx(full.estimate(a, b), abs=1e-6)


def test_twonn_dimension_of_embedded_cubes():
    rng = np.random.default_rng(2)
    for d in (2, 5):
        q, _ = np.linalg.qr(rng.normal(size=(30, d)))
        a = rng.uniform(size=(1500, d)) @ q.T  # a d-dim cube inside R^30
        assert twonn_dimension(a) == pytest.approx(d, abs=0.6)


def test_auto_dimension_follows_the_data(blobs2):
    task, x, y = blobs2
    est = get("compressed", dim_x="auto", dim_y="auto")
    value = est.estimate(x, y)
    for k in ("x", "y"):
        info = est.compression_[k]
        assert info["dim"] == math.ceil(info["intrinsic_dimension"]) and info["dim"] in (2, 3)
    assert est.compression_["x"]["intrinsic_dimension"] == pytest.approx(2.0, abs=0.5)
    assert value == pytest.approx(task.mutual_information, abs=0.35)  # PCA to 2 dims: lossy


def test_compression_is_reachable_through_mutual_information():
    import ibscope

    task = tasks.get("gaussian_split", dim=3, mi=1.0)
    x, y = task.sample(400, seed=0)
    v = ibscope.mutual_information(x, y, method="compressed", compression="autoencoder", dim_x=2,
                                   epochs=2, hidden=(8,))
    assert np.isfinite(v)
    with pytest.raises(TypeError, match="compression"):
        get("compressed", method="pca")  # the old name: the error lists the parameters


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pca_on_the_inputs_cuda_device():
    a = torch.randn(3000, 256, device="cuda", dtype=torch.float64)
    codes, _ = pca_compress(a, 4)
    assert codes.device.type == "cuda"
    exact, _ = pca_compress(a.cpu().numpy(), 4, solver="full")
    assert codes.shape == exact.shape


# ------------------------------------------------ one meaning per name: pca_ksg
def test_pca_ksg_is_one_configuration_everywhere(tmp_path, monkeypatch, capsys):
    """get, mutual_information, the CLI and the plane's default label build the same estimator."""
    import ibscope
    from ibscope import estimators
    from ibscope.cli import main
    from ibscope.models import MLP
    from ibscope.tracking import InformationPlane
    from ibscope.tracking._plane import _default_estimator

    built = []
    real_get = estimators.get
    monkeypatch.setattr(estimators, "get", lambda name, **p: built.append((name, real_get(name, **p))) or built[-1][1])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 12))
    y = x[:, :2] @ rng.standard_normal((2, 6)) + rng.standard_normal((300, 6))
    ref = real_get("pca_ksg")
    assert ref.name == "pca_ksg" and ref.get_params()["dim_x"] == 4 and ref.get_params()["k"] == 3
    v_api = ibscope.mutual_information(x, y, method="pca_ksg")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    assert main(["estimate", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--method", "pca_ksg"]) == 0
    out = capsys.readouterr().out
    assert "(pca_ksg)" in out and "dim_x=4, dim_y=4, k=3" in out
    assert float(out.split("I(X;Y) = ")[1].split()[0]) == pytest.approx(v_api, rel=1e-5)
    built = [e for name, e in built if name == "pca_ksg"]  # (the inner KSG is built by name too)
    assert len(built) >= 2 and all(type(e) is type(ref) and e.get_params() == ref.get_params() for e in built)
    # the plane's default is that registered name, and its table label is the name
    default = _default_estimator("bits")
    assert default.name == "pca_ksg" and default.get_params() == ref.get_params()
    net = MLP(12, (8, 3), 2, seed=0)
    plane = InformationPlane(net, torch.as_tensor(x, dtype=torch.float32), (x[:, 0] > 0).astype(int),
                             out_dir=tmp_path / "plane")
    rows = plane.record(0)
    assert set(rows["estimator"]) == {"pca_ksg"}
    meta = plane.metadata()["estimators"]
    assert list(meta) == ["pca_ksg"] and meta["pca_ksg"]["name"] == "pca_ksg"
    assert meta["pca_ksg"]["params"] == {k: v for k, v in ref.get_params().items()}


def test_pca_ksg_equals_the_former_plane_default_and_compressed_keeps_its_meaning(blobs2):
    task, x, y = blobs2
    x, y = x[:800], y[:800]
    old_default = get("compressed", estimator="ksg", compression="pca", dim_x=4, dim_y=4)
    assert get("pca_ksg").estimate(x, y) == pytest.approx(old_default.estimate(x, y), rel=1e-9)
    named = get("compressed")  # by name: dimensions chosen by TwoNN, unchanged
    assert named.get_params()["dim_x"] == "auto" and named.get_params()["estimator"] == "ksg"
    with pytest.raises(TypeError, match="Parameters of estimator 'pca_ksg'"):
        get("pca_ksg", compression="autoencoder")  # another configuration needs another name
    with pytest.raises(ValueError, match="'dim_x' parameter"):
        get("pca_ksg", dim_x="auto")
    with pytest.raises(ValueError, match="'k' parameter"):
        get("pca_ksg", k=0)


# ------------------------------------------- whitening, compressors fitted on separate data (issue 20)
def _anisotropic_pair(n: int, mi_nats: float, seed: int):
    """A 2+2-dim Gaussian pair of known MI seen through ill-conditioned, correlated mixings."""
    task = tasks.get("gaussian_split", dim=2, mi=mi_nats / math.log(2), mixing_seed=3)
    u, v = task.sample(n, seed=seed)
    a = np.array([[1.0, 0.99], [0.0, 0.02]])  # columns nearly collinear: per-column scaling cannot undo it
    return u @ a, v @ a.T, task.mutual_information_nats


def test_whiten_codes_gives_identity_covariance_and_keeps_the_input_kind():
    x, _, _ = _anisotropic_pair(3000, 1.0, 0)
    w = whiten_codes(x)
    assert isinstance(w, np.ndarray) and w.shape == x.shape
    np.testing.assert_allclose(w.mean(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(np.cov(w, rowvar=False), np.eye(2), atol=1e-8)
    wt = whiten_codes(torch.as_tensor(x))
    assert torch.is_tensor(wt) and np.allclose(wt.numpy(), w)
    with pytest.raises(ValueError, match="2-D"):
        whiten_codes(np.ones(5))


def test_whitened_kl5_recovers_the_mi_that_per_column_scaling_misses():
    # ground truth 2 nats; KL k=5 on the raw (per-column standardized) anisotropic codes is far off,
    # whitening (an invertible linear map per variable: the MI is unchanged) puts it within 0.15 nat
    x, y, truth = _anisotropic_pair(3000, 2.0, 1)
    kw = {"estimator": "kl", "estimator_params": {"k": 5}, "dim_x": None, "dim_y": None, "unit": "nats"}
    raw = Compressed(**kw).estimate(x, y)
    white = Compressed(**kw, whiten=True)
    value = white.estimate(x, y)
    assert abs(value - truth) < 0.15
    assert abs(raw - truth) > 2 * abs(value - truth)
    assert white.compression_["x"]["whitened"] and white.compression_["y"]["whitened"]
    # labels are never whitened
    labels = (x[:, 0] > 0).astype(np.int64)
    est = Compressed(**kw, whiten=True)
    est.estimate(x, labels, discrete_y=True)
    assert "y" not in est.compression_


def test_fit_pca_encodes_new_data_with_the_fitted_map(blobs2):
    task, x, y = blobs2
    train = np.vstack(task.sample(1500, seed=11))
    fitted = fit_pca(train, 2)
    assert 0.0 < fitted.explained_variance_ratio < 1.0
    codes = fitted.encode(x)
    np.testing.assert_allclose(codes, (x - train.mean(axis=0)) @ fitted.components.numpy(), atol=1e-10)
    ref, _ = pca_compress(train, 2, solver="full")  # the same subspace as the exact PCA of the fitting data
    proj = fitted.encode(train)
    np.testing.assert_allclose(np.abs(proj), np.abs(ref), atol=1e-8)
    est = Compressed(estimator="ksg", compressor_x=fitted, compressor_y=fitted, unit="bits")
    value = est.estimate(x, y)
    assert est.compression_["x"]["fitted_apart"] and est.compression_["x"]["dim"] == 2
    # a lower bound (data processing) up to KSG's bias; 2-D PCA of the blob images keeps about 2/3 of it
    assert 0.4 * task.mutual_information < value < task.mutual_information + TOL
    with pytest.raises(ValueError, match="'dim'"):
        fit_pca(train, 0)
    with pytest.raises(ValueError, match="columns"):
        fitted.encode(x[:, :10])


def test_conv_autoencoder_architecture_history_and_stopping_rule(blobs2):
    task, x, y = blobs2
    train = np.vstack(task.sample(300, seed=5))
    ae = fit_autoencoder(train, 2, channels=(4, 8), dense=16, max_epochs=30, patience=2,
                         min_improvement=0.99, batch_size=64, seed=0)
    # the stopping rule: a 99% improvement over 2 epochs never happens, so it stops after epoch 3
    assert ae.converged and ae.epochs == 3 and [h["epoch"] for h in ae.history] == [1, 2, 3]
    assert ae.reconstruction_mse == pytest.approx(min(h["val_mse"] for h in ae.history))
    kinds = {type(m) for m in ae.model.modules()}
    assert {nn.Conv2d, nn.BatchNorm2d, nn.LeakyReLU, nn.Tanh} <= kinds
    codes = ae.encode(x)
    assert codes.shape == (x.shape[0], 2) and np.all(np.abs(codes) < 1.0)  # tanh bottleneck
    capped = fit_autoencoder(train, 2, channels=(4,), dense=8, max_epochs=2, patience=5, batch_size=64)
    assert not capped.converged and capped.epochs == 2  # max_epochs ended it
    again = fit_autoencoder(train, 2, channels=(4,), dense=8, max_epochs=2, patience=5, batch_size=64)
    np.testing.assert_allclose(again.encode(x), capped.encode(x), atol=1e-6)  # seeded (CPU)
    est = Compressed(estimator="kl", estimator_params={"k": 5}, compressor_x=ae, compressor_y=ae)
    est.estimate(x[:500], y[:500])
    info = est.compression_["x"]
    assert info["ae_epochs"] == 3 and info["fitted_apart"] and len(info["ae_history"]) == 3


@pytest.mark.parametrize("kwargs, match", [
    ({"architecture": "resnet"}, "'architecture'"), ({"max_epochs": 0}, "'max_epochs'"),
    ({"patience": 1.5}, "'patience'"), ({"val_fraction": 1.0}, "'val_fraction'"),
    ({"min_improvement": -0.1}, "'min_improvement'"), ({"channels": (0,)}, "'hidden'"),
])
def test_fit_autoencoder_bad_parameters_are_named(kwargs, match):
    train = np.random.default_rng(0).random((300, 64))
    with pytest.raises(ValueError, match=match):
        fit_autoencoder(train, 2, **kwargs)


def test_fit_autoencoder_refuses_non_square_images_and_bad_compressors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="square"):
        fit_autoencoder(rng.random((300, 60)), 2)
    assert fit_autoencoder(rng.random((300, 60)), 2, architecture="mlp", hidden=(8,), max_epochs=1).epochs == 1
    with pytest.raises((TypeError, ValueError), match="compressor_x"):
        Compressed(compressor_x="pca")
    with pytest.raises((TypeError, ValueError), match="whiten"):
        Compressed(whiten="yes")


class _Identity(nn.Module):
    """encode / decoder are the identity: the augmented forward pass shows its input and target."""

    def encode(self, x):
        return x

    def decoder(self, z):
        return z


def test_zoom_augmentation_and_training_noise_are_drawn_afresh():
    from ibscope.estimators._compressed import _augmented_forward

    side = 16
    images = np.asarray(tasks.get("blobs_image", latent_dim=2, mi=1.0).sample(64, seed=3)[0], dtype=np.float32)
    mean, scale = torch.as_tensor(images.mean(0)), float(images.std())
    batch = (torch.as_tensor(images) - mean) / scale
    gen = torch.Generator().manual_seed(0)
    out, target = _augmented_forward(_Identity(), batch, mean, scale, side, 0.2, 0.0, 0.0, gen)
    raw = target * scale + mean
    # zooming in by 1/s per axis, s in [0.8, 1], enlarges each blob's mass by 1/(s_x s_y) in [1, 1.5625]
    ratio = raw.sum(1) / torch.as_tensor(images).sum(1)
    assert float(ratio.min()) > 0.98 and float(ratio.max()) < 1.6 and float(ratio.mean()) > 1.1
    assert torch.equal(out, target)  # no noise: the target is the (zoomed) input itself
    _, again = _augmented_forward(_Identity(), batch, mean, scale, side, 0.2, 0.0, 0.0, gen)
    assert float((again - target).abs().max()) > 0.1  # a fresh zoom every call (every minibatch)
    # no zoom: the target is the batch; the noise is on the input (units of the data) and on the code
    out, target = _augmented_forward(_Identity(), batch, mean, scale, side, 0.0, 0.1, 0.0, gen)
    assert torch.equal(target, batch)
    assert float(((out - target) * scale).std()) == pytest.approx(0.1, rel=0.05)
    out, target = _augmented_forward(_Identity(), batch, mean, scale, side, 0.0, 0.0, 0.02, gen)
    assert float((out - target).std()) == pytest.approx(0.02, rel=0.05)


def test_fit_autoencoder_paper_training_options(blobs2):
    task, x, _ = blobs2
    train = np.vstack(task.sample(300, seed=5))
    kw = dict(channels=(4,), dense=8, batch_size=64, seed=0)
    plain = fit_autoencoder(train, 2, max_epochs=2, patience=None, **kw)
    paper = fit_autoencoder(train, 2, max_epochs=2, patience=None, loss="mae", zoom=0.2, input_noise=0.1,
                            code_noise=0.02, **kw)
    assert "train_mae" in paper.history[0] and "train_mse" in plain.history[0]
    assert np.abs(paper.encode(x[:200]) - plain.encode(x[:200])).max() > 1e-3  # the options train differently
    # patience=None: a fixed number of epochs, whatever the held-out error does
    fixed = fit_autoencoder(train, 2, max_epochs=6, patience=None, min_improvement=0.99, **kw)
    assert fixed.epochs == 6 and not fixed.converged
    # lr_decays: the stopping rule (never met at a 99% improvement over 2 epochs) first divides the lr by 10
    decayed = fit_autoencoder(train, 2, max_epochs=30, patience=2, min_improvement=0.99, lr_decays=2, **kw)
    assert decayed.converged and decayed.epochs == 9
    assert [h["lr"] for h in decayed.history] == pytest.approx([1e-3] * 3 + [1e-4] * 3 + [1e-5] * 3)


@pytest.mark.parametrize("kwargs, match", [
    ({"loss": "l1"}, "'loss'"), ({"zoom": 1.0}, "'zoom'"), ({"zoom": -0.1}, "'zoom'"),
    ({"input_noise": -1.0}, "'input_noise'"), ({"code_noise": float("nan")}, "'code_noise'"),
    ({"lr_decays": -1}, "'lr_decays'"), ({"patience": 0}, "'patience'"), ({"lr": 0.0}, "'lr'"),
    ({"zoom": 0.2, "architecture": "mlp"}, "'zoom'"),
])
def test_fit_autoencoder_bad_training_options_are_named(kwargs, match):
    train = np.random.default_rng(0).random((300, 64))
    with pytest.raises(ValueError, match=match):
        fit_autoencoder(train, 2, **kwargs)
