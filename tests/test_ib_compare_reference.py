"""ib_compare's small CNN and the reference PIB recipe (Wang et al. 2022's protocol), on tiny settings."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch import nn

from ibscope.data import data_dir
from ibscope.experiments import _ib_compare as ibc

HAVE_MNIST = (data_dir() / "mnist").is_dir() and any((data_dir() / "mnist").glob("t10k-images-idx3-ubyte*"))

# digits (8 x 8 images, no data files needed) with the reference recipe, a few epochs
TINY = {"dataset": "digits", "model": "cnn", "cnn_channels": (4,), "cnn_dense": 8, "pib_recipe": "reference",
        "n_train": 300, "batch_size": 32, "lr": 1e-3, "pretrain_epochs": 2, "epochs": 3, "prior_epochs": 1,
        "pib_examples": 16, "iiw_examples": 64, "lr_milestones": (2,), "pretrain_lr": 1e-2}


def _value(df: pd.DataFrame, quantity: str) -> float:
    return float(df.loc[df["quantity"] == quantity, "value"].item())


@pytest.mark.slow  # ~20-60 s: every method through the two-phase recipe
def test_reference_recipe_tiny_every_method(tmp_path):
    frames = {m: ibc.run_seed(ibc.Config(method=m, **TINY), 0, tmp_path) for m in ibc.REFERENCE_METHODS}
    for m, df in frames.items():
        assert (df["method"] == m).all()
        assert list(df["quantity"]) == ["test_accuracy", "train_accuracy", "iiw", "pretrain_epochs_run",
                                        "epochs_run"]
        assert list(df["unit"]) == ["fraction", "fraction", "bits", "count", "count"]
        assert 0.1 < _value(df, "test_accuracy") <= 1  # learns something in 5 epochs (chance: 0.1)
        assert 1 <= _value(df, "pretrain_epochs_run") <= 2 and 1 <= _value(df, "epochs_run") <= 3
        assert _value(df, "iiw") > 0
        assert (df["n_train"] == df["n_train"].iloc[0]).all() and 265 <= df["n_train"].iloc[0] <= 275  # 10% held out
    # the regularizers and the PIB term change the training
    assert len({round(_value(df, "iiw"), 9) for df in frames.values()}) == 4
    again = ibc.run_seed(ibc.Config(method="pib", **TINY), 0, tmp_path)  # deterministic given the seed
    pd.testing.assert_frame_equal(again, frames["pib"])


def test_reference_pib_without_term_and_noise_is_vanilla(tmp_path):
    """Equal budgets: PIB's arm differs from vanilla's only by ref_beta x dw^T F dw and the SGLD noise."""
    vanilla = ibc.run_seed(ibc.Config(method="vanilla", **TINY), 1, tmp_path)
    bare = ibc.run_seed(ibc.Config(method="pib", ref_beta=0.0, sgld_noise=0.0, **TINY), 1, tmp_path)
    cols = ["quantity", "value", "unit"]
    pd.testing.assert_frame_equal(bare[cols], vanilla[cols])
    pib = ibc.run_seed(ibc.Config(method="pib", ref_beta=10.0, sgld_noise=0.0, **TINY), 1, tmp_path)
    assert _value(pib, "iiw") != pytest.approx(_value(vanilla, "iiw"), rel=1e-6)


def test_reference_pib_term_is_ref_beta_times_the_fisher_quadratic_form(monkeypatch, tmp_path):
    """PIBLoss gets beta = 2 ref_beta / n, i.e. the penalty is ref_beta * mean_i (dw . grad l_i)^2."""
    from ibscope import objectives

    built = []
    real = objectives.PIBLoss

    class Spy(real):
        def __init__(self, model, beta, **kw):
            super().__init__(model, beta, **kw)
            built.append(self)

    monkeypatch.setattr(objectives, "PIBLoss", Spy)
    ibc.run_seed(ibc.Config(method="pib", ref_beta=0.3, **TINY), 0, tmp_path)
    (pib,) = built
    assert pib.beta == pytest.approx(2 * 0.3 / pib.n_train) and 265 <= pib.n_train <= 275
    assert pib.interval == -(-pib.n_train // 32)  # one Fisher refresh per epoch (steps per epoch)
    # the prior mean is not the initialization: trained on the validation set from another init
    model = pib._model[0]
    with torch.no_grad():
        dw = {k: p - pib._prior[k] for k, p in model.named_parameters()}
        assert max(float(v.abs().max()) for v in dw.values()) > 1e-3
        pib.refresh()
        proj = torch.cat([c.projections(dw).sum(1) for c in pib.captures_])
        penalty = pib.beta * pib.quadratic_form()  # what the loss adds (PIBLoss.forward: beta * form)
    assert float(penalty) == pytest.approx(0.3 * float((proj * proj).mean()), rel=1e-5)


def test_early_stopping_keeps_the_best_epoch():
    model = nn.Linear(1, 2, bias=False)
    x, y = torch.ones(4, 1), torch.tensor([0, 0, 1, 1])
    stop = ibc._EarlyStopping(model, x, y, patience=2)
    state = SimpleNamespace(epoch=0, stop_training=False)
    stop.on_epoch_end(state)  # epoch 0 (before training) is not a candidate
    assert stop.best_state is None
    for epoch, w in enumerate([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], start=1):  # acc 0.5 each epoch
        with torch.no_grad():
            model.weight.copy_(torch.tensor(w).reshape(2, 1))
        state.epoch = epoch
        stop.on_epoch_end(state)
        assert state.stop_training == (epoch == 3)
    stop.restore()
    assert stop.best_epoch == 1 and stop.epochs_run == 3
    assert torch.equal(model.weight, torch.tensor([[1.0], [0.0]]))


def test_cnn_same_initialization_for_every_method():
    cfg = {k: v for k, v in TINY.items() if k != "pib_recipe"}
    base = ibc._build(ibc.Config(method="vanilla", **cfg), 3, 784, 10)
    assert base(torch.zeros(2, 784)).shape == (2, 10)
    for m in ("l2", "dropout", "pib"):
        other = ibc._build(ibc.Config(method=m, **cfg), 3, 784, 10)
        assert all(torch.equal(a, b) for a, b in zip(base.parameters(), other.parameters(), strict=True))
    drop = ibc._build(ibc.Config(method="dropout", dropout=0.1, **cfg), 3, 784, 10)
    assert any(isinstance(layer, nn.Dropout) for layer in drop)
    assert not any(isinstance(layer, nn.Dropout) for layer in base)


def test_cnn_with_the_ibscope_recipe_tiny(tmp_path):
    cfg = {k: v for k, v in ibc.PROFILES["test"].items() if k != "latent_dim"}
    for m in ("vanilla", "pib"):
        df = ibc.run_seed(ibc.Config(method=m, model="cnn", cnn_channels=(4,), cnn_dense=8, **cfg), 0, tmp_path)
        assert 0 <= _value(df, "test_accuracy") <= 1 and _value(df, "iiw") >= 0


def test_default_recipe_is_the_previous_code_path(tmp_path):
    """pib_recipe='ibscope' and model='mlp' (the defaults) train exactly as ib_compare did before them."""
    from ibscope.data import load_digits_dataset, train_test_split
    from ibscope.models import MLP
    from ibscope.objectives import train_gibbs
    from ibscope.training import fit
    from ibscope.weights import init_prior

    cfg = ibc.Config(method="vanilla", **ibc.PROFILES["test"])
    got = {m: ibc.run_seed(ibc.Config(method=m, **ibc.PROFILES["test"]), 0, tmp_path) for m in ("vanilla", "pib")}
    # the previous code path, written out: digits split, MLP with the seed, SGD through fit / train_gibbs
    x, y = load_digits_dataset()
    split = train_test_split(len(y), train_fraction=1 - cfg.test_fraction, seed=cfg.split_seed, stratify=y)
    xtr, ytr, xte, yte = x[split.train], y[split.train], x[split.test], y[split.test]
    keep = torch.as_tensor(sorted(__import__("numpy").random.default_rng(0).choice(len(ytr), 200, replace=False)))
    xtr, ytr = torch.as_tensor(xtr)[keep], torch.as_tensor(ytr)[keep]
    xte, yte = torch.as_tensor(xte), torch.as_tensor(yte)
    for method in ("vanilla", "pib"):
        torch.manual_seed(0)
        mlp = MLP(64, cfg.hidden, 10, activation="relu", init="he", seed=0)
        model = nn.Sequential(mlp.fc1, mlp.hidden1, mlp.logits)
        if method == "vanilla":
            fit(model, nn.CrossEntropyLoss(), (xtr, ytr), torch.optim.SGD(model.parameters(), lr=cfg.lr),
                epochs=cfg.epochs, batch_size=cfg.batch_size, seed=0, progress=False)
            with torch.no_grad():
                probs = torch.softmax(model.eval()(xte).double(), -1)
        else:
            res = train_gibbs(model, nn.functional.cross_entropy, xtr, ytr, epochs=cfg.epochs,
                              batch_size=cfg.batch_size, lr=cfg.lr, temperature=cfg.temperature_scale / 200,
                              beta=cfg.pib_beta, pib_interval=cfg.pib_interval, pib_examples=cfg.pib_examples,
                              prior_mean=init_prior(model), thin=cfg.thin, seed=0)
            with torch.no_grad():
                probs = res.ensemble.predict_proba(xte)
        want = float((probs.argmax(-1) == yte).double().mean())
        assert _value(got[method], "test_accuracy") == pytest.approx(want, abs=1e-12)
    assert list(got["vanilla"]["quantity"]) == ["test_accuracy", "train_accuracy", "iiw"]
    assert list(got["pib"]["quantity"]) == ["test_accuracy", "train_accuracy", "iiw", "n_posterior_samples"]


@pytest.mark.parametrize("bad, match", [
    ({"model": "resnet"}, "model"),
    ({"pib_recipe": "paper"}, "pib_recipe"),
    ({"pib_recipe": 1}, "pib_recipe"),
    ({"method": "vib", "model": "cnn"}, "model"),
    ({"method": "dual_ib", "pib_recipe": "reference"}, "pib_recipe"),
    ({"pib_recipe": "reference", "label_smoothing": 0.1}, "label_smoothing"),
    ({"cnn_channels": (0,)}, "cnn_channels"),
    ({"cnn_channels": ()}, "cnn_channels"),
    ({"cnn_dense": 0}, "cnn_dense"),
    ({"lr_milestones": (5, 3)}, "lr_milestones"),
    ({"lr_milestones": (0,)}, "lr_milestones"),
    ({"lr_milestones": (2.5,)}, "lr_milestones"),
    ({"val_fraction": 1.0}, "val_fraction"),
    ({"val_fraction": 0.0}, "val_fraction"),
    ({"patience": 0}, "patience"),
    ({"pretrain_patience": -1}, "pretrain_patience"),
    ({"pretrain_epochs": 0}, "pretrain_epochs"),
    ({"sgld_noise": -1e-10}, "sgld_noise"),
    ({"sgld_noise": float("inf")}, "sgld_noise"),
    ({"ref_beta": float("nan")}, "ref_beta"),
    ({"prior_lr": 0.0}, "prior_lr"),
    ({"pretrain_lr": -1.0}, "pretrain_lr"),
    ({"prior_epochs": 1.5}, "prior_epochs"),
    ({"pib_fisher": "empirical"}, "pib_fisher"),
])
def test_reference_recipe_bad_config(bad, match):
    with pytest.raises(ValueError, match=match):
        ibc.Config(**bad)


def test_cnn_refuses_non_square_inputs():
    with pytest.raises(ValueError, match="cnn"):
        ibc._build(ibc.Config(model="cnn"), 0, 50, 10)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_MNIST, reason="MNIST test images not found (IBSCOPE_DATA / ../shared/data)")
def test_mnist_pib_claims_tiny_profile(tmp_path):
    import numpy as np

    from ibscope.reproduce import reproduce

    res = reproduce("wang-pib-vs-vanilla-mnist", profile="tiny", out=tmp_path, workers=0, progress=False)
    assert res.verdict.n == 3 and np.isfinite(res.verdict.estimate)
    assert res.verdict.verdict in ("reproduced", "not reproduced", "inconclusive", "underpowered")


def test_mnist_pib_claims_share_one_run_grid():
    from ibscope.reproduce import catalogue
    from ibscope.reproduce._run import _run_key, run_spec

    claims = catalogue()
    ids = [f"wang-pib-vs-{arm}-mnist" for arm in ("vanilla", "l2", "dropout")]
    for profile, seeds in (("tiny", 3), ("quick", 5), ("paper", 10)):
        keys = {cid: {_run_key(run_spec(claims[cid], r, profile, seeds)) for r in claims[cid].runs} for cid in ids}
        assert keys[ids[0]] == keys[ids[1]] == keys[ids[2]]
    for cid, arm in zip(ids, ("vanilla", "l2", "dropout"), strict=True):
        c = claims[cid]
        assert c.runs["mnist"].grid["method"] == ["vanilla", "l2", "dropout", "pib"]
        cfg = c.runs["mnist"].config
        assert cfg["pib_recipe"] == "reference" and cfg["model"] == "cnn" and cfg["pib_fisher"] == "mean_gradient"
        assert c.statistic == "quantity_difference" and c.statistic_params["b"] == {"method": arm}
        assert c.statistic_params["a"] == {"method": "pib"} and c.paper_effect == pytest.approx(0.005)
        assert c.deviations and c.follows
        assert {"tiny", "quick", "paper"} <= set(c.profiles)


def test_mean_gradient_term_is_the_reference_codes_form():
    """sum over weight tensors of (dw_k . g_k)^2, g the summed 1000-example batch-mean gradients of 10 draws
    divided by ceil(n / 1000); 0 in the first epoch, g refreshed at each later epoch's first step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    prior = {k: v.detach() + 0.1 * torch.randn_like(v) for k, v in model.named_parameters()}
    x, y = torch.randn(2500, 5), torch.randint(0, 3, (2500,))
    term = ibc._MeanGradientTerm(model, prior, x, y, steps_per_epoch=2, seed=7)
    assert term.names == ["0.weight", "2.weight"]
    assert float(term(model)) == 0.0 and float(term(model)) == 0.0  # epoch 0: no term
    value = term(model)  # epoch 1, first step: refresh
    gen = torch.Generator().manual_seed(8)
    params = dict(model.named_parameters())
    g = {k: torch.zeros_like(params[k]) for k in term.names}
    for _ in range(10):
        idx = torch.randint(2500, (1000,), generator=gen)
        grads = torch.autograd.grad(nn.functional.cross_entropy(model(x[idx]), y[idx]),
                                    [params[k] for k in term.names])
        for k, gk in zip(term.names, grads, strict=True):
            g[k] += gk / 3  # ceil(2500 / 1000) = 3
    want = sum(float(((params[k] - prior[k]) * g[k]).sum()) ** 2 for k in term.names)
    assert float(value) == pytest.approx(want, rel=1e-5)
    value.backward()
    assert model[0].bias.grad is None or float(model[0].bias.grad.abs().max()) == 0.0  # biases left out
    frozen = {k: v.clone() for k, v in term.g.items()}
    with torch.no_grad():
        model[0].weight.add_(0.5)
    term(model)  # second step of epoch 1: g frozen
    assert all(torch.equal(frozen[k], term.g[k]) for k in frozen)
    term(model)  # epoch 2: refreshed at the new weights
    assert not torch.equal(frozen["0.weight"], term.g["0.weight"])


def test_reference_recipe_mean_gradient_form_tiny(tmp_path):
    per_example = ibc.run_seed(ibc.Config(method="pib", **TINY), 0, tmp_path)
    mean_grad = ibc.run_seed(ibc.Config(method="pib", pib_fisher="mean_gradient", **TINY), 0, tmp_path)
    assert list(mean_grad["quantity"]) == list(per_example["quantity"])
    assert 0.1 < _value(mean_grad, "test_accuracy") <= 1
    assert _value(mean_grad, "iiw") != pytest.approx(_value(per_example, "iiw"), rel=1e-6)
