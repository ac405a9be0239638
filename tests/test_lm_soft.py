"""Soft entropy and the soft-entropy information plane (Conklin & Hosking, ICLR 2026) against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from ibscope import lm


def _one_hot(k, n=1000, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    lab = torch.randint(0, k, (n,), generator=g)
    return torch.nn.functional.one_hot(lab, d).float(), lab


@pytest.mark.parametrize("k", [2, 4, 8])
def test_one_hot_code_gives_log_k_as_temperature_goes_to_zero(k):
    z, lab = _one_hot(k)
    # K well-separated points, each in its own Voronoi cell of 512 random centres: H = H(labels) -> log2 K
    h_lab = -sum(p * math.log2(p) for p in (torch.bincount(lab) / len(lab)).tolist() if p > 0)
    h = lm.soft_entropy(z, n_bins=512, temperature=1e-4, n_draws=4)
    assert h == pytest.approx(h_lab, abs=0.02)
    assert h_lab == pytest.approx(math.log2(k), abs=0.01)
    i_xt, i_ty = lm.soft_information_plane(z, lab, n_bins=512, temperature=1e-4, n_draws=4)
    assert i_xt == pytest.approx(h, abs=1e-12)
    assert i_ty == pytest.approx(h_lab, abs=0.02)          # T determines Y: I(T;Y) = H(Y)
    # a warmer quantiser spreads each point over bins: more entropy, never above log2 M
    warm = lm.soft_entropy(z, n_bins=512, temperature=1.0, n_draws=4)
    assert h + 0.5 < warm <= math.log2(512) + 1e-9
    assert lm.soft_entropy(z, n_bins=512, temperature=1e-4, n_draws=4, unit="nats") == pytest.approx(h * math.log(2), rel=1e-9)


def test_constant_representation_has_zero_soft_entropy():
    assert lm.soft_entropy(torch.full((50, 4), 3.0)) == 0.0
    i_xt, i_ty = lm.soft_information_plane(torch.full((50, 4), 3.0), torch.arange(50) % 3)
    assert (i_xt, i_ty) == (0.0, 0.0)


def test_independent_labels_carry_no_information():
    g = torch.Generator().manual_seed(1)
    t = torch.randn(6000, 32, generator=g)
    y = torch.randint(0, 4, (6000,), generator=g)
    i_xt, i_ty = lm.soft_information_plane(t, y, n_bins=32)
    assert i_xt > 4.0                                      # a spread-out representation: near log2 32 = 5
    # plug-in bias of 4 classes of 1500 items, 32 bins: <= (M - 1) / (2 n_y ln 2) = 0.015 bit per class
    assert 0 <= i_ty < 0.03
    # a label that is a function of T's direction is informative
    t2 = t[:, :2]                                          # the sign of a coordinate in 2-D: ~1 bit
    assert 0.6 < lm.soft_information_plane(t2, (t2[:, 0] > 0).long(), n_bins=32)[1] <= 1.0


def test_seeded_and_validated():
    z, lab = _one_hot(4, n=200)
    assert lm.soft_entropy(z, seed=3) == lm.soft_entropy(z, seed=3)
    for kw, name in (({"n_bins": 1}, "n_bins"), ({"temperature": 0.0}, "temperature"), ({"n_draws": 0}, "n_draws")):
        with pytest.raises(ValueError, match=name):
            lm.soft_entropy(z, **kw)
    with pytest.raises(ValueError, match="NaN"):
        lm.soft_entropy(torch.full((3, 2), float("nan")))
    with pytest.raises(ValueError, match="'y'"):
        lm.soft_information_plane(z, lab[:10])
    with pytest.raises(TypeError, match="'y'"):
        lm.soft_information_plane(z, lab.double())
    with pytest.raises(TypeError, match="'z'"):
        lm.soft_entropy(z.numpy())


# --------------------------------------------------------------------------- through analyze (no transformers)

class _OneHot(torch.nn.Module):
    """hidden_states = (one-hot tokens, zeros): layer 0 determines the next token here, layer 1 carries nothing."""

    def __init__(self, vocab=16):
        super().__init__()
        self.vocab = vocab
        self.unused = torch.nn.Parameter(torch.zeros(1))      # analyze reads the device from a parameter

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False):
        import types

        h = torch.nn.functional.one_hot(input_ids, self.vocab).float()
        return types.SimpleNamespace(hidden_states=(h, torch.zeros_like(h)))


def test_analyze_soft_plane_recovers_the_plug_in_plane():
    g = torch.Generator().manual_seed(0)
    start = torch.randint(0, 8, (40, 1), generator=g)
    ids = (start + torch.arange(6)) % 8                      # next token = current + 1 (mod 8)
    mask = torch.ones_like(ids)
    mask[:10, 4:] = 0                                        # padding: no pair across it
    df = lm.analyze(_OneHot(), ids, mask, measures=["soft_plane"], soft_bins=512, soft_temperature=1e-6,
                    soft_draws=2)
    assert set(df["measure"]) == set(lm.SOFT_MEASURES) and (df["unit"] == "bits").all()
    pair = (mask[:, :-1] * mask[:, 1:]).bool()
    cur = ids[:, :-1][pair]
    p = torch.bincount(cur, minlength=8).double() / len(cur)
    h = float(-(p[p > 0] * p[p > 0].log2()).sum())
    l0 = df[df["layer"] == "hidden_states.0"].set_index("measure")["value"]
    assert l0["soft_i_xt"] == pytest.approx(h, abs=0.02)      # I(X;T) = H(token) for a one-hot state
    assert l0["soft_i_ty"] == pytest.approx(h, abs=0.02)      # the token determines the next: I(T;Y) = H(T)
    assert int(df["n_tokens"].iloc[0]) == int(pair.sum())
    l1 = df[df["layer"] == "hidden_states.1"].set_index("measure")["value"]
    assert l1["soft_i_xt"] == 0.0 and l1["soft_i_ty"] == 0.0  # a constant layer holds nothing
    with pytest.raises(ValueError, match="temperature"):
        lm.analyze(_OneHot(), ids, mask, measures=["soft_plane"], soft_temperature=-1.0)
    with pytest.raises(ValueError, match="measures"):
        lm.analyze(_OneHot(), ids, mask, measures=["soft_planes"])


def test_calibrated_temperature_is_the_leading_order_calibration_of_the_reference_code():
    # eps = 1 / sqrt(2 D ln M) on raw cosines == tau = 1 / sqrt(2 ln M) on sqrt(D)-scaled cosines
    z = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    for m in (10, 100):
        tau = 1.0 / math.sqrt(2.0 * math.log(m))
        a = lm.soft_entropy(z, n_bins=m, temperature="calibrated", n_draws=1, center=False, unit="nats")
        b = lm.soft_entropy(z, n_bins=m, temperature=tau, n_draws=1, center=False, unit="nats")
        assert a == b
        assert 0.0 < a / math.log(m) <= 1.0  # the reference code's efficiency H / ln M
    with pytest.raises(ValueError, match="temperature"):
        lm.soft_entropy(z, temperature="hot")
