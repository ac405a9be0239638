"""Tests of ibscope.weights against closed forms (Bayesian linear regression) and explicit loops.

Bayesian linear regression, design X (n x D) fixed, y = X w + N(0, s2 I), prior
w ~ N(0, v I). The posterior is exactly N(m_S, P^-1) with P = I/v + X^T X / s2
and m_S = P^-1 X^T y / s2, and

    I(w;S) = E_S KL(p(w|S) || p(w)) = 1/2 log det(I + v X^T X / s2)   (nats)

(the KL's quadratic term averages to D - tr(P^-1)/v because Cov_S(m_S) = vI - P^-1,
which cancels the trace term; see docs/weights.md).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from ibscope.models import MLP
from ibscope.training import Callback
from ibscope.weights import (
    WeightInformation,
    detect_phase_transition,
    fisher,
    iiw,
    information_lagrangian,
    init_prior,
)

LN2 = math.log(2.0)


# --------------------------------------------------------------------------- #
# Bayesian linear regression
# --------------------------------------------------------------------------- #
class GaussNLL:
    """Per-example Gaussian negative log-likelihood (y - f)^2 / (2 s2), nats (constant dropped)."""

    def __init__(self, s2: float):
        self.s2 = s2

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (out.reshape(-1) - y.reshape(-1)) ** 2 / (2 * self.s2)


def _blr(d=20, n=200, s2=1.0, a=0.05, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    xtx = x.T @ x / s2
    v = a / np.linalg.eigvalsh(xtx).mean()  # prior variance: v * eig(X^T X / s2) ~ a
    prec = np.eye(d) / v + xtx
    mi = 0.5 * np.linalg.slogdet(np.eye(d) + v * xtx)[1]
    return rng, x, v, prec, mi


def _linear(d, w):
    m = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        m.weight.copy_(torch.as_tensor(w).reshape(1, -1))
    return m


def _dataset(rng, x, v, prec, s2=1.0):
    d = x.shape[1]
    w = rng.normal(scale=math.sqrt(v), size=d)
    y = x @ w + rng.normal(scale=math.sqrt(s2), size=x.shape[0])
    m_s = np.linalg.solve(prec, x.T @ y / s2)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    data = [(xt[i:i + 50], yt[i:i + 50]) for i in range(0, x.shape[0], 50)]
    return m_s, data


def test_gaussian_kl_matches_closed_form_mutual_information():
    rng, x, v, prec, mi = _blr(d=8, n=120, a=2.0)
    m_s, data = _dataset(rng, x, v, prec)
    model = _linear(8, m_s)
    prior = {"weight": torch.zeros(1, 8, dtype=torch.float64)}
    r = iiw(model, GaussNLL(1.0), data, prior_mean=prior, method="gaussian_kl", curvature="hessian",
            prior_var=v, target="mi", unit="nats")
    assert r.total == pytest.approx(mi, rel=1e-6)
    rb = iiw(model, GaussNLL(1.0), data, prior_mean=prior, method="gaussian_kl", curvature="hessian",
             prior_var=v, target="mi")
    assert rb.unit == "bits" and rb.total == pytest.approx(mi / LN2, rel=1e-6)
    # target="kl": the exact KL(N(m_S, P^-1) || N(0, vI)) of this data set
    cov = np.linalg.inv(prec)
    kl = 0.5 * (np.trace(cov) / v - 8 + m_s @ m_s / v + 8 * math.log(v) - np.linalg.slogdet(cov)[1])
    r = iiw(model, GaussNLL(1.0), data, prior_mean=prior, method="gaussian_kl", curvature="hessian",
            prior_var=v, unit="nats")
    assert r.total == pytest.approx(kl, rel=1e-6)


def test_gaussian_kl_averages_to_mutual_information():
    # I(w;S) = E_S KL: the mean of the per-data-set KL over data sets drawn from the model
    rng, x, v, prec, mi = _blr(d=6, n=100, a=1.0, seed=1)
    prior = {"weight": torch.zeros(1, 6, dtype=torch.float64)}
    kls = []
    for _ in range(150):
        m_s, data = _dataset(rng, x, v, prec)
        kls.append(iiw(_linear(6, m_s), GaussNLL(1.0), data, prior_mean=prior, method="gaussian_kl",
                       curvature="hessian", prior_var=v, unit="nats").total)
    kls = np.array(kls)
    assert abs(kls.mean() - mi) < 4 * kls.std() / math.sqrt(kls.size)
    assert abs(kls.mean() - mi) / mi < 0.1


def test_fisher_quadratic_within_10_percent_of_blr_mutual_information():
    rng, x, v, prec, mi = _blr(d=20, n=200, a=0.05, seed=2)
    prior = {"weight": torch.zeros(1, 20, dtype=torch.float64)}
    est, fisher_part, buggy = [], [], []
    for _ in range(200):
        m_s, data = _dataset(rng, x, v, prec)
        model = _linear(20, m_s)
        r = iiw(model, GaussNLL(1.0), data, prior_mean=prior, prior_var=v, unit="nats")
        est.append(r.total)
        fisher_part.append(r.terms["fisher"])
        buggy.append(_reference_square_of_mean_gradient(model, GaussNLL(1.0), data, prior, n=200))
    assert np.mean(est) == pytest.approx(mi, rel=0.10)
    # the data (Fisher) part alone: ~ 1/2 tr(X^T X (vI - P^-1)) / s2, up to the in-sample
    # correlation of dtheta with the residuals (+~20 % here; the empirical Fisher reuses S),
    # so a loose check that still catches a wrong n or 1/2
    fisher_expected = 0.5 * np.trace(x.T @ x @ (v * np.eye(20) - np.linalg.inv(prec)))
    assert np.mean(fisher_part) == pytest.approx(fisher_expected, rel=0.3)
    # the reference code's square of the mean gradient drops the variance: far below
    assert np.mean(buggy) < 0.5 * np.mean(fisher_part)


def _reference_square_of_mean_gradient(model, loss_fn, data, prior, n):
    """The flawed estimator of the public reference code: (dtheta . mean gradient)^2 (kept here as a foil)."""
    params = list(model.parameters())
    g_sum = [torch.zeros_like(p) for p in params]
    count = 0
    for x, y in data:
        g = torch.autograd.grad(loss_fn(model(x), y).sum(), params)
        g_sum = [a + b for a, b in zip(g_sum, g, strict=True)]
        count += x.shape[0]
    proj = sum(float(((p.detach() - prior[n_]) * gs / count).sum())
               for (n_, p), gs in zip(model.named_parameters(), g_sum, strict=True))
    return 0.5 * n * proj**2


# --------------------------------------------------------------------------- #
# small MLP
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def trained_mlp():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 5, generator=g)
    y = ((x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 0.7).long())
    flip = torch.rand(400, generator=g) < 0.15
    y = torch.where(flip, torch.randint(0, 3, (400,), generator=g), y)
    model = MLP(5, (8,), 3, activation="tanh", seed=0)
    prior = init_prior(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    for _ in range(150):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    data = [(x[i:i + 40], y[i:i + 40]) for i in range(0, 400, 40)]
    return model, prior, data, x, y


CE = nn.CrossEntropyLoss(reduction="none")


def test_fisher_quadratic_agrees_with_gaussian_kl_on_mlp(trained_mlp):
    model, prior, data, _, _ = trained_mlp
    exact = iiw(model, CE, data, prior_mean=prior, method="gaussian_kl")
    full = iiw(model, CE, data, prior_mean=prior)
    # same quadratic form: matrix-free on all data == explicit D x D Fisher
    assert full.total == pytest.approx(exact.total, rel=1e-6)
    for k in exact.per_layer:
        assert full.per_layer[k] == pytest.approx(exact.per_layer[k], rel=1e-6)
    # the scalable estimate from half of the batches
    half = iiw(model, CE, data, prior_mean=prior, max_batches=5, n_train=400)
    assert half.n_batches == 5 and half.n_examples == 200
    assert half.total == pytest.approx(exact.total, rel=0.20)
    # the jvp engine gives the same projections
    jv = iiw(model, CE, data, prior_mean=prior, engine="jvp")
    assert jv.total == pytest.approx(full.total, rel=1e-6)


def test_fisher_quadratic_is_mean_of_squared_projections(trained_mlp):
    model, prior, data, x, y = trained_mlp
    params = dict(model.named_parameters())
    proj = []
    for i in range(x.shape[0]):
        g = torch.autograd.grad(CE(model(x[i:i + 1]), y[i:i + 1]).sum(), list(params.values()))
        proj.append(sum(float(((p.detach() - prior[n]) * gi).sum()) for (n, p), gi in zip(params.items(), g, strict=True)))
    expected = 0.5 * 400 * np.mean(np.square(proj)) / LN2
    r = iiw(model, CE, data, prior_mean=prior)
    assert r.total == pytest.approx(expected, rel=1e-6)
    assert r.unit == "bits" and "fc1.bias" in r.settings["parameters"]  # biases included by default
    nb = iiw(model, CE, data, prior_mean=prior, include_bias=False)
    assert "fc1.bias" not in nb.settings["parameters"] and nb.total != pytest.approx(r.total, rel=1e-3)
    ex = iiw(model, CE, data, prior_mean=prior, exclude=["logits.*"], groups="parameter")
    assert set(ex.per_layer) == {"fc1.weight", "fc1.bias"}
    # batch granularity: mean over batches of B * squared batch-mean projection
    bt = iiw(model, CE, data, prior_mean=prior, granularity="batch")
    pb = np.array(proj).reshape(10, 40).mean(1)
    assert bt.total == pytest.approx(0.5 * 400 * np.mean(40 * pb**2) / LN2, rel=1e-6)


def test_fisher_trace_matches_per_example_loop(trained_mlp):
    model, _, data, x, y = trained_mlp
    params = list(model.parameters())

    def sq(i, label, t):
        logits = model(x[i:i + 1]) / t
        g = torch.autograd.grad(nn.functional.cross_entropy(logits, torch.tensor([label])), params)
        return sum(float((gi.double() ** 2).sum()) for gi in g)

    sub = data[:2]
    n = 80
    for t in (1.0, 3.0):
        emp = np.mean([sq(i, int(y[i]), t) for i in range(n)])
        assert fisher(model, sub, kind="empirical", temperature=t).trace == pytest.approx(emp, rel=1e-5)
        with torch.no_grad():
            p = torch.softmax(model(x[:n]).double() / t, 1)
        exact = np.mean([sum(float(p[i, c]) * sq(i, c, t) for c in range(3)) for i in range(n)])
        r = fisher(model, sub, kind="model", temperature=t, n_samples=None)
        assert r.trace == pytest.approx(exact, rel=1e-5)
        assert sum(r.per_layer.values()) == pytest.approx(r.trace, rel=1e-9)
    sampled = fisher(model, data, kind="model", n_samples=20, seed=3).trace
    assert sampled == pytest.approx(fisher(model, data, kind="model", n_samples=None).trace, rel=0.1)


def test_fisher_temperature_undoes_saturation():
    model = MLP(4, (6,), 3, seed=1)
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
    data = [(x, torch.zeros(64, dtype=torch.long))]
    base = fisher(model, data, n_samples=None).trace
    with torch.no_grad():  # saturate the logits
        model.logits.weight.mul_(50.0)
        model.logits.bias.mul_(50.0)
    sat = fisher(model, data, n_samples=None).trace
    assert sat < 0.2 * base * 50**2  # the raw trace collapses relative to the logit scale
    # at T = 50 the softmax sees the original logits again: the layers below the logits
    # get their original trace back, the logits layer its trace / 50^2 (its scale changed)
    soft = fisher(model, data, n_samples=None, temperature=50.0)
    base_l = fisher(MLP(4, (6,), 3, seed=1), data, n_samples=None).per_layer
    assert soft.per_layer["fc1"] == pytest.approx(base_l["fc1"], rel=1e-6)
    assert soft.per_layer["logits"] == pytest.approx(base_l["logits"] / 50**2, rel=1e-6)


# --------------------------------------------------------------------------- #
# information Lagrangian
# --------------------------------------------------------------------------- #
def _closed_kl(mean, log_var, lam):
    lv = np.broadcast_to(log_var, mean.shape)
    return 0.5 * np.sum(np.exp(lv) / lam**2 + mean**2 / lam**2 - 1 - lv + 2 * math.log(lam))


@pytest.mark.slow  # ~35-70 s on 2 busy cores; runs in make test-slow
def test_information_lagrangian_kl_and_beta(trained_mlp):
    model, _, data, _, _ = trained_mlp
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = nn.CrossEntropyLoss()
    results = [information_lagrangian(model, loss, data, beta, prior_std=0.5, steps=150, lr=0.2, unit="nats")
               for beta in (1e-4, 1e-3, 1e-2)]
    for r in results:
        params = dict(model.named_parameters())
        kl = sum(_closed_kl(params[n].detach().numpy(), r.log_variances[n].numpy(), 0.5) for n in params)
        assert r.total == pytest.approx(kl, rel=1e-6)
        assert sum(r.per_layer.values()) == pytest.approx(r.total, rel=1e-9)
    totals = [r.total for r in results]
    assert totals[0] > totals[1] > totals[2]  # more beta, less information
    assert results[0].expected_loss < results[2].expected_loss
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n])
    row = information_lagrangian(model, loss, data, 1e-3, granularity="row", steps=20)
    assert row.log_variances["fc1.weight"].shape == (8, 1)
    assert torch.equal(row.log_variances["fc1.bias"], row.log_variances["fc1.weight"].reshape(-1))


# --------------------------------------------------------------------------- #
# WeightInformation and phase detector
# --------------------------------------------------------------------------- #
def test_weight_information_from_own_loop_writes_and_resumes(tmp_path, trained_mlp):
    import json

    model, _, data, _, _ = trained_mlp
    net = copy.deepcopy(model)
    wi = WeightInformation(CE, data[:2], quantities=("iiw", "fisher"), schedule=[0, 2], out_dir=tmp_path,
                           seed=7, model=net)
    with pytest.raises(RuntimeError, match="record epoch 0"):
        wi.record(1)  # prior 'init' needs the initialization first
    rows = wi.record(0)
    assert list(rows.columns) == ["seed", "epoch", "layer", "quantity", "value", "unit", "method"]
    assert set(rows["quantity"]) == {"iiw", "fisher"} and set(rows["seed"]) == {7}
    assert rows[(rows.quantity == "iiw") & (rows.layer == "total")].value.iloc[0] == pytest.approx(0.0)
    on_disk = pd.read_parquet(tmp_path / "weight_information.parquet")
    assert len(on_disk) == len(rows)
    meta = json.loads((tmp_path / "weight_information.json").read_text())
    assert meta["format"] == "ibscope.weight_information/1" and meta["quantities"] == ["iiw", "fisher"]
    assert meta["schedule"] == [0, 2] and meta["prior_mean"] == "init" and meta["unit"] == "bits"
    init = {k: v.clone() for k, v in init_prior(net).items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    # a restarted loop skips epoch 0 and keeps the init prior (read back from the run directory)
    wi2 = WeightInformation(CE, data[:2], quantities=("iiw", "fisher"), schedule=[0, 2], out_dir=tmp_path, seed=7)
    assert len(wi2.record(0, net)) == 0
    new = wi2.record(2, net)
    expected = iiw(net, CE, data[:2], prior_mean=init).total
    assert new[(new.quantity == "iiw") & (new.layer == "total")].value.iloc[0] == pytest.approx(expected, rel=1e-9)
    assert expected > 0
    df = wi2.results()
    assert sorted(df["epoch"].unique()) == [0, 2] and len(df) == 2 * len(rows)


def test_weight_information_in_fit_resumes_with_the_same_prior(tmp_path):
    from ibscope.training import fit

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g)
    y = (x[:, 0] > 0).long()
    sub = [(x[:32], y[:32])]

    def run(out, crash=False):
        net = MLP(5, (6,), 2, activation="tanh", seed=1)
        wi = WeightInformation(CE, sub, quantities=("iiw",), schedule=[0, 1, 3], out_dir=out)
        cbs = [wi]
        if crash:
            class Crash(Callback):
                def on_epoch_end(self, state):
                    if state.epoch == 2:
                        raise KeyboardInterrupt
            cbs.append(Crash())
        fit(net, nn.CrossEntropyLoss(), (x, y), torch.optim.SGD(net.parameters(), lr=0.3), epochs=3,
            batch_size=16, callbacks=cbs, checkpoint_dir=out, progress=False)
        return wi

    ref = run(tmp_path / "ref").results()
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "run", crash=True)
    (tmp_path / "run" / "weight_information_prior_seed0.pt").unlink()  # the prior must come from fit's checkpoint

    class Crash(Callback):  # same number of callbacks as the crashed run
        pass

    net = MLP(5, (6,), 2, activation="tanh", seed=99)  # other weights: the checkpoint restores them
    wi = WeightInformation(CE, sub, quantities=("iiw",), schedule=[0, 1, 3], out_dir=tmp_path / "run")
    state = fit(net, nn.CrossEntropyLoss(), (x, y), torch.optim.SGD(net.parameters(), lr=0.3), epochs=3,
                batch_size=16, callbacks=[wi, Crash()], checkpoint_dir=tmp_path / "run", progress=False)
    assert state.resumed
    got = wi.results()
    assert sorted(got.epoch.unique()) == [0, 1, 3]
    a = ref.sort_values(["epoch", "layer"]).value.to_numpy()
    b = got.sort_values(["epoch", "layer"]).value.to_numpy()
    np.testing.assert_allclose(b, a, rtol=1e-6)
    assert ref[(ref.epoch == 3) & (ref.layer == "total")].value.iloc[0] > 0


def test_weight_information_never_silently_reuses_a_directory(tmp_path):
    import json

    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 5, generator=g)
    y = (x[:, 0] > 0).long()
    data = [(x[:12], y[:12]), (x[12:], y[12:])]
    out = tmp_path / "run"

    def tracker(model, data=data, **kw):
        return WeightInformation(CE, data, quantities=("iiw",), out_dir=out, model=model, **kw)

    net = MLP(5, (6,), 2, activation="tanh", seed=1)
    first = tracker(net).record(0)
    assert len(first)
    meta = json.loads((out / "weight_information.json").read_text())
    assert len(meta["fingerprint"]) == 64 and set(meta["fingerprint_parts"]) >= {"model", "data", "settings"}
    # the same measurement resumes (another seed of it too), whatever the weights are now
    other_weights = MLP(5, (6,), 2, activation="tanh", seed=5)
    assert len(tracker(other_weights).record(0)) == 0
    assert len(tracker(other_weights, seed=3).record(0)) == len(first)
    # another model, other data, other settings or another loss: refused, naming the directory and the way out
    wider = MLP(5, (7,), 2, activation="tanh", seed=1)
    refusals = {
        "model": lambda: tracker(wider).record(0),
        "data": lambda: tracker(net, data=[(x[:12] + 1, y[:12]), (x[12:], y[12:])]).record(0),
        "settings": lambda: tracker(net, iiw_kwargs={"unit": "nats"}).record(0),
        "loss_fn": lambda: WeightInformation(nn.CrossEntropyLoss(reduction="none", label_smoothing=0.1), data,
                                             quantities=("iiw",), out_dir=out, model=net).record(0),
    }
    for part, attempt in refusals.items():
        with pytest.raises(ValueError, match="overwrite=True") as err:
            attempt()
        assert str(out) in str(err.value) and part in str(err.value), part
    # inside fit, refused before training starts
    from ibscope.training import fit

    with pytest.raises(ValueError, match="overwrite=True"):
        fit(wider, nn.CrossEntropyLoss(), (x, y), torch.optim.SGD(wider.parameters(), lr=0.1), epochs=1,
            batch_size=12, callbacks=[tracker(None)], progress=False)
    # overwrite=True starts afresh: the old rows (of every seed) are gone
    fresh = tracker(wider, overwrite=True)
    assert len(fresh.results()) == 0
    new = fresh.record(0)
    assert len(new) and len(fresh.results()) == len(new) and set(fresh.results().seed) == {0}
    assert len(tracker(wider).record(0)) == 0  # and it resumes under the new fingerprint
    with pytest.raises(TypeError, match="'overwrite'"):
        tracker(net, overwrite="yes")
    # a directory written without a fingerprint (an older ibscope) is not silently adopted either
    meta = json.loads((out / "weight_information.json").read_text())
    del meta["fingerprint"]
    (out / "weight_information.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="without a fingerprint"):
        tracker(wider).record(0)


def test_weight_information_in_memory_plot_and_bad_input(tmp_path, trained_mlp, monkeypatch):
    import ibscope
    import ibscope.plots

    model, _, data, _, _ = trained_mlp
    assert ibscope.WeightInformation is WeightInformation
    wi = WeightInformation(CE, data[:1], quantities="fisher", model=model)
    assert len(wi.record(0)) and len(wi.record(0)) == 0 and list(wi.results().epoch.unique()) == [0]
    assert wi.state_dict()["rows"]["quantity"][0] == "fisher"
    with pytest.raises(ValueError, match="pass a path"):
        wi.plot()
    seen = {}

    def fake(results, path):
        seen["n"], seen["path"] = len(results), path
        return path

    monkeypatch.setattr(ibscope.plots, "plot_weight_information", fake, raising=False)
    assert wi.plot(tmp_path / "w.png") == tmp_path / "w.png" and seen["n"] == len(wi.results())
    with pytest.raises(ValueError, match="beta"):
        WeightInformation(CE, data, quantities=("lagrangian",))
    with pytest.raises(ValueError, match="quantities"):
        WeightInformation(CE, data, quantities=("entropy",))
    with pytest.raises(ValueError, match="'init'"):
        WeightInformation(CE, data, prior_mean="heldout")
    with pytest.raises(ValueError, match="'epoch'"):
        wi.record(-1)
    with pytest.raises(TypeError, match="needs a model"):
        WeightInformation(CE, data).record(0)


def test_phase_detector_finds_known_peak():
    rng = np.random.default_rng(0)
    epochs = np.arange(60)
    curve = np.exp(-((epochs - 22) / 8.0) ** 2) * 10 + 1
    noisy = curve + rng.normal(scale=0.5, size=60)
    r = detect_phase_transition(epochs, noisy, window=7, seed=1)
    assert r.transition and abs(r.epoch - 22) <= 3
    assert r.confidence > 0.8 and r.prominence > 0.7
    mono = detect_phase_transition(epochs, np.log1p(epochs) + rng.normal(scale=0.05, size=60), window=5)
    assert not mono.transition and mono.confidence == 0.0 and mono.prominence == 0.0
    flat = detect_phase_transition(epochs, 1 + rng.normal(scale=1.0, size=60), window=3, seed=2)
    assert flat.confidence < r.confidence
    with pytest.raises(ValueError, match="at least 3"):
        detect_phase_transition([0, 1], [1.0, 2.0])


# --------------------------------------------------------------------------- #
# bad input
# --------------------------------------------------------------------------- #
def test_bad_inputs(trained_mlp):
    model, prior, data, _, _ = trained_mlp
    frozen = MLP(5, (8,), 3, seed=0)
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no parameters"):
        iiw(frozen, CE, data, prior_mean=prior)
    with pytest.raises(ValueError, match="no parameters"):
        fisher(frozen, data)
    with pytest.raises(ValueError, match="no parameters"):
        information_lagrangian(frozen, CE, data, 1e-3)
    bad_prior = dict(prior)
    bad_prior["fc1.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="shape"):
        iiw(model, CE, data, prior_mean=bad_prior)
    with pytest.raises(ValueError, match="same architecture"):
        iiw(model, CE, data, prior_mean=MLP(5, (9,), 3, seed=0))
    empty = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(0, 5), torch.zeros(0)), batch_size=4)
    for call in (lambda: iiw(model, CE, empty, prior_mean=prior, n_train=10),
                 lambda: iiw(model, CE, [], prior_mean=prior, n_train=10),
                 lambda: fisher(model, []),
                 lambda: information_lagrangian(model, CE, [], 1e-3)):
        with pytest.raises(ValueError, match="no .*batches"):
            call()
    x, y = data[0]
    nan_data = [(x.clone().fill_(float("nan")), y)]
    for call in (lambda: iiw(model, CE, nan_data, prior_mean=prior),
                 lambda: iiw(model, CE, nan_data, prior_mean=prior, method="gaussian_kl"),
                 lambda: fisher(model, nan_data),
                 lambda: information_lagrangian(model, CE, nan_data, 1e-3, steps=2)):
        with pytest.raises(ValueError, match="NaN"):
            call()
    with pytest.raises(ValueError, match="method"):
        iiw(model, CE, data, prior_mean=prior, method="exact")
    with pytest.raises(TypeError, match="prior_mean"):
        iiw(model, CE, data, prior_mean=3.0)
    with pytest.raises(ValueError, match="max_params"):
        iiw(model, CE, data, prior_mean=prior, method="gaussian_kl", max_params=10)
    with pytest.raises(ValueError, match="scalar"):
        iiw(model, nn.CrossEntropyLoss(), data, prior_mean=prior)
    with pytest.raises(ValueError, match="'beta'"):
        information_lagrangian(model, CE, data, -1.0)
    with pytest.raises(TypeError, match="'data'"):
        iiw(model, CE, torch.zeros(3), prior_mean=prior)


@pytest.mark.parametrize("kind", ["empirical", "model"])
def test_fisher_hook_engine_equals_vmap_engine(kind):
    """The hook engine (per-example norms from layer inputs and output gradients) is exact."""
    from ibscope.models import ConvNet

    torch.manual_seed(0)
    for model, x in ((MLP(20, (16, 8), 5, activation="relu", seed=0), torch.randn(64, 20)),
                     (ConvNet(in_channels=1, image_size=12, channels=(4, 6), dense=8, n_classes=5, seed=0),
                      torch.randn(64, 144))):
        y = torch.randint(0, 5, (64,))
        data = [(x[:40], y[:40]), (x[40:], y[40:])]
        ns = None if kind == "model" else 1
        a = fisher(model, data, kind=kind, n_samples=ns, engine="vmap")
        b = fisher(model, data, kind=kind, n_samples=ns, engine="hooks")
        assert b.trace == pytest.approx(a.trace, rel=1e-6)
        for k in a.per_layer:
            assert b.per_layer[k] == pytest.approx(a.per_layer[k], rel=1e-6, abs=1e-12)
    lin = torch.nn.Linear(3, 3)
    shared = torch.nn.Sequential(lin, torch.nn.Tanh(), lin)  # one layer called twice: hooks cannot give norms
    data = [(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))]
    with pytest.raises(ValueError, match="engine='hooks'"):
        fisher(shared, data, engine="hooks")
    assert fisher(shared, data).trace == pytest.approx(fisher(shared, data, engine="vmap").trace, rel=1e-6)


def test_a_tensor_pair_as_data_is_refused_with_the_fix():
    import torch
    from torch import nn

    from ibscope.weights import fisher, iiw

    net = nn.Linear(3, 2)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    for call in (lambda: iiw(net, nn.CrossEntropyLoss(reduction="none"), (x, y), prior_mean=net),
                 lambda: fisher(net, (x, y))):
        with pytest.raises(TypeError, match=r"'data'.*\[\(x, y\)\]"):
            call()
    assert fisher(net, [(x, y)]).trace > 0
