"""Stochastic Lanczos quadrature for the matrix entropy (Ubaru, Chen & Saad 2017) against closed forms, its
agreement with the exact eigenvalues, and the ``method=`` plumbing of ``matrix_entropy`` / ``prompt_entropy`` /
``dataset_entropy`` / ``analyze`` (issue 23, "Scale")."""

from __future__ import annotations

import math
import types

import pytest
import torch

from ibscope import lm
from ibscope.lm import _measures


def _known(n, d, s, seed=0, dtype=torch.float64):
    """Z = U diag(s) V^T (n x d, U, V orthonormal columns): the unit-trace Gram spectrum is s^2 / sum s^2."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n, len(s), generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, len(s), generator=g, dtype=torch.float64))
    return ((u * s) @ v.T).to(dtype)


def _closed_form(s, alpha):
    lam = s.double() ** 2 / (s.double() ** 2).sum()
    if alpha == 1:
        f = -lam * lam.log()
        return float(f.sum()), f
    f = lam ** alpha
    return math.log(float(f.sum())) / (1 - alpha), f


def _probe_bound(f, probes, alpha, total):
    """Standard deviation bound of the probe mean: Var(v^T P B P v) <= 2 |P B P|_F^2 <= 2 |B|_F^2 for Rademacher v
    (Hutchinson 1989), B = f(A); for alpha != 1 carried through S = log(tr B) / (1 - alpha) (delta method)."""
    sd = math.sqrt(2 * float((f ** 2).sum()) / probes)
    return sd if alpha == 1 else sd / (abs(1 - alpha) * total)


# --------------------------------------------------------------------------- closed forms

@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("shape", [(300, 100), (100, 300)])   # the D x D and the N x N side
def test_lanczos_recovers_known_spectra(alpha, shape):
    m = min(shape)
    s = torch.arange(1, m + 1, dtype=torch.float64) ** -0.5     # power law: lambda_i ~ 1/i
    z = _known(*shape, s)
    exact, f = _closed_form(s, alpha)
    probes = 16
    bound = _probe_bound(f, probes, alpha, float(f.sum()))
    errors, ses = [], []
    for seed in range(3):
        est = lm.lanczos_entropy(z, alpha, unit="nats", probes=probes, steps=30, seed=seed)
        assert est.unit == "nats" and est.probes == probes and est.steps == 30
        assert 0 < est.se <= bound                                # the reported se never exceeds the bound
        # one run: within 4 of its reported standard errors (+ the quadrature error, < 0.005 nats at 30 steps)
        assert abs(est.value - exact) <= 4 * est.se + 0.005
        errors.append(est.value - exact)
        ses.append(est.se)
    # the mean of 3 independent runs: unbiased, within 4 standard errors of that mean
    assert abs(sum(errors) / 3) <= 4 * math.sqrt(sum(x * x for x in ses)) / 3 + 0.005
    # float32 gives the same estimate up to rounding
    est32 = lm.lanczos_entropy(z.float(), alpha, unit="nats", probes=probes, steps=30, seed=0)
    est64 = lm.lanczos_entropy(z, alpha, unit="nats", probes=probes, steps=30, seed=0)
    assert est32.value == pytest.approx(est64.value, abs=1e-3)


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_flat_and_low_rank_spectra_are_exact(alpha):
    # orthogonal rows of equal norm: A = I / m, entropy log m; the probe mean is within its bound...
    z = 3.0 * _known(300, 120, torch.ones(120))
    exact, f = _closed_form(torch.ones(120), alpha)
    est = lm.lanczos_entropy(z, alpha, unit="nats", probes=4, steps=5)
    assert abs(est.value - math.log(120)) <= 4 * _probe_bound(f, 4, alpha, float(f.sum()))
    # ...and exact once the Hutch++ sketch (probes columns) spans all m = 120 dimensions
    est = lm.lanczos_entropy(z, alpha, unit="nats", probes=120, steps=5)
    assert est.value == pytest.approx(math.log(120), abs=1e-9)
    assert est.se == pytest.approx(0.0, abs=1e-9)
    # rank 10 of 80 (the Hutch++ sketch of 16 columns spans the range): entropy log 10, zero eigenvalues ignored
    z = _known(200, 80, torch.ones(10), seed=1)
    est = lm.lanczos_entropy(z, alpha, unit="nats", probes=16, steps=12)
    assert est.value == pytest.approx(math.log(10), abs=1e-9)
    # bits and normalizations
    assert lm.lanczos_entropy(z, alpha, probes=16, steps=12).value == pytest.approx(math.log2(10), abs=1e-9)
    norm = lm.lanczos_entropy(z, alpha, normalization="logD", probes=16, steps=12)
    assert norm.value == pytest.approx(math.log(10) / math.log(80), abs=1e-9)
    assert norm.unit == "fraction of logD"


def test_alpha_two_needs_two_steps_only():
    # Gauss quadrature with k nodes is exact for polynomials of degree 2k - 1: x^2 needs k = 2 (probe variance only)
    s = torch.linspace(1.0, 0.05, 90, dtype=torch.float64)
    z = _known(90, 200, s, seed=3)
    two = lm.lanczos_entropy(z, 2.0, unit="nats", probes=8, steps=2, seed=4)
    many = lm.lanczos_entropy(z, 2.0, unit="nats", probes=8, steps=60, seed=4)
    assert two.value == pytest.approx(many.value, abs=1e-9)
    exact, f = _closed_form(s, 2.0)
    assert abs(two.value - exact) <= 4 * _probe_bound(f, 8, 2.0, float(f.sum()))


# --------------------------------------------------------------------------- agreement with the exact path

@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_lanczos_agrees_with_exact_on_low_rank_plus_noise(alpha):
    g = torch.Generator().manual_seed(7)
    z = torch.randn(500, 12, generator=g) @ torch.randn(12, 160, generator=g) + 0.3 * torch.randn(500, 160, generator=g)
    exact = lm.matrix_entropy(z, alpha, unit="nats", method="exact")
    est = lm.lanczos_entropy(z, alpha, unit="nats", seed=1)
    assert abs(est.value - exact) <= 4 * est.se + 0.01
    assert est.se < 0.05
    assert lm.matrix_entropy(z, alpha, unit="nats", method="lanczos", seed=1) == est.value
    # the same seed gives the same estimate; another seed other probes (value and se)
    assert lm.lanczos_entropy(z, alpha, unit="nats", seed=1) == est
    assert lm.lanczos_entropy(z, alpha, unit="nats", seed=2) != est


def test_auto_switches_above_the_threshold(monkeypatch):
    z = torch.randn(60, 40, generator=torch.Generator().manual_seed(0))
    exact = lm.matrix_entropy(z, method="exact")
    assert lm.matrix_entropy(z) == exact                           # min(N, D) = 40 <= LANCZOS_MIN_SIZE
    assert lm.LANCZOS_MIN_SIZE >= 1000
    monkeypatch.setattr(_measures, "LANCZOS_MIN_SIZE", 39)
    lanczos = lm.matrix_entropy(z, method="lanczos")
    assert lm.matrix_entropy(z) == lanczos != exact
    assert lm.matrix_entropy(z, 0.5) == lm.matrix_entropy(z, 0.5, method="exact")   # alpha < 1: always exact
    assert lm.dataset_entropy(z) == lanczos


def test_prompt_entropy_by_lanczos_matches_each_prompt():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(3, 70, 50, generator=g) @ torch.randn(50, 50, generator=g)
    mask = torch.ones(3, 70, dtype=torch.long)
    mask[1, 50:] = 0                                               # padding never enters
    per = lm.prompt_entropy(h, mask, unit="nats", method="lanczos", reduce=False, probes=16, steps=30)
    for i in range(3):
        zi = h[i, : int(mask[i].sum())]
        one = lm.lanczos_entropy(zi, unit="nats", probes=16, steps=30)
        exact = lm.matrix_entropy(zi, unit="nats", method="exact")
        assert abs(float(per[i]) - exact) <= 4 * one.se + 0.01
    mean = lm.prompt_entropy(h, mask, unit="nats", method="lanczos", probes=16, steps=30)
    assert mean == pytest.approx(float(per.mean()), abs=1e-6)


# --------------------------------------------------------------------------- analyze

class _Dense(torch.nn.Module):
    """hidden_states = (embedding, tanh of a linear map): dense, full-rank representations."""

    def __init__(self, vocab=40, dim=24):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.emb = torch.nn.Embedding(vocab, dim)
        self.lin = torch.nn.Linear(dim, dim)
        with torch.no_grad():
            self.emb.weight.copy_(torch.randn(vocab, dim, generator=g))

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False):
        h = self.emb(input_ids)
        return types.SimpleNamespace(hidden_states=(h, torch.tanh(self.lin(h))))


def test_analyze_flags_the_lanczos_rows(tmp_path, monkeypatch):
    model = _Dense()
    ids = torch.randint(0, 40, (30, 20), generator=torch.Generator().manual_seed(2))
    exact = lm.analyze(model, ids, method="exact", measures=("prompt_entropy", "dataset_entropy",
                                                            "effective_rank"), unit="nats")
    assert not exact["flags"].str.contains("lanczos").any()
    auto = lm.analyze(model, ids, unit="nats", measures=("prompt_entropy", "dataset_entropy", "effective_rank"))
    assert auto.equals(exact)                                      # small matrices: 'auto' is exact
    lan = lm.analyze(model, ids, method="lanczos", unit="nats", out_dir=tmp_path, figure=False,
                     measures=("prompt_entropy", "dataset_entropy", "effective_rank"))
    assert "lanczos" in lm.FLAG_DESCRIPTIONS
    for measure in ("prompt_entropy", "dataset_entropy"):
        rows = lan[lan["measure"] == measure]
        assert rows["flags"].str.contains("lanczos").all()
        ref = exact[exact["measure"] == measure]["value"].to_numpy()
        assert abs(rows["value"].to_numpy() - ref).max() < 0.05    # nats, entropies ~ 3
    er = lan[lan["measure"] == "effective_rank"]
    assert not er["flags"].str.contains("lanczos").any()
    assert er["value"].to_numpy() == pytest.approx(exact[exact["measure"] == "effective_rank"]["value"].to_numpy())
    with pytest.raises(ValueError, match="other settings"):        # the method is part of the settings
        lm.analyze(model, ids, method="exact", unit="nats", out_dir=tmp_path, figure=False,
                   measures=("prompt_entropy", "dataset_entropy", "effective_rank"))
    # 'auto' above the threshold: the dataset matrix (30 prompts x 24) switches, the prompts (20 x 24) do not
    monkeypatch.setattr(_measures, "LANCZOS_MIN_SIZE", 20)
    mixed = lm.analyze(model, ids, unit="nats", ci=0.9, n_boot=5,
                       measures=("prompt_entropy", "dataset_entropy"))
    assert mixed.loc[mixed["measure"] == "dataset_entropy", "flags"].str.contains("lanczos").all()
    assert not mixed.loc[mixed["measure"] == "prompt_entropy", "flags"].str.contains("lanczos").any()
    ds = mixed[mixed["measure"] == "dataset_entropy"]
    assert (ds["value_lo"] <= ds["value_hi"]).all() and ds["value_lo"].notna().all()


# --------------------------------------------------------------------------- bad arguments

def test_bad_lanczos_arguments_are_refused_by_name():
    z = torch.randn(20, 10)
    with pytest.raises(ValueError, match="'method'"):
        lm.matrix_entropy(z, method="svd")
    with pytest.raises(ValueError, match="alpha >= 1"):
        lm.matrix_entropy(z, 0.5, method="lanczos")
    with pytest.raises(ValueError, match="alpha >= 1"):
        lm.lanczos_entropy(z, 0.5)
    for name, bad in (("probes", 0), ("probes", 1), ("probes", 2.5), ("steps", 0), ("steps", True),
                      ("seed", -1), ("seed", "0")):
        with pytest.raises(ValueError, match=f"'{name}'"):
            lm.lanczos_entropy(z, **{name: bad})
        with pytest.raises(ValueError, match=f"'{name}'"):
            lm.matrix_entropy(z, method="lanczos", **{name: bad})
    with pytest.raises(ValueError, match="'method'"):
        lm.prompt_entropy(torch.randn(2, 5, 3), method="eig")
    with pytest.raises(ValueError, match="'method'"):
        lm.dataset_entropy(torch.randn(4, 3), method=None)
    with pytest.raises(ValueError, match="all zeros"):
        lm.lanczos_entropy(torch.zeros(5, 4))
    with pytest.raises(ValueError, match="NaN"):
        lm.lanczos_entropy(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="log 1"):
        lm.lanczos_entropy(torch.randn(1, 4), normalization="logN")
    with pytest.raises(ValueError, match="'method'"):
        lm.analyze(_Dense(), torch.zeros(2, 3, dtype=torch.long), method="fast")


# --------------------------------------------------------------------------- the rank tolerance of the exact path

@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_float32_keeps_small_true_eigenvalues(alpha):
    # one massive direction (as in LM activations) and 255 weak ones at 1e-5 of it: resolvable in float32
    # (rounding noise ~3 eps = 4e-7), but below the old rule m * eps = 3e-5, which zeroed them
    s = torch.cat([torch.ones(1), torch.full((255,), 1e-5)]).double().sqrt()
    z = _known(400, 256, s, seed=5, dtype=torch.float32)
    exact, _ = _closed_form(s, alpha)
    assert lm.matrix_entropy(z, alpha, unit="nats", method="exact") == pytest.approx(exact, abs=2e-3)
    assert exact > 0.03                                            # what the old rule lost
