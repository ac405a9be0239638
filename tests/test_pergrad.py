"""The shared per-example-gradient engine (ibscope.weights._pergrad) against torch.func per-sample
gradients of the whole model (vmap(grad)), in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ibscope.weights._pergrad import capture, per_example_loss, vmap_gradients


class Shared(nn.Module):
    """One Linear used twice (weight sharing) and a Linear on (batch, tokens, features) inputs."""

    def __init__(self):
        super().__init__()
        self.a, self.seq, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x):
        h = torch.tanh(self.a(torch.tanh(self.a(x))))
        h = self.seq(h.reshape(h.shape[0], 2, 2).repeat(1, 1, 2)).mean(1)  # rank-3 input
        return self.head(h)


def _models():
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, groups=2), nn.Tanh(),
                         nn.Conv2d(6, 6, 3, stride=2, dilation=1, groups=3, bias=False), nn.Tanh(),
                         nn.Conv2d(6, 4, 1), nn.Flatten(), nn.Linear(4 * 2 * 2, 3)).double()
    generic = nn.Sequential(nn.Linear(5, 6), nn.LayerNorm(6), nn.Tanh(), nn.BatchNorm1d(6), nn.Linear(6, 3)).double()
    generic.eval()
    with torch.no_grad():  # non-trivial running statistics
        generic[3].running_mean.uniform_(-0.5, 0.5)
        generic[3].running_var.uniform_(0.5, 1.5)
    g = torch.Generator().manual_seed(1)
    return [("grouped_conv", conv, torch.randn(7, 4, 5, 5, generator=g, dtype=torch.float64)),
            ("generic", generic, torch.randn(7, 5, generator=g, dtype=torch.float64)),
            ("shared", Shared().double(), torch.randn(7, 4, generator=g, dtype=torch.float64))]


@pytest.mark.parametrize("name, model, x", _models(), ids=lambda v: v if isinstance(v, str) else "")
def test_gradients_norms_projections_match_torch_func(name, model, x):
    model.eval()
    y = torch.tensor([0, 1, 2, 0, 1, 2, 1])
    names = [n for n, _ in model.named_parameters()]
    ref = vmap_gradients(model, names, F.cross_entropy, x, y)
    cap = capture(model, names, lambda out: F.cross_entropy(out, y, reduction="none"), x)
    assert cap.per_example and cap.rows == 7
    got = cap.gradients()
    for n in names:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-10, atol=1e-12, msg=n)
    ref_sq = torch.stack([ref[n].pow(2).reshape(7, -1).sum(1) for n in names], 1)
    sq = cap.sq_norms()
    if name == "shared":
        assert sq is None  # a layer called twice: the caller falls back to vmap_gradients
    else:
        torch.testing.assert_close(sq, ref_sq, rtol=1e-10, atol=1e-12)
    gen = torch.Generator().manual_seed(2)
    direction = {n: torch.randn(p.shape, generator=gen, dtype=p.dtype) for n, p in model.named_parameters()}
    ref_proj = torch.stack([(ref[n] * direction[n]).reshape(7, -1).sum(1) for n in names], 1)
    torch.testing.assert_close(cap.projections(direction), ref_proj, rtol=1e-10, atol=1e-12)


def test_grouped_conv_blocks_are_exact():
    """The grouped-conv gradient is block-diagonal: no cross-group term (the case the old
    fisher fast path excluded and the old iiw path handled)."""
    torch.manual_seed(3)
    conv = nn.Conv2d(4, 4, 2, groups=4, bias=False).double()
    x = torch.randn(3, 4, 3, 3, dtype=torch.float64)
    cap = capture(conv, ["weight"], lambda out: out.pow(2).sum((1, 2, 3)), x)
    g = cap.gradients()["weight"]
    ref = vmap_gradients(conv, ["weight"], lambda o, t: o.pow(2).sum(), x, torch.zeros(3))["weight"]
    torch.testing.assert_close(g, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(cap.sq_norms()[:, 0], ref.pow(2).reshape(3, -1).sum(1), rtol=1e-10, atol=1e-12)


def test_differentiable_projections_give_fisher_times_direction():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Tanh(), nn.Flatten(), nn.Linear(4, 2)).double().eval()
    x, y = torch.randn(5, 2, 3, 3, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1])
    names = [n for n, _ in model.named_parameters()]
    cap = capture(model, names, lambda out: per_example_loss(F.cross_entropy, out, y), x)
    d = {n: torch.randn(p.shape, dtype=p.dtype, requires_grad=True) for n, p in model.named_parameters()}
    q = cap.projections(d).sum(1).pow(2).sum()
    q.backward()
    g = vmap_gradients(model, names, F.cross_entropy, x, y)
    flat = torch.cat([g[n].reshape(5, -1) for n in names], 1)
    dv = torch.cat([d[n].detach().reshape(-1) for n in names])
    expected = 2 * flat.T @ (flat @ dv)
    torch.testing.assert_close(torch.cat([d[n].grad.reshape(-1) for n in names]), expected, rtol=1e-10, atol=1e-12)


def test_scalar_loss_is_one_row_and_bad_shapes_are_refused():
    torch.manual_seed(5)
    lin = nn.Linear(3, 2).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    cap = capture(lin, ["weight", "bias"], lambda out: out.pow(2).mean(), x)
    assert not cap.per_example and cap.rows == 1
    lin.zero_grad()
    lin(x).pow(2).mean().backward()
    got = cap.gradients()
    torch.testing.assert_close(got["weight"][0], lin.weight.grad)
    torch.testing.assert_close(got["bias"][0], lin.bias.grad)
    with pytest.raises(ValueError, match="per-example losses or a scalar"):
        capture(lin, ["weight"], lambda out: out, x)
    with pytest.raises(ValueError, match="NaN or infinite"):
        capture(lin, ["weight"], lambda out: out.sum(1) * float("nan"), x)
