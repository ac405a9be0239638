"""The information-Lagrangian experiment on MNIST-8k/2k with the small CNN (issue 20), and its claims."""

import re

import numpy as np
import pandas as pd
import pytest
import torch

from ibscope.data import data_dir
from ibscope.experiments import _lagrangian as L
from ibscope.experiments.runner import resolve_config

HAVE_MNIST = (data_dir() / "mnist").is_dir() and any((data_dir() / "mnist").glob("t10k-images-idx3-ubyte*"))
needs_mnist = pytest.mark.skipif(not HAVE_MNIST, reason="MNIST test images not found (IBSCOPE_DATA / ../shared/data)")

# a CNN small enough for seconds: one 3x3 stride-2 convolution of 4 channels, a dense layer of 8 units
TINY_CNN = {"model": "cnn", "cnn_channels": [4], "width": 8, "epochs": 1, "n_train": 200, "batch_size": 50,
            "lagrangian_steps": 20, "lagrangian_batch_size": 100}


@pytest.mark.parametrize("key, value", [("dataset", "cifar10"), ("model", "resnet"), ("cnn_channels", [4, 0]),
                                        ("cnn_channels", []), ("cnn_channels", [2.5])])
def test_bad_dataset_model_and_channels_are_refused_by_name(key, value):
    with pytest.raises(ValueError, match=f"'{key}'.*Got {re.escape(repr(value))}"):  # the setting and its value
        resolve_config("lagrangian", profile="test", overrides={key: value})
    with pytest.raises(ValueError, match=key):  # also from run_seed's dict config, before any work
        L.run_seed({key: value}, 0, "/nonexistent")


def test_cnn_needs_depth_one_and_mnist_pool_is_8000():
    with pytest.raises(ValueError, match="depth"):
        resolve_config("lagrangian", overrides={"model": "cnn", "depth": 2})
    with pytest.raises(ValueError, match="n_train.*8000"):
        resolve_config("lagrangian", overrides={"dataset": "mnist", "n_train": 8001})
    cfg = resolve_config("lagrangian", overrides={"dataset": "mnist", "n_train": 8000, "cnn_channels": [8, 16]})
    assert cfg.cnn_channels == (8, 16)  # a YAML list as a tuple
    with pytest.raises(ValueError, match="n_train"):  # digits keep their pool (0.6 x 1797)
        resolve_config("lagrangian", overrides={"n_train": 2000})


def test_default_config_is_the_digits_mlp():
    cfg = L.Config()
    assert (cfg.dataset, cfg.model) == ("digits", "mlp")
    m = L._model(cfg, 0)
    assert m.fc1.in_features == 64 and m.fc1.out_features == 64


def test_shift_works_on_28x28_images():
    img = np.zeros((5, 28, 28), dtype=np.float32)
    img[:, 10, 20] = 1.0
    out = L.shift_images(img.reshape(5, 784), np.arange(5), 2).reshape(5, 28, 28)
    assert out[0, 10, 20] == 1 and out[1, 10, 22] == 1 and out[2, 10, 18] == 1
    assert out[3, 12, 20] == 1 and out[4, 8, 20] == 1 and out.sum() == 5
    with pytest.raises(ValueError, match="square"):
        L.shift_images(np.zeros((2, 50)), np.zeros(2, dtype=int), 1)


def test_cnn_on_8x8_digits_trains_and_the_lagrangian_fits(tmp_path):
    """No MNIST needed: the CNN takes any square image; per-layer names as ConvNet's."""
    df = L.run_seed(TINY_CNN, 0, tmp_path)
    fin = df[df.method == "final"]
    iw = fin[fin.quantity == "info_weights"].set_index("layer").value
    assert set(iw.index) == {"total", "conv1", "fc2", "logits"}
    assert iw.total == pytest.approx(iw.drop("total").sum(), rel=1e-9) and (iw > 0).all()
    assert (fin[fin.quantity == "info_weights"].unit == "bits").all()
    conv = fin[fin.quantity == "lagrangian_converged"].value
    assert len(conv) == 1 and conv.iloc[0] in (0.0, 1.0)
    assert (df[df.quantity == "lagrangian_kl"].method == "fit").sum() == 20


def test_cnn_nuisance_layer_is_the_dense_layer():
    """I(T; nuisance) of the CNN reads its dense layer's activation (width units, after the ReLU)."""
    cfg = L.Config(model="cnn", cnn_channels=(4, 6), width=12, nuisance="shift")
    model = L._model(cfg, 0)
    name, module = L._last_hidden(cfg, model)
    t = L._hidden(model, torch.rand(7, 64), module)
    assert name == "hidden3" and t.shape == (7, 12) and (t >= 0).all()
    assert L._layer_names(cfg, model) == {"1": "conv1", "3": "conv2", "6": "fc3", "8": "logits"}


def test_run_seeds_with_the_cnn_takes_the_one_seed_path(tmp_path, monkeypatch):
    import ibscope.models as models

    def no_batch(*a, **k):
        raise AssertionError("BatchedMLP built for model 'cnn'")

    monkeypatch.setattr(models, "BatchedMLP", no_batch)
    got = L.run_seeds(TINY_CNN, [0, 1], tmp_path / "batch")
    alone = L.run_seed(TINY_CNN, 1, tmp_path / "alone")
    assert sorted(got) == [0, 1]
    assert (tmp_path / "batch" / "seed_1").is_dir()
    pd.testing.assert_frame_equal(got[1].reset_index(drop=True), alone.reset_index(drop=True),
                                  check_exact=False, rtol=1e-10)


@needs_mnist
def test_mnist_path_loads_8k_2k_as_ib_compare_does():
    from ibscope.data import mnist_8k_2k

    d = L._load(L.Config(dataset="mnist"), 3)
    assert d["x_train"].shape == (8000, 784) and d["x_test"].shape == (2000, 784)
    assert d["x_train"].dtype == np.float32 and d["y_train"].dtype == np.int64
    ref = mnist_8k_2k(seed=3)
    np.testing.assert_array_equal(d["x_test"], ref["x_test"])
    np.testing.assert_array_equal(d["y_train"], ref["y_train"])
    sub = L._load(L.Config(dataset="mnist", n_train=500), 3)
    assert abs(len(sub["y_train"]) - 500) <= 5 and sub["x_train"].shape[1] == 784  # stratified: rounded per class
    assert sub["x_test"].shape == (2000, 784)
    assert L._model(L.Config(dataset="mnist"), 0).fc1.in_features == 784


@needs_mnist
def test_mnist_label_noise_flips_train_labels_only():
    clean = L._load(L.Config(dataset="mnist", n_train=1000), 0)
    noisy = L._load(L.Config(dataset="mnist", n_train=1000, label_noise=0.4), 0)
    np.testing.assert_array_equal(clean["x_train"], noisy["x_train"])
    np.testing.assert_array_equal(clean["y_test"], noisy["y_test"])
    np.testing.assert_array_equal(clean["x_test"], noisy["x_test"])
    assert (clean["y_train"] != noisy["y_train"]).mean() == pytest.approx(0.4)


@needs_mnist
def test_mnist_cnn_trains_and_the_lagrangian_fits(tmp_path):
    cfg = {**TINY_CNN, "dataset": "mnist", "cnn_channels": [4, 8], "width": 16, "label_noise": 0.2, "epochs": 3,
           "batch_size": 20}
    df = L.run_seed(cfg, 0, tmp_path)
    fin = df[(df.method == "final") & (df.layer == "total")].set_index("quantity").value
    assert fin.test_acc > 0.3  # well above chance (0.1) after 30 steps on 200 images
    assert np.isfinite(fin.info_weights) and fin.info_weights > 0
    assert set(df[df.quantity == "info_weights"].layer) == {"total", "conv1", "conv2", "fc3", "logits"}
    # the stratified subset rounds per class, as on digits: n_train is the size actually trained on
    assert df.n_train.nunique() == 1 and abs(int(df.n_train.iloc[0]) - 200) <= 5 and (df.label_noise == 0.2).all()


def test_mnist_claims_load_next_to_the_digits_ones():
    from ibscope.reproduce import catalogue
    from ibscope.reproduce._run import run_spec

    claims = catalogue()
    for cid, digits, run in (("achille-iw-label-noise-mnist", "achille-iw-label-noise", "label_noise"),
                             ("achille-iw-train-size-mnist", "achille-iw-train-size", "train_size")):
        c, d = claims[cid], claims[digits]
        assert (c.statistic, c.statistic_params, c.rule) == (d.statistic, d.statistic_params, d.rule)
        assert c.runs[run].grid.keys() == d.runs[run].grid.keys()
        cfg = c.runs[run].config
        assert cfg["dataset"] == "mnist" and cfg["model"] == "cnn"
        assert c.follows and any("MNIST-8k/2k" in x for x in c.deviations)
        assert c.seeds("quick") >= 5 and c.seeds("paper") >= 10
        for profile in ("tiny", "quick", "paper"):
            spec = run_spec(c, run, profile, 2)
            resolved = resolve_config(spec.experiment, profile=spec.profile, overrides=spec.config)
            assert resolved.dataset == "mnist" and resolved.model == "cnn"


def test_cli_lists_the_mnist_claims(capsys):
    from ibscope.cli import main

    main(["reproduce", "--list"])
    out = capsys.readouterr().out
    assert "achille-iw-label-noise-mnist" in out and "achille-iw-train-size-mnist" in out


@pytest.mark.slow
@needs_mnist
def test_label_noise_mnist_claim_tiny_profile(tmp_path):
    from ibscope.reproduce import reproduce

    torch.set_num_threads(1)
    res = reproduce("achille-iw-label-noise-mnist", profile="tiny", out=tmp_path, workers=0, progress=False)
    assert res.verdict.verdict in ("reproduced", "not reproduced", "inconclusive", "underpowered")
    assert res.verdict.n <= 12
