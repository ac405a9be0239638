"""VIB, dual IB, CS-IB, matrix-Renyi losses and annealing schedules against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from ibscope.objectives import (
    AnnealingSchedule,
    CSIBLoss,
    DualIBLoss,
    NoisyLabels,
    StochasticEncoder,
    VIBClassifier,
    VIBLoss,
    VIBOutput,
    cs_divergence,
    cs_qmi,
    gaussian_gram,
    gaussian_kl,
    kernel_width,
    matrix_renyi_entropy,
    matrix_renyi_mi,
    vib_bounds,
)

LN2 = math.log(2.0)


# ----------------------------------------------------------------------- VIB
def test_gaussian_kl_matches_closed_form_and_torch():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(7, 5, generator=g, dtype=torch.float64)
    std = torch.rand(7, 5, generator=g, dtype=torch.float64) + 0.2
    ours = gaussian_kl(mu, std)
    hand = 0.5 * (std**2 + mu**2 - 1 - torch.log(std**2)).sum(-1)
    dist = torch.distributions
    ref = dist.kl_divergence(dist.Normal(mu, std), dist.Normal(torch.zeros_like(mu), torch.ones_like(std))).sum(-1)
    assert torch.allclose(ours, hand, rtol=1e-12) and torch.allclose(ours, ref, rtol=1e-10)
    assert torch.all(gaussian_kl(torch.zeros(3, 4), torch.ones(3, 4)) == 0)


def test_vib_loss_terms_in_bits():
    torch.manual_seed(0)
    enc = StochasticEncoder(6, latent_dim=4, hidden=(8,), seed=0)
    model = VIBClassifier(enc, n_classes=3, seed=0)
    x, y = torch.randn(10, 6), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    out = model(x, n_samples=2)
    assert out.logits.shape == (2, 10, 3) and out.z.shape == (2, 10, 4)
    # std = softplus(rho - 5): small at initialization
    assert float(out.std.detach().max()) < 0.05
    loss, terms = VIBLoss(beta=0.1)(out, y)
    ce = torch.nn.functional.cross_entropy(out.logits.reshape(20, 3), y.repeat(2))
    kl = gaussian_kl(out.mu, out.std).mean()
    assert float(loss.detach()) == pytest.approx(float((ce + 0.1 * kl).detach()) / LN2, rel=1e-6)
    assert terms["kl"] == pytest.approx(float(kl.detach()) / LN2, rel=1e-6) and terms["unit"] == "bits"
    h_y = -(torch.tensor([0.4, 0.3, 0.3]) * torch.tensor([0.4, 0.3, 0.3]).log()).sum()
    assert terms["izy_lower"] == pytest.approx(max(float((h_y - ce).detach()), 0) / LN2, abs=1e-6)
    loss_n, terms_n = VIBLoss(beta=0.1, unit="nats")(out, y)
    assert float(loss_n.detach()) == pytest.approx(float(loss.detach()) * LN2, rel=1e-6)


def test_vib_trains_and_bounds():
    torch.manual_seed(0)
    x = torch.randn(200, 2)
    y = (x[:, 0] > 0).long()
    model = VIBClassifier(StochasticEncoder(2, latent_dim=2, hidden=(16,), seed=0), n_classes=2, seed=0)
    crit = VIBLoss(beta=1e-3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        loss, _ = crit(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    b = vib_bounds(model, x, y, n_samples=12)
    assert b["accuracy"] > 0.95 and b["unit"] == "bits"
    assert 0 < b["izy_lower"] <= b["h_y"] + 1e-9
    assert b["izx_upper"] > b["izy_lower"]  # data-processing: I(Z;X) >= I(Z;Y)
    assert model.predict_proba(x[:5]).shape == (5, 2)


def test_vib_bad_input():
    out = VIBOutput(torch.zeros(1, 4, 3), torch.zeros(1, 4, 2), torch.zeros(4, 2), torch.ones(4, 2))
    with pytest.raises(ValueError, match="beta"):
        VIBLoss(beta=-1.0)
    with pytest.raises(ValueError, match="'y'"):
        VIBLoss()(out, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="same shape"):
        gaussian_kl(torch.zeros(3, 2), torch.ones(3, 4))
    with pytest.raises(ValueError, match="class_prior"):
        VIBLoss(class_prior=[0.5, 0.6])


# ------------------------------------------------------------------ dual IB
def test_noisy_labels():
    y = torch.tensor([0, 2])
    p = NoisyLabels.smoothing(0.3, 3)(y)
    assert torch.allclose(p, torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]], dtype=torch.float64))
    c = torch.tensor([[0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.2, 0.2, 0.6]])
    q = NoisyLabels.confusion(c, floor=1e-3)(y)
    assert torch.all(q > 0) and torch.allclose(q.sum(1), torch.ones(2, dtype=torch.float64))
    assert q[1, 2] == pytest.approx(0.6 / 1.0, rel=1e-6)
    teacher = NoisyLabels.teacher(lambda x: x, 3, temperature=2.0)
    t = teacher(y, torch.tensor([[0.0, 2.0, 4.0], [1.0, 1.0, 1.0]]))
    assert torch.allclose(t[0], torch.softmax(torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64), 0))
    with pytest.raises(ValueError, match="sum to 1"):
        NoisyLabels.confusion([[0.5, 0.4], [0.5, 0.5]])
    with pytest.raises(ValueError, match="eps"):
        NoisyLabels.smoothing(0.0, 3)
    with pytest.raises(ValueError, match="outside"):
        NoisyLabels.smoothing(0.1, 3)(torch.tensor([3]))


def test_dual_ib_loss_matches_reverse_kl_and_is_minimized_by_noisy_labels():
    eps, k = 0.2, 4
    noisy = NoisyLabels.smoothing(eps, k)
    y = torch.tensor([0, 1, 3])
    target = noisy(y)
    out = VIBOutput(target.log().unsqueeze(0).float(), torch.zeros(1, 3, 2), torch.zeros(3, 2), torch.ones(3, 2))
    loss, terms = DualIBLoss(beta=1.0, noisy_labels=noisy, unit="nats")(out, y)
    assert terms["dual_kl"] == pytest.approx(0.0, abs=1e-6) and float(loss) == pytest.approx(0.0, abs=1e-6)
    logits = torch.randn(2, 3, k, generator=torch.Generator().manual_seed(1))
    out2 = VIBOutput(logits, torch.zeros(2, 3, 2), torch.zeros(3, 2), torch.ones(3, 2))
    _, t2 = DualIBLoss(beta=1.0, noisy_labels=noisy, unit="nats")(out2, y)
    q = torch.softmax(logits.double(), -1)
    ref = (q * (q.log() - target.log())).sum(-1).mean()
    assert t2["dual_kl"] == pytest.approx(float(ref), rel=1e-5) and t2["dual_kl"] > 0
    with pytest.raises(ValueError, match="classes"):
        DualIBLoss(noisy_labels=NoisyLabels.smoothing(0.1, 3))(out2, y)


def test_annealing_schedule():
    lin = AnnealingSchedule(0.0, 1.0, n_steps=10, warmup=5)
    assert [lin(t) for t in (0, 5, 10, 15, 1000)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    log = AnnealingSchedule(1e-4, 1e-1, n_steps=3, kind="log")
    assert [round(log(t), 12) for t in range(5)] == [1e-4, 1e-3, 1e-2, 1e-1, 1e-1]
    cos = AnnealingSchedule(2.0, 0.0, n_steps=4, kind="cosine")
    vals = [cos(t) for t in range(6)]
    assert vals[0] == 2.0 and vals[2] == pytest.approx(1.0) and vals[4:] == [0.0, 0.0]
    assert all(a >= b for a, b in zip(vals, vals[1:], strict=False))
    step = AnnealingSchedule(1.0, 3.0, n_steps=2, kind="step")
    assert [step(t) for t in range(4)] == [1.0, 1.0, 3.0, 3.0]
    with pytest.raises(ValueError, match="log"):
        AnnealingSchedule(0.0, 1.0, 5, kind="log")
    with pytest.raises(ValueError, match="n_steps"):
        AnnealingSchedule(0.0, 1.0, 0)
    with pytest.raises(ValueError, match="step"):
        lin(-1)


def test_schedule_drives_loss_weight_by_optimizer_steps():
    # the weight must follow optimizer steps, whatever the batch size / epoch length
    sched = AnnealingSchedule(0.0, 1.0, n_steps=4)
    crit = VIBLoss(beta=sched)
    out = VIBOutput(torch.zeros(1, 2, 2), torch.zeros(1, 2, 1), torch.ones(2, 1), torch.ones(2, 1))
    seen = []
    for _ in range(6):
        seen.append(crit(out, torch.tensor([0, 1]))[1]["beta"])
        crit.step()
    assert seen == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    with pytest.raises(ValueError, match="beta"):
        VIBLoss(beta=AnnealingSchedule(1.0, -1.0, 4))


# -------------------------------------------------------------------- CS-IB
@pytest.mark.parametrize("dim", [1, 2])
def test_cs_divergence_identical_is_zero_and_grows(dim):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(80, 3, generator=g, dtype=torch.float64)
    y = x[:, :dim] ** 2 + 0.1 * torch.randn(80, dim, generator=g, dtype=torch.float64)
    if dim == 1:
        y = y[:, 0]
    assert float(cs_divergence(x, y, y.clone())) == pytest.approx(0.0, abs=1e-12)
    ds = [float(cs_divergence(x, y, y + c)) for c in (0.1, 0.3, 1.0)]
    assert 0 < ds[0] < ds[1] < ds[2]


def test_cs_divergence_is_not_squared_error_for_1d_targets():
    # Regression test for the reference bug (a constant kernel on 1-D targets
    # made the "CS divergence" plain squared error). Two predictions with the
    # same squared error must get different divergences, and the 1-D target
    # kernel must not be constant.
    g = torch.Generator().manual_seed(1)
    x = torch.randn(100, 2, generator=g, dtype=torch.float64)
    y = torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(100, generator=g, dtype=torch.float64)
    shift = y + 0.5                                     # MSE = 0.25
    signs = torch.where(torch.arange(100) % 2 == 0, 1.0, -1.0).double()
    jitter = y + 0.5 * signs                            # MSE = 0.25 as well
    assert float(((shift - y) ** 2).mean()) == pytest.approx(float(((jitter - y) ** 2).mean()))
    d_shift, d_jitter = float(cs_divergence(x, y, shift)), float(cs_divergence(x, y, jitter))
    assert abs(d_shift - d_jitter) > 0.01
    assert d_shift != pytest.approx(0.25, rel=0.05)
    k = gaussian_gram(y, kernel_width(y))
    assert float(k.min()) < 0.5 and float(k.max()) == 1.0


def test_cs_divergence_gradient_and_shapes():
    x = torch.randn(30, 2, dtype=torch.float64)
    y = torch.randn(30, 2, dtype=torch.float64)
    y_hat = (y + 0.3).requires_grad_(True)
    cs_divergence(x, y, y_hat).backward()
    assert y_hat.grad is not None and torch.isfinite(y_hat.grad).all() and y_hat.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="same shape"):
        cs_divergence(x, y, y[:, :1])
    with pytest.raises(ValueError, match="same number of samples"):
        cs_divergence(x[:10], y, y)
    with pytest.raises(ValueError, match="rule"):
        kernel_width(y, "scott")


def test_cs_qmi():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(200, 1, generator=g, dtype=torch.float64)
    indep = torch.randn(200, 1, generator=g, dtype=torch.float64)
    kx = gaussian_gram(x, 0.5)
    i_self = float(cs_qmi(kx, kx))
    i_dep = float(cs_qmi(kx, gaussian_gram(x + 0.3 * indep, 0.5)))
    i_ind = float(cs_qmi(kx, gaussian_gram(indep, 0.5)))
    assert 0 <= i_ind < 0.05 < i_dep < i_self
    # the formula, written out with explicit matrix products
    kz = gaussian_gram(indep, 0.5)
    n, one = 200, torch.ones(200, 1, dtype=torch.float64)
    ref = (math.log(float(torch.trace(kx @ kz)) / n**2) + math.log(float(kx.sum() * kz.sum()) / n**4)
           - 2 * math.log(float(one.T @ kx @ kz @ one) / n**3))
    assert i_ind == pytest.approx(ref, rel=1e-9, abs=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        cs_qmi(kx, kx[:10, :10])


def test_csib_loss():
    torch.manual_seed(0)
    x = torch.randn(50, 3)
    z = torch.tanh(x @ torch.randn(3, 2)).requires_grad_(True)
    y = x[:, :1]
    loss, terms = CSIBLoss(beta=0.1)(x, z, y, y + 0.2)
    loss.backward()
    assert z.grad is not None and terms["i_cs"] > 0 and terms["cs_div"] > 0
    assert float(loss.detach()) == pytest.approx((terms["cs_div"] + 0.1 * terms["i_cs"]) * LN2, rel=1e-5)
    with pytest.raises(ValueError, match="beta"):
        CSIBLoss(beta=-0.5)
    with pytest.raises(ValueError, match="sigma_y"):
        CSIBLoss(sigma_y="scott")


# ------------------------------------------------------------- matrix Renyi
@pytest.mark.parametrize("alpha", [0.5, 1.01, 2.0, 3.0])
@pytest.mark.parametrize("n", [4, 16])
def test_matrix_renyi_entropy_of_orthogonal_points(alpha, n):
    pts = torch.eye(n, dtype=torch.float64) * 10.0     # mutually far apart: Gaussian Gram = I
    k = gaussian_gram(pts, 1.0)
    assert float(matrix_renyi_entropy(k, alpha)) == pytest.approx(math.log2(n), rel=1e-9)
    assert float(matrix_renyi_entropy(k, alpha, unit="nats")) == pytest.approx(math.log(n), rel=1e-9)
    # all points identical: one eigenvalue 1 -> entropy 0
    # round-off eigenvalues are cut at the numerical rank, so alpha < 1 gives 0 too
    assert float(matrix_renyi_entropy(torch.ones(n, n, dtype=torch.float64), alpha)) == pytest.approx(0.0, abs=1e-12)


def test_matrix_renyi_mi_and_gradient():
    x = torch.randn(40, 2, dtype=torch.float64, requires_grad=True)
    kx = gaussian_gram(x, 1.0)
    mi_self = matrix_renyi_mi(kx, kx)
    assert float(mi_self.detach()) > 0
    mi_self.backward()
    assert torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="alpha"):
        matrix_renyi_entropy(kx.detach(), 1.0)
    with pytest.raises(ValueError, match="same"):
        matrix_renyi_mi(kx.detach(), kx.detach()[:5, :5])
