"""Tests of the ntk experiment (contract, finite networks vs infinite width) and the MNIST reader."""

from __future__ import annotations

import dataclasses
import gzip
import struct

import numpy as np
import pytest
import torch

from ibscope.data._mnist import load_mnist_idx, read_idx
from ibscope.experiments import get
from ibscope.ntk import kernels

ntk_exp = get("ntk")


def _cfg(**kw):
    return dataclasses.replace(ntk_exp.Config(), **{**ntk_exp.PROFILES["test"], **kw})


def test_run_seed_contract_resume_and_plot(tmp_path):
    cfg = _cfg()
    df = ntk_exp.run_seed(cfg, 0, tmp_path)
    assert {"seed", "t", "quantity", "value", "unit", "source", "dataset", "split"} <= set(df.columns)
    assert set(df["source"]) == {"infinite", "finite"}
    assert np.isfinite(df["value"]).all()
    info = df[df["quantity"].isin(["ixz_lower", "ixz_upper", "kl_prior", "gibbs_loss", "bayes_loss"])]
    assert (info["unit"] == "bits").all() and (info["value"] >= 0).all()
    wide = info.pivot_table(index=["split", "t"], columns="quantity", values="value")
    assert (wide["ixz_lower"] <= wide["ixz_upper"] + 1e-9).all()
    assert (wide["bayes_loss"] <= wide["gibbs_loss"] + 1e-9).all()
    # finite networks start at the linearized prediction and follow it closely
    fin = df[(df["source"] == "finite") & (df["quantity"] == "lin_deviation")]
    assert fin[fin["t"] == 0]["value"].max() == pytest.approx(0.0, abs=1e-12)
    assert fin["value"].max() < 0.5
    # training lowers the finite networks' loss like the infinite ensemble's
    mse = df[(df["quantity"] == "mse_loss") & (df["split"] == "train")]
    for source in ("finite", "infinite"):
        s = mse[mse["source"] == source].sort_values("t")["value"].to_numpy()
        assert s[-1] < s[0]
    # resume: the stored file is reused, not recomputed
    stored = list(tmp_path.glob("ntk_seed0_*.parquet"))
    assert len(stored) == 1
    mtime = stored[0].stat().st_mtime_ns
    again = ntk_exp.run_seed(cfg, 0, tmp_path)
    assert stored[0].stat().st_mtime_ns == mtime and len(again) == len(df)
    paths = ntk_exp.plot(df, tmp_path)
    assert paths and all(p.exists() and p.suffix == ".png" for p in paths)


def test_finite_fisher_trace_matches_infinite_width():
    cfg = _cfg(width=2048, depth=2, activation="relu", weight_std=1.4, bias_std=0.1)
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.uniform(size=(6, 8)))
    gen = torch.Generator().manual_seed(0)
    params = ntk_exp._init_ensemble(2, [8, 2048, 2048, 3], gen, "cpu")
    emp = ntk_exp._empirical_fisher(params, x, cfg)
    exact = 3 * kernels(x, depth=2, activation="relu", weight_std=1.4, bias_std=0.1, diagonal=True).ntk.mean()
    assert emp == pytest.approx(float(exact), rel=0.04)


def test_bad_config(tmp_path):
    with pytest.raises(ValueError, match="dataset"):
        ntk_exp.run_seed(_cfg(datasets=("cifar-10",)), 0, tmp_path)
    with pytest.raises(ValueError, match="activation"):
        ntk_exp.run_seed(_cfg(activation="tanh"), 0, tmp_path)
    with pytest.raises(ValueError, match="n must be"):
        ntk_exp.load_dataset("digits-5000", 0)


def test_idx_reader_roundtrip_and_errors(tmp_path, monkeypatch):
    imgs = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    labels = np.array([3, 7], dtype=np.uint8)
    d = tmp_path / "mnist"
    d.mkdir()
    with gzip.open(d / "t10k-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 28, 28) + imgs.tobytes())
    with open(d / "t10k-labels-idx1-ubyte", "wb") as fh:
        fh.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 2) + labels.tobytes())
    monkeypatch.setenv("IBSCOPE_DATA", str(tmp_path))
    x, y = load_mnist_idx()
    np.testing.assert_array_equal(x, imgs)
    np.testing.assert_array_equal(y, [3, 7])
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="IDX"):
        read_idx(bad)
    with pytest.raises(FileNotFoundError, match="IBSCOPE_DATA"):
        load_mnist_idx(tmp_path / "nowhere")


def test_config_yaml_matches_config_fields():
    import pathlib

    import yaml

    path = pathlib.Path(__file__).resolve().parents[1] / "configs" / "ntk.yaml"
    doc = yaml.safe_load(path.read_text())
    assert doc["experiment"] == "ntk"
    fields = {f.name for f in dataclasses.fields(ntk_exp.Config)}
    assert set(doc["config"]) == fields
    cfg = ntk_exp.Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in doc["config"].items()})
    ntk_exp._check_config(cfg)


def test_seed_draws_the_data_subsets():
    """Seeds are replicates over data subsets: the same seed the same points, another seed others."""
    from ibscope.experiments._ntk import load_dataset

    a, again, b = load_dataset("digits-40", 0), load_dataset("digits-40", 0), load_dataset("digits-40", 1)
    assert np.array_equal(a["x_train"], again["x_train"]) and np.array_equal(a["labels_test"], again["labels_test"])
    assert not np.array_equal(a["x_train"], b["x_train"])
    # train and test points never overlap (no image is repeated across the two)
    rows = {r.tobytes() for r in a["x_train"]}
    assert len(rows & {r.tobytes() for r in a["x_test"]}) <= 1  # digits holds a few exact duplicate images
