"""Seeds as a batch dimension: BatchedMLP + SeedBatches train every seed as it trains alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from ibscope.data import train_test_split, twelve_bit
from ibscope.models import MLP, BatchedMLP, SeedBatches, batched_cross_entropy
from ibscope.training import BatchLoss, fit

SEEDS = [0, 1, 2]


def _setup(activation="tanh"):
    x, y = twelve_bit()
    x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.int64)
    splits = [train_test_split(len(y), train_fraction=0.5, seed=s, stratify=y.numpy()).train for s in SEEDS]
    nets = [MLP(12, (10, 7, 5), 2, activation=activation, seed=s) for s in SEEDS]
    return x, y, splits, nets


def _flat(net):
    return torch.cat([p.detach().flatten() for p in net.parameters()])


@pytest.mark.parametrize("opt, activation", [("adam", "tanh"), ("sgd", "relu")])
def test_batched_training_equals_each_seed_alone(opt, activation):
    x, y, splits, nets = _setup(activation)
    make = (lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3)) if opt == "adam" else \
        (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3))
    batched = BatchedMLP(nets)
    data = SeedBatches(torch.stack([x[s] for s in splits]), torch.stack([y[s] for s in splits]), 256,
                       [s + 1_000_003 for s in SEEDS])
    fit(batched, BatchLoss(lambda m, b: batched_cross_entropy(m(b[0]), b[1])), data, make(batched.parameters()),
        epochs=6, progress=False)
    for i, (seed, split, net) in enumerate(zip(SEEDS, splits, nets, strict=True)):
        fit(net, nn.CrossEntropyLoss(), (x[split], y[split]), make(net.parameters()), epochs=6, batch_size=256,
            seed=seed + 1_000_003, progress=False)
        alone, together = _flat(net), _flat(batched.unbatch(i))
        assert (alone - _flat(MLP(12, (10, 7, 5), 2, activation=activation, seed=seed))).abs().max() > 1e-2  # it trained
        torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)  # float reassociation only
        outs = batched.layer_outputs(x)
        net.eval()
        torch.testing.assert_close(outs["output"][i], torch.softmax(net(x), -1), rtol=1e-5, atol=1e-6)


def test_batched_checkpoint_resume(tmp_path):
    x, y, splits, nets = _setup()
    xs, ys = torch.stack([x[s] for s in splits]), torch.stack([y[s] for s in splits])
    loss = BatchLoss(lambda m, b: batched_cross_entropy(m(b[0]), b[1]))
    ref = BatchedMLP(nets)
    fit(ref, loss, SeedBatches(xs, ys, 256, SEEDS), torch.optim.Adam(ref.parameters(), 1e-2), epochs=6,
        progress=False)
    b = BatchedMLP(nets)
    fit(b, loss, SeedBatches(xs, ys, 256, SEEDS), torch.optim.Adam(b.parameters(), 1e-2), epochs=3,
        progress=False, checkpoint_dir=tmp_path)
    b2 = BatchedMLP(nets)
    state = fit(b2, loss, SeedBatches(xs, ys, 256, SEEDS), torch.optim.Adam(b2.parameters(), 1e-2), epochs=6,
                progress=False, checkpoint_dir=tmp_path)
    assert state.resumed
    torch.testing.assert_close(_flat(b2), _flat(ref), rtol=0, atol=0)


def test_bad_input():
    x, y, splits, nets = _setup()
    with pytest.raises(TypeError, match="'nets'"):
        BatchedMLP([nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="same widths"):
        BatchedMLP([nets[0], MLP(12, (10, 7), 2, seed=0)])
    with pytest.raises(ValueError, match="noise"):
        BatchedMLP([MLP(12, (4,), 2, noise_std=0.1)])
    with pytest.raises(ValueError, match="input must be"):
        BatchedMLP(nets)(torch.zeros(2, 5, 12))
    with pytest.raises(ValueError, match="SeedBatches needs"):
        SeedBatches(torch.zeros(3, 10, 12), torch.zeros(3, 9, dtype=torch.long), 4, SEEDS)


@pytest.mark.slow  # ~11 s; test_runner_trains_the_seeds_batched_by_default stays fast
def test_run_seeds_equals_run_seed_per_seed(tmp_path):
    from ibscope.experiments import _tishby
    from ibscope.experiments.runner import resolve_config

    cfg = resolve_config("tishby", profile="test", overrides={
        "epochs": 30, "n_snapshots": 4, "estimators": {"binning": {"n_bins": 30}, "kde_upper": {}}})
    batched = _tishby.run_seeds(cfg, [3, 4], tmp_path / "batch")
    for seed in (3, 4):
        alone = _tishby.run_seed(cfg, seed, tmp_path / f"seed_{seed}")
        together = batched[seed]
        assert list(together.columns) == list(alone.columns) and len(together) == len(alone) > 0
        assert (together[["epoch", "layer", "estimator"]].to_numpy() == alone[["epoch", "layer", "estimator"]].to_numpy()).all()
        for col in ("train_loss", "test_loss", "train_acc", "test_acc"):
            np.testing.assert_allclose(together[col], alone[col], rtol=1e-5, atol=1e-6, err_msg=col)
        kde = (alone["estimator"] == "kde_upper").to_numpy()
        for col in ("i_xt", "i_ty"):  # KDE is continuous in the activations: float tolerance
            np.testing.assert_allclose(together[col][kde], alone[col][kde], rtol=1e-5, atol=1e-6, err_msg=col)
            # binning is not: an activation within 1e-7 of a bin edge may land in the neighbouring bin,
            # moving the entropy by at most ~2 log2(N) / N bits (N = 4096 samples); most rows agree exactly
            diff = np.abs(together[col][~kde].to_numpy() - alone[col][~kde].to_numpy())
            assert diff.max() < 2 * np.log2(4096) / 4096 * 2 and (diff < 1e-9).mean() >= 0.85, (col, diff)
    # a second call finds everything done and returns the same rows
    again = _tishby.run_seeds(cfg, [3, 4], tmp_path / "batch")
    pd.testing.assert_frame_equal(again[3], batched[3])


def test_runner_trains_the_seeds_batched_by_default(tmp_path):
    from ibscope.experiments import runner

    over = {"epochs": 20, "n_snapshots": 3, "estimators": {"kde_upper": {}}}
    a = runner.run("tishby", seeds=[0, 1], out_dir=tmp_path / "a", profile="test", overrides=over,
                   progress=False, report=False)
    b = runner.run("tishby", seeds=[0, 1], out_dir=tmp_path / "b", profile="test", overrides=over,
                   progress=False, report=False, batched=False)
    assert len(list(a.glob("batch_*/checkpoint.pt"))) == 1 and not list(b.glob("batch_*"))
    ra, rb = (pd.read_parquet(d / "results.parquet").drop(columns=["run_id", "seconds"]) for d in (a, b))
    assert ra[["seed", "epoch", "layer"]].equals(rb[["seed", "epoch", "layer"]])
    for col in ("i_xt", "i_ty", "train_loss", "test_acc"):
        np.testing.assert_allclose(ra[col], rb[col], rtol=1e-5, atol=1e-6, err_msg=col)
    # a rerun finds every seed finished: nothing is trained again
    before = {p: p.stat().st_mtime_ns for p in a.glob("seed_*/result.parquet")}
    runner.run("tishby", seeds=[0, 1], out_dir=a, profile="test", overrides=over, progress=False, report=False)
    assert {p: p.stat().st_mtime_ns for p in a.glob("seed_*/result.parquet")} == before


def test_init_scale_and_estimator_labels_in_both_paths(tmp_path):
    """init_scale scales the initial weights of both paths alike; a labelled estimator is a second binning."""
    from ibscope.experiments import _tishby
    from ibscope.experiments._tishby_common import make_net
    from ibscope.experiments.runner import resolve_config

    est = {"binning": {"n_bins": 30}, "binning_snapshot": {"estimator": "binning", "n_bins": 30, "value_range": None}}
    cfg = resolve_config("tishby", profile="test", overrides={
        "epochs": 8, "n_snapshots": 3, "activation": "relu", "init": "he", "init_scale": 0.25, "estimators": est})
    ref = resolve_config("tishby", profile="test", overrides={"activation": "relu", "init": "he"})
    a, b = make_net(cfg, 12, 5), make_net(ref, 12, 5)
    torch.testing.assert_close(a.fc1.weight, 0.25 * b.fc1.weight)
    torch.testing.assert_close(a.logits.weight, 0.25 * b.logits.weight)
    assert torch.equal(a.fc1.bias, b.fc1.bias)
    batched = _tishby.run_seeds(cfg, [0, 1], tmp_path / "batch")
    alone = _tishby.run_seed(cfg, 1, tmp_path / "seed_1")
    assert set(alone["estimator"]) == {"binning", "binning_snapshot"}
    np.testing.assert_allclose(batched[1]["train_loss"], alone["train_loss"], rtol=1e-5)
    fixed, snap = (alone[alone["estimator"] == e].set_index(["epoch", "layer"])["i_xt"]
                   for e in ("binning", "binning_snapshot"))
    assert not np.allclose(fixed.to_numpy(), snap.loc[fixed.index].to_numpy())  # the two binnings differ
    for bad, match in (({"init_scale": 0.0}, "init_scale"), ({"init_scale": True}, "init_scale"),
                       ({"estimators": {"x": {"estimator": "ksg"}}}, "information plane"),
                       ({"estimators": {"x": {"estimator": 3}}}, "must be a name"),
                       ({"estimators": {"binning": 5}}, "mapping"), ({"layers": ["hidden9"]}, "layers"),
                       ({"layers": []}, "layers")):
        with pytest.raises(ValueError, match=match):
            resolve_config("tishby", profile="test", overrides=bad)


def test_layers_limits_the_estimated_layers_in_both_paths(tmp_path):
    from ibscope.experiments import _tishby
    from ibscope.experiments.runner import resolve_config

    cfg = resolve_config("tishby", profile="test", overrides={"epochs": 4, "n_snapshots": 2, "layers": ["hidden2"],
                                                               "estimators": {"binning": {}}})
    alone = _tishby.run_seed(cfg, 0, tmp_path / "one")
    batched = _tishby.run_seeds(cfg, [0, 1], tmp_path / "batch")
    for df in (alone, batched[0], batched[1]):
        assert set(df["layer"]) == {"hidden2"} and set(df["layer_index"]) == {2}


def test_features_first_layout_and_loss_shapes():
    """The forward pass runs features first (issue 21): logits are a view of an (S, C, B) buffer,
    the loss reads it without a copy, and every seed's logits are still its own MLP's."""
    x, y, splits, nets = _setup()
    batched = BatchedMLP(nets)
    logits = batched(x[:64])
    assert logits.shape == (3, 64, 2) and logits.transpose(1, 2).is_contiguous()
    for i, net in enumerate(nets):
        torch.testing.assert_close(logits[i], net(x[:64]), rtol=1e-5, atol=1e-6)
    target = torch.stack([y[:64]] * 3)
    want = sum(nn.functional.cross_entropy(net(x[:64]), y[:64]) for net in nets)
    torch.testing.assert_close(batched_cross_entropy(logits, target), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="batched_cross_entropy"):
        batched_cross_entropy(logits, target[:, :10])
    with pytest.raises(ValueError, match="batched_cross_entropy"):
        batched_cross_entropy(logits[0], target[0])
