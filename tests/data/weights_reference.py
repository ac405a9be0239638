"""Cases whose values must not change when the weights / PIB / iiw-experiment code is refactored.

``python tests/data/weights_reference.py OUT.csv`` writes one row per value
(case, key, value); tests/test_weights_unchanged.py recomputes the same cases
and compares them with tests/data/weights_reference.csv (see README there for
the commit that produced it). Only public APIs that exist before and after
the refactor are called.
"""

from __future__ import annotations

import sys
import tempfile

import torch
from torch import nn


def _conv_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 4, 3, groups=2),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).double()


def _mlp():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.LayerNorm(7), nn.Linear(7, 3)).double()


def _images(n=24, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 6, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def _vectors(n=40, seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    return x, (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()


def _perturbed(model, scale=0.1, seed=4):
    prior = {k: v.detach().clone() for k, v in model.named_parameters()}
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return prior


def fisher_iiw_cases():
    from ibscope.weights import fisher, iiw

    out = {}
    ce = nn.CrossEntropyLoss(reduction="none")
    for name, model, (x, y) in (("conv", _conv_model(), _images()), ("mlp", _mlp(), _vectors())):
        data = [(x[i:i + 10], y[i:i + 10]) for i in range(0, x.shape[0], 10)]
        for kind, ns, t in (("model", None, 1.0), ("model", 2, 2.0), ("empirical", 1, 1.0)):
            r = fisher(model, data, kind=kind, n_samples=ns, temperature=t, seed=5)
            out[f"fisher/{name}/{kind}/{ns}/{t}/total"] = r.trace
            for k, v in r.per_layer.items():
                out[f"fisher/{name}/{kind}/{ns}/{t}/{k}"] = v
        prior = _perturbed(model)
        for engine in ("hooks", "jvp"):
            for gran in ("example", "batch"):
                r = iiw(model, ce, data, prior_mean=prior, n_train=500, engine=engine, granularity=gran,
                        unit="nats")
                out[f"iiw/{name}/{engine}/{gran}/total"] = r.total
                for k, v in r.per_layer.items():
                    out[f"iiw/{name}/{engine}/{gran}/{k}"] = v
        r = iiw(model, nn.CrossEntropyLoss(), data, prior_mean=prior, n_train=500, granularity="batch", unit="nats")
        out[f"iiw/{name}/scalar/batch/total"] = r.total
    return out


def pib_cases():
    from ibscope.objectives import PIBLoss

    out = {}
    model = _mlp()
    x, y = _vectors()
    prior = _perturbed(model)
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, x.shape[0], 16)]
    pib = PIBLoss(model, 0.5, n_train=300, prior_mean=prior, loss_fn=nn.functional.cross_entropy,
                  batches=batches, interval=2, unit="nats")
    penalty, terms = pib(model)
    out["pib/penalty"] = float(penalty.detach())
    penalty.backward()
    for k, p in model.named_parameters():
        out[f"pib/grad/{k}"] = float(p.grad.double().pow(2).sum().sqrt())
        out[f"pib/grad_dot/{k}"] = float((p.grad.double() * torch.arange(p.numel()).reshape(p.shape)).sum())
    return out


def prior_cases():
    from ibscope.weights import bootstrap_prior, heldout_prior

    out = {}
    x, y = _vectors(60, seed=6)
    ce = nn.CrossEntropyLoss()
    for opt in ("sgd", "adam"):
        model = _mlp()
        data = [(x[i:i + 16], y[i:i + 16]) for i in range(0, x.shape[0], 16)]
        pm = heldout_prior(model, ce, data, epochs=3, lr=0.05, optimizer=opt, seed=7)
        for k, v in pm.items():
            out[f"heldout/{opt}/{k}/sum"] = float(v.sum())
            out[f"heldout/{opt}/{k}/norm"] = float(v.norm())
        bm = bootstrap_prior(model, nn.CrossEntropyLoss(reduction="none"), x, y, n_bootstrap=2, batch_size=16,
                             epochs=2, lr=0.05, optimizer=opt, seed=8)
        for k, v in bm.items():
            out[f"bootstrap/{opt}/{k}/sum"] = float(v.sum())
            out[f"bootstrap/{opt}/{k}/norm"] = float(v.norm())
    return out


def gibbs_cases():
    from ibscope.objectives import AnnealingSchedule, train_gibbs

    out = {}
    x, y = _vectors(50, seed=9)
    for label, kw in (("plain", {"beta": 0.0, "temperature": 1e-3}),
                      ("pib", {"beta": 0.01, "pib_interval": 3, "pib_examples": 20, "decay_b": 10.0,
                               "burn_in": 4, "thin": 2}),
                      ("anneal", {"beta": AnnealingSchedule(0.0, 0.02, 8), "pib_interval": 2, "pib_examples": 16,
                                  "precondition": True, "weight_decay": 1e-3, "lr": 1e-3})):
        model = _mlp()
        res = train_gibbs(model, nn.functional.cross_entropy, x, y, **{"epochs": 4, "batch_size": 16, "lr": 0.05,
                                                                      "seed": 3, **kw})
        for k, v in model.state_dict().items():
            out[f"gibbs/{label}/{k}/sum"] = float(v.double().sum())
            out[f"gibbs/{label}/{k}/norm"] = float(v.double().norm())
        out[f"gibbs/{label}/n_steps"] = res.n_steps
        out[f"gibbs/{label}/n_samples"] = len(res.ensemble)
        for h in res.history:
            for key in ("loss", "iiw", "lr", "n_samples"):
                out[f"gibbs/{label}/history/{h['epoch']}/{key}"] = h[key]
        out[f"gibbs/{label}/predict_sum"] = float((res.ensemble.predict_proba(x) * torch.arange(3.0)).sum())
    return out


def iiw_experiment_cases():
    from ibscope.experiments import _iiw as exp

    out = {}
    base = {**exp.PROFILES["test"], "iterations": 60, "n_evals": 4}
    for label, cfg in (("heldout", base), ("init_uneven", {**base, "prior": "init", "iterations": 26, "n_evals": 3,
                                                          "batch_size": 50})):
        with tempfile.TemporaryDirectory() as tmp:
            df = exp.run_seed(cfg, 0, tmp)
        for r in df.itertuples():
            out[f"iiwexp/{label}/{r.method}/{r.iteration}/{r.epoch:.6f}/{r.quantity}/{r.layer}"] = r.value
    return out


CASES = {"fisher_iiw": fisher_iiw_cases, "pib": pib_cases, "priors": prior_cases, "gibbs": gibbs_cases,
         "iiw_experiment": iiw_experiment_cases}


def main(path: str) -> None:
    import pandas as pd

    torch.set_num_threads(1)
    rows = []
    for case, fn in CASES.items():
        for key, value in fn().items():
            rows.append({"case": case, "key": key, "value": float(value)})
    pd.DataFrame(rows).to_csv(path, index=False, float_format="%.17g")


if __name__ == "__main__":
    main(sys.argv[1])
