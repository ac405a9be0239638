"""The synthetic Markov language (ibscope.lm.MarkovSource): exact entropy rate and next-token information
against closed forms and Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ibscope.lm import MarkovSource


def test_deterministic_chain_has_zero_entropy_rate():
    v = 5
    p = np.zeros((v, v))
    p[np.arange(v), (np.arange(v) + 1) % v] = 1.0          # x -> x + 1 mod V (periodic, irreducible)
    src = MarkovSource.from_transitions(p)
    assert src.entropy_rate() == pytest.approx(0.0, abs=1e-12)
    assert src.next_token_entropy() == pytest.approx(math.log2(v), abs=1e-9)
    assert src.next_token_information() == pytest.approx(math.log2(v), abs=1e-9)
    x = src.sample(3, 12, seed=1)
    assert ((x[:, 1:] - x[:, :-1]) % v == 1).all()


@pytest.mark.parametrize("order", [1, 2])
def test_iid_source_has_entropy_rate_of_its_marginal(order):
    v = 4
    q = np.array([0.5, 0.25, 0.125, 0.125])
    src = MarkovSource.from_transitions(np.tile(q, (v ** order, 1)), order=order)
    assert src.entropy_rate() == pytest.approx(1.75, abs=1e-9)            # H(q) in bits
    assert src.entropy_rate("nats") == pytest.approx(1.75 * math.log(2), abs=1e-9)
    assert src.next_token_information() == pytest.approx(0.0, abs=1e-9)
    u = MarkovSource.from_transitions(np.full((v ** order, v), 1 / v), order=order)
    assert u.entropy_rate() == pytest.approx(math.log2(v), abs=1e-9)
    np.testing.assert_allclose(u.stationary, 1 / v ** order, atol=1e-12)


@pytest.mark.parametrize("order", [1, 2])
def test_random_source_matches_monte_carlo(order):
    src = MarkovSource(6, order, support=3, concentration=0.7, seed=3)
    assert np.count_nonzero(src.transitions, axis=1).max() == 3
    np.testing.assert_allclose(src.transitions.sum(1), 1.0, atol=1e-12)
    x = src.sample(400, 500, seed=0)
    v, k = 6, order
    ctx = sum(x[:, i:x.shape[1] - k + i] * v ** (k - 1 - i) for i in range(k)).ravel()
    y = x[:, k:].ravel()
    joint = np.zeros((v ** k, v))
    np.add.at(joint, (ctx, y), 1.0)
    joint /= joint.sum()
    pc = joint.sum(1)
    nz = joint > 0
    h_cond = -(joint[nz] * np.log2((joint / np.where(pc[:, None] > 0, pc[:, None], 1))[nz])).sum()
    qy = joint.sum(0)
    h_y = -(qy[qy > 0] * np.log2(qy[qy > 0])).sum()
    # 200k pairs: plug-in bias ~ (#cells)/(2 n ln 2) < 1e-3 bit; sampling sd ~ 3e-3 bit
    assert h_cond == pytest.approx(src.entropy_rate(), abs=0.02)
    assert h_y - h_cond == pytest.approx(src.next_token_information(), abs=0.02)
    np.testing.assert_allclose(pc, src.stationary, atol=0.01)
    assert 0 < src.entropy_rate() < math.log2(3) + 1e-9                   # at most log2(support) per context


def test_seeded_and_validated():
    a, b = MarkovSource(8, 2, seed=5), MarkovSource(8, 2, seed=5)
    np.testing.assert_array_equal(a.transitions, b.transitions)
    np.testing.assert_array_equal(a.sample(2, 10, seed=1), b.sample(2, 10, seed=1))
    assert not np.array_equal(a.transitions, MarkovSource(8, 2, seed=6).transitions)
    for kw, name in (({"vocab_size": 1}, "vocab_size"), ({"order": 0}, "order"), ({"support": 9}, "support"),
                     ({"concentration": -1.0}, "concentration")):
        with pytest.raises(ValueError, match=name):
            MarkovSource(**{"vocab_size": 8, **kw})
    with pytest.raises(ValueError, match="reducible"):
        MarkovSource.from_transitions(np.eye(3))
    with pytest.raises(ValueError, match="length"):
        a.sample(2, 2)
