"""SGLD, PosteriorEnsemble, PIBLoss and train_gibbs against ground truth."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import ibscope.training
from ibscope.objectives import (
    SGLD,
    AnnealingSchedule,
    NonFiniteLossError,
    PIBLoss,
    PolynomialDecay,
    PosteriorEnsemble,
    per_example_gradients,
    polynomial_decay,
    train_gibbs,
)


def _blr():
    """Bayesian linear regression: y = X w + N(0, s^2), prior N(0, I/alpha) -> Gaussian posterior."""
    n, d, s, alpha = 40, 3, 0.5, 1.0
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + s * torch.randn(n, generator=g, dtype=torch.float64)
    prec = alpha * torch.eye(d, dtype=torch.float64) + x.T @ x / s**2
    cov = torch.linalg.inv(prec)
    mean = cov @ (x.T @ y) / s**2
    xty = x.T @ y / s**2

    def potential(w):  # U(w) = -log p(y|X,w) - log p(w) + const, for a batch of chains (rows)
        return 0.5 * ((w @ prec) * w).sum() - (w @ xty).sum()

    return potential, mean, cov.diagonal(), torch.linalg.eigvalsh(prec)


def _run_chains(potential, opt_factory, *, steps, burn, every, n_chains=2000, d=3):
    w = torch.zeros(n_chains, d, dtype=torch.float64, requires_grad=True)
    opt = opt_factory([w])
    kept = []
    for t in range(steps):
        opt.zero_grad()
        potential(w).backward()
        opt.step()
        if t >= burn and (t - burn) % every == 0:
            kept.append(w.detach().clone())
    return torch.cat(kept)


def test_sgld_recovers_gaussian_posterior_within_10_percent():
    # 2000 independent chains (rows; the potential is separable), full-batch
    # gradients; lr * lambda_max = 0.02 puts the Euler bias on the variance at ~1%.
    potential, mean, var, lam = _blr()
    lr = 0.02 / float(lam.max())
    s = _run_chains(potential, lambda p: SGLD(p, lr=lr, temperature=1.0, seed=1), steps=900, burn=500, every=40)
    assert torch.all(((s.mean(0) - mean) / mean).abs() < 0.10)
    assert torch.all(((s.var(0) - var) / var).abs() < 0.10)
    # a chain at the wrong temperature must fail the same check (the test can fail)
    s2 = _run_chains(potential, lambda p: SGLD(p, lr=lr, temperature=2.0, seed=1), steps=900, burn=500, every=40)
    assert torch.all(((s2.var(0) - var) / var).abs() > 0.5)


def test_psgld_approximately_recovers_posterior():
    # pSGLD without its correction term: mean within 10%, variance within 25%.
    potential, mean, var, _ = _blr()
    s = _run_chains(potential, lambda p: SGLD(p, lr=1e-3, temperature=1.0, precondition=True, alpha=0.999, seed=2),
                    steps=2600, burn=2000, every=40)
    assert torch.all(((s.mean(0) - mean) / mean).abs() < 0.10)
    assert torch.all(((s.var(0) - var) / var).abs() < 0.25)


def test_temperature_zero_is_exactly_sgd():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    net2 = copy.deepcopy(net)
    x, y = torch.randn(32, 5), torch.randint(0, 3, (32,))
    a = SGLD(net.parameters(), lr=0.1, temperature=0.0, weight_decay=1e-3, seed=0)
    b = torch.optim.SGD(net2.parameters(), lr=0.1, weight_decay=1e-3)
    for _ in range(5):
        for m, o in ((net, a), (net2, b)):
            o.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            o.step()
    for p, q in zip(net.parameters(), net2.parameters(), strict=False):
        assert torch.equal(p, q)


def test_noise_scale_and_seed():
    # zero gradient: one step adds N(0, 2 lr T) noise; same seed -> same chain
    w = torch.zeros(200_000, requires_grad=True)
    opt = SGLD([w], lr=0.01, temperature=3.0, seed=5)
    w.grad = torch.zeros_like(w)
    opt.step()
    assert abs(float(w.detach().var()) / (2 * 0.01 * 3.0) - 1) < 0.02
    w2 = torch.zeros(200_000, requires_grad=True)
    opt2 = SGLD([w2], lr=0.01, temperature=3.0, seed=5)
    w2.grad = torch.zeros_like(w2)
    opt2.step()
    assert torch.equal(w, w2)


def test_polynomial_decay():
    assert polynomial_decay(0, 2.0, 4.0, 0.5) == pytest.approx(1.0)
    assert polynomial_decay(12, 2.0, 4.0, 0.5) == pytest.approx(0.5)
    w = torch.zeros(3, requires_grad=True)
    opt = SGLD([w], lr=0.1, temperature=0.0)
    sched = PolynomialDecay(opt, b=10.0, gamma=1.0)
    lrs = []
    for _ in range(11):
        lrs.append(opt.param_groups[0]["lr"])
        w.grad = torch.zeros(3)
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[10] == pytest.approx(0.05)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))


@pytest.mark.parametrize("kwargs, match", [
    ({"lr": 0.1, "temperature": -1.0}, "temperature"),
    ({"lr": -0.1}, "lr"),
    ({"lr": 0.1, "temperature": float("nan")}, "temperature"),
    ({"lr": 0.1, "alpha": 1.0}, "alpha"),
])
def test_sgld_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SGLD([torch.zeros(2, requires_grad=True)], **kwargs)


class _Const(nn.Module):
    """A 'network' whose logits are a learnable vector (probabilities we can compute by hand)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits, dtype=torch.float64))

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1)


@pytest.mark.parametrize("on_disk", [False, True])
def test_posterior_ensemble_averages_probabilities(tmp_path, on_disk):
    model = _Const([0.0, 0.0])
    ens = PosteriorEnsemble(model, burn_in=2, thin=2, directory=tmp_path / "ens" if on_disk else None)
    values = [[5.0, 0.0], [9.0, 0.0], [0.0, 3.0], [1.0, 1.0], [0.0, 4.0], [2.0, 2.0]]
    kept = []
    for v in values:
        with torch.no_grad():
            model.logits.copy_(torch.tensor(v))
        kept.append(ens.update())
    assert kept == [False, False, True, False, True, False] and len(ens) == 2
    p = ens.predict_proba(torch.zeros(4, 1))
    expected = (torch.softmax(torch.tensor([0.0, 3.0]), 0) + torch.softmax(torch.tensor([0.0, 4.0]), 0)) / 2
    assert torch.allclose(p[0].float(), expected, atol=1e-6)
    # averaging logits would give a different answer: the test can tell them apart
    assert not torch.allclose(p[0].float(), torch.softmax(torch.tensor([0.0, 3.5]), 0), atol=1e-3)
    if on_disk:  # a new ensemble on the same directory resumes with the same samples
        again = PosteriorEnsemble(model, burn_in=2, thin=2, directory=tmp_path / "ens")
        assert len(again) == 2 and again.n_steps_ == 6
        assert torch.allclose(again.predict_proba(torch.zeros(1, 1)), p[:1])


def test_posterior_ensemble_empty_and_max_samples():
    model = _Const([0.0, 1.0])
    ens = PosteriorEnsemble(model, burn_in=5, max_samples=2)
    with pytest.raises(ValueError, match="no samples"):
        ens.predict_proba(torch.zeros(2, 1))
    for _ in range(9):
        ens.update()
    assert len(ens) == 2


def test_pib_term_matches_ibscope_weights_iiw_and_is_differentiable():
    from ibscope.weights import iiw

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    prior = {k: v.detach().clone() for k, v in net.named_parameters()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, y = torch.randn(60, 4, dtype=torch.float64), torch.randint(0, 3, (60,))
    batches = [(x[i:i + 20], y[i:i + 20]) for i in range(0, 60, 20)]
    loss_fn = nn.functional.cross_entropy
    pib = PIBLoss(net, 0.5, n_train=500, prior_mean=prior, loss_fn=loss_fn, batches=batches, interval=3,
                  unit="nats")
    penalty, terms = pib(net)
    ref = iiw(net, nn.CrossEntropyLoss(reduction="none"), batches, prior_mean=prior, n_train=500, unit="nats")
    assert terms["iiw"] == pytest.approx(ref.total, rel=1e-8)
    assert float(penalty.detach()) == pytest.approx(0.5 * ref.total, rel=1e-8)
    # gradient = beta * n * F dw with F = G^T G / m (frozen Fisher)
    net.zero_grad()
    penalty.backward()
    g = per_example_gradients(net, loss_fn, batches)
    assert g.shape == (60, sum(p.numel() for p in net.parameters()))
    dw = torch.cat([(p - prior[k]).reshape(-1) for k, p in net.named_parameters()]).detach()
    expected = 0.5 * 500 * (g.T @ (g @ dw)) / g.shape[0]
    got = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
    assert torch.allclose(got, expected, rtol=1e-8)
    # at the prior mean the term is exactly 0
    pib0 = PIBLoss(net, 1.0, n_train=500, loss_fn=loss_fn, batches=batches)
    assert pib0(net)[1]["iiw"] == 0.0


def test_pib_interval_and_iiw_fn():
    net = nn.Linear(2, 2)
    calls = []

    def iiw_fn(model):
        calls.append(1)
        return (model.weight ** 2).sum()  # a small differentiable stand-in

    pib = PIBLoss(net, 1.0, iiw_fn=iiw_fn, interval=4)
    penalties = [pib(net)[0] for _ in range(8)]
    assert len(calls) == 2
    assert penalties[0].requires_grad and not penalties[1].requires_grad


@pytest.mark.parametrize("beta", [-0.1, float("inf"), AnnealingSchedule(-1.0, 1.0, 10)])
def test_pib_negative_beta(beta):
    with pytest.raises(ValueError, match="beta"):
        PIBLoss(nn.Linear(2, 2), beta, iiw_fn=lambda m: 0.0)


def test_train_gibbs_stops_on_nonfinite_loss_with_last_good_state(tmp_path):
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    x, y = torch.randn(40, 3), torch.randint(0, 2, (40,))
    counter = {"n": 0}

    def loss_fn(out, target):
        counter["n"] += 1
        loss = nn.functional.cross_entropy(out, target)
        return loss * float("nan") if counter["n"] == 7 else loss

    snapshots = []
    real_step = SGLD.step

    def spy(self, closure=None):
        out = real_step(self, closure)
        snapshots.append({k: v.clone() for k, v in net.state_dict().items()})
        return out

    SGLD.step = spy
    try:
        with pytest.raises(NonFiniteLossError, match=r"nan at step 6.*last good state.*saved") as info:
            train_gibbs(net, loss_fn, x, y, epochs=3, batch_size=10, lr=0.01, checkpoint_dir=tmp_path)
    finally:
        SGLD.step = real_step
    assert info.value.step == 6 and isinstance(info.value, ibscope.training.NonFiniteLossError)
    good = snapshots[-1]  # weights after the 6th (last successful) update
    for k, v in net.state_dict().items():
        assert torch.equal(v, good[k])
    saved = torch.load(info.value.checkpoint, weights_only=True)
    for k, v in saved["model"].items():
        assert torch.equal(v, good[k])


def test_train_gibbs_resume_equals_uninterrupted(tmp_path):
    """A chain with the PIB term, a decaying step and a posterior ensemble, stopped after an
    epoch and resumed from fit's checkpoint, ends exactly where the uninterrupted one does."""
    torch.manual_seed(0)
    x = torch.randn(40, 2, dtype=torch.float64)
    y = (x[:, 0] > 0).long()

    def net():
        torch.manual_seed(1)
        return nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 2)).double()

    kw = {"batch_size": 16, "lr": 0.05, "beta": 0.01, "pib_interval": 4, "pib_examples": 12, "decay_b": 5.0,
          "burn_in": 2, "thin": 2, "seed": 3}
    a = net()
    ref = train_gibbs(a, nn.functional.cross_entropy, x, y, epochs=4, **kw)

    calls = {"n": 0}
    real_step = SGLD.step

    def crashing_step(self, closure=None):  # 3 steps per epoch: crash inside epoch 3
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return real_step(self, closure)

    SGLD.step = crashing_step
    try:
        with pytest.raises(KeyboardInterrupt):
            train_gibbs(net(), nn.functional.cross_entropy, x, y, epochs=4, checkpoint_dir=tmp_path, **kw)
    finally:
        SGLD.step = real_step
    b = net()
    with torch.no_grad():
        for p in b.parameters():
            p.add_(1.0)  # everything must come from the checkpoint
    res = train_gibbs(b, nn.functional.cross_entropy, x, y, epochs=4, checkpoint_dir=tmp_path, **kw)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pb, pa, rtol=1e-12, atol=1e-12)
    assert res.n_steps == ref.n_steps and len(res.ensemble) == len(ref.ensemble)
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4]
    for ha, hb in zip(ref.history, res.history, strict=True):
        assert hb["loss"] == pytest.approx(ha["loss"], rel=1e-12) and hb["iiw"] == pytest.approx(ha["iiw"], rel=1e-9)
    torch.testing.assert_close(res.ensemble.predict_proba(x), ref.ensemble.predict_proba(x))


def test_train_gibbs_learns_and_keeps_samples():
    torch.manual_seed(0)
    x = torch.randn(200, 2)
    y = (x[:, 0] + x[:, 1] > 0).long()
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))
    res = train_gibbs(net, nn.functional.cross_entropy, x, y, epochs=30, batch_size=50, lr=0.5,
                      beta=1e-3, pib_interval=10, pib_examples=64, thin=5, seed=0)
    assert res.n_steps == 120 and len(res.ensemble) == 12
    acc = float((res.ensemble.predict(x) == y).float().mean())
    assert acc > 0.9
    assert all(math.isfinite(h["iiw"]) for h in res.history)


def test_train_gibbs_mismatched_shapes():
    with pytest.raises(ValueError, match="same number of samples"):
        train_gibbs(nn.Linear(2, 2), nn.functional.cross_entropy, torch.zeros(5, 2), torch.zeros(4).long(), epochs=1)
    with pytest.raises(ValueError, match="temperature"):
        train_gibbs(nn.Linear(2, 2), nn.functional.cross_entropy, torch.zeros(5, 2), torch.zeros(5).long(),
                    epochs=1, temperature=-1.0)
