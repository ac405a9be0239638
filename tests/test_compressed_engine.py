"""The compressed estimator's autoencoders train through the shared engine (``_train``).

``fit_autoencoder`` (held-out split, relative-plateau stopping rule, learning-
rate decays, augmentation noise) and ``autoencoder_compress`` (fixed epochs)
must call ``train_early_stopping`` and keep what the engine returns; the
stopping rule is checked on scripted held-out losses (the epoch it must stop
at is known exactly), and a reference loop written out from the documented
step order (seeded split, build, minibatch generator, noise generator, Adam,
held-out MSE, the relative rule with a decay) pins the fixed-seed result to
float rounding (rel 1e-6 on the same machine). No result is hard-coded.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ibscope.estimators import _compressed
from ibscope.estimators._compressed import autoencoder_compress, fit_autoencoder
from ibscope.estimators._train import batch_generator, seeded, train_early_stopping


def _images(n, side=8, seed=0):
    """Gaussian blobs of random centre and width on a side x side grid."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(1.5, side - 2.5, size=(n, 2))
    w = rng.uniform(0.8, 2.0, size=(n, 1, 1))
    g = np.arange(side)
    yy, xx = np.meshgrid(g, g, indexing="ij")
    d2 = (yy[None] - c[:, 0, None, None]) ** 2 + (xx[None] - c[:, 1, None, None]) ** 2
    return np.exp(-d2 / (2 * w ** 2)).reshape(n, -1)


@pytest.fixture
def spy(monkeypatch):
    """Record every engine call of ``_compressed`` (keywords and result); optionally script the losses."""
    calls, script = [], {}

    def engine(build, x, y, batch_loss, held_out, **kw):
        if "values" in script:
            it = iter(script["values"])
            real = held_out

            def held_out(m):
                real(m)
                return next(it)
        fit = train_early_stopping(build, x, y, batch_loss, held_out, **kw)
        calls.append((kw, fit))
        return fit

    monkeypatch.setattr(_compressed, "train_early_stopping", engine)
    return calls, script


SMALL = dict(channels=(4,), dense=8, batch_size=32, seed=0)
MLP = dict(architecture="mlp", hidden=(8,), batch_size=32, seed=0)  # the rule does not see the network


def test_fit_autoencoder_trains_through_the_engine(spy):
    calls, _ = spy
    ae = fit_autoencoder(_images(200), 2, max_epochs=2, patience=2, min_improvement=0.05,
                         lr_decays=1, zoom=0.2, code_noise=0.02, loss="mae", lr=2e-3, **SMALL)
    (kw, fit), = calls
    assert kw["minimize"] and kw["stopping"] == "relative" and kw["batch_rng"]
    assert {k: kw[k] for k in ("max_epochs", "patience", "min_delta", "lr_decays", "lr",
                               "batch_size")} == dict(max_epochs=2, patience=2, min_delta=0.05,
                                                      lr_decays=1, lr=2e-3, batch_size=32)
    assert ae.model is fit.module and ae.converged == fit.converged
    assert ae.history == [{"epoch": h["epoch"], "train_mae": h["train"], "val_mse": h["test"],
                           "lr": r} for h, r in zip(fit.history, fit.lrs)]
    assert ae.reconstruction_mse == fit.best_value
    fit_autoencoder(_images(200), 2, max_epochs=2, patience=None, **MLP)
    kw, fit = calls[-1]
    assert kw["patience"] is None and not kw["batch_rng"] and len(fit.history) == 2


def test_autoencoder_compress_trains_through_the_engine(spy):
    calls, _ = spy
    a = np.random.default_rng(0).normal(size=(100, 6))
    codes, info = autoencoder_compress(a, 2, hidden=(8,), epochs=3, batch_size=16, seed=1)
    (kw, fit), = calls
    assert kw["patience"] is None and kw["max_epochs"] == kw["eval_every"] == 3
    assert [h["epoch"] for h in fit.history] == [3] and info["model"] is fit.module
    assert info["reconstruction_mse"] == fit.best_value and codes.shape == (100, 2)
    with pytest.raises(ValueError, match="'epochs'"):
        autoencoder_compress(a, 2, epochs=0)


@pytest.mark.parametrize("lr_decays, epochs, lrs", [
    # relative rule (patience 2, 10%): epoch 3 fires (best 0.95 > 0.9 * 1.0); epoch 6 fires
    # (best 0.7 > 0.9 * 0.7, window restarted at epoch 3 by the decay)
    (0, 3, [1e-3] * 3),
    (1, 6, [1e-3] * 3 + [1e-4] * 3),
    (2, 8, [1e-3] * 3 + [1e-4] * 3 + [1e-5] * 2),  # then max_epochs: not converged
])
def test_fit_autoencoder_stopping_rule_on_scripted_losses(spy, lr_decays, epochs, lrs):
    _, script = spy
    script["values"] = [1.0, 0.95, 0.97, 0.7, 0.72, 0.71, 0.6, 0.5]
    ae = fit_autoencoder(_images(200), 2, max_epochs=8, patience=2, min_improvement=0.1,
                         lr_decays=lr_decays, **MLP)
    assert ae.epochs == epochs and ae.converged == (lr_decays < 2)
    assert [h["val_mse"] for h in ae.history] == script["values"][:epochs]
    assert [h["lr"] for h in ae.history] == pytest.approx(lrs, rel=1e-12)
    assert ae.reconstruction_mse == min(script["values"][:epochs])


def test_fit_autoencoder_never_finite_is_an_error(spy):
    _, script = spy
    script["values"] = [math.nan] * 3
    with pytest.raises(FloatingPointError, match="fit_autoencoder: the held-out reconstruction MSE"):
        fit_autoencoder(_images(200), 2, max_epochs=3, patience=None, **MLP)


def test_mlp_autoencoder_encodes():
    train, test = _images(200), _images(30, seed=1)
    ae = fit_autoencoder(train, 3, architecture="mlp", hidden=(16,), max_epochs=2, batch_size=32)
    codes = ae.encode(test)
    t = torch.as_tensor((test - ae.mean.numpy()) / ae.scale, dtype=torch.float32)
    with torch.no_grad():
        expected = ae.model.encoder(t).double().numpy()
    np.testing.assert_allclose(codes, expected, rtol=1e-6, atol=1e-7)


def _reference_fit(train, dim, *, hidden, max_epochs, patience, min_improvement, val_fraction,
                   batch_size, lr, seed, input_noise, code_noise, lr_decays):
    """The documented steps of fit_autoencoder('mlp') written out, as one loop."""
    t = torch.as_tensor(train, dtype=torch.float32)
    mean = t.mean(dim=0)
    scale = float((t - mean).std())
    t = (t - mean) / scale
    n = t.shape[0]
    n_val = max(1, int(round(val_fraction * n)))
    with seeded(seed, torch.device("cpu")):
        perm = torch.randperm(n, generator=batch_generator())
        val, tr = t[perm[:n_val]], t[perm[n_val:]]
        model = _compressed._AutoEncoder(t.shape[1], dim, hidden)
        gen, aug = batch_generator(), batch_generator()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        vals, best, best_state, start, decays, cur = [], math.inf, None, 0, 0, lr
        for _ in range(max_epochs):
            model.train()
            order = torch.randperm(tr.shape[0], generator=gen)
            for i in range(tr.shape[0] // batch_size):
                x = tr[order[i * batch_size:(i + 1) * batch_size]]
                inp = x + (input_noise / scale) * torch.randn(x.shape, generator=aug)
                code = model.encoder(inp)
                code = code + code_noise * torch.randn(code.shape, generator=aug)
                loss = ((model.decoder(code) - x) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                v = float(((model(val) - val) ** 2).mean())
            vals.append(v)
            if v < best:
                best, best_state = v, {k: w.clone() for k, w in model.state_dict().items()}
            window = vals[start:]
            if len(window) > patience and best > (1 - min_improvement) * min(window[:-patience]):
                if decays == lr_decays:
                    break
                decays, cur, start = decays + 1, cur / 10, len(vals)
                model.load_state_dict(best_state)
                for group in opt.param_groups:
                    group["lr"] = cur
    model.load_state_dict(best_state)
    return model.eval(), vals


def test_fit_autoencoder_matches_the_reference_loop():
    train = _images(240)
    params = dict(hidden=(16,), max_epochs=12, patience=2, min_improvement=0.3, val_fraction=0.2,
                  batch_size=32, lr=3e-3, seed=4, input_noise=0.05, code_noise=0.02, lr_decays=1)
    ref, vals = _reference_fit(train, 2, **params)
    ae = fit_autoencoder(train, 2, architecture="mlp", **params)
    assert [h["val_mse"] for h in ae.history] == pytest.approx(vals, rel=1e-6)
    # the rule fired twice (a decay, then the stop) before max_epochs: both paths exercised
    assert len({h["lr"] for h in ae.history}) == 2 and ae.converged and ae.epochs < 12
    for p, q in zip(ae.model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
