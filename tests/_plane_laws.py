"""Shared checks of information-plane tables on real architectures (tests/test_plane_real.py, tests/test_hf.py).

Every estimator the plane offers, in settings that keep a test to seconds, and an independent check of the
laws of information theory on every row: a violation by more than 5% + 0.03 bits (looser than the plane's own
rule, tracking/_consistency.py) must carry its flag.
"""

from __future__ import annotations

import math

import numpy as np

from ibscope import estimators as registry
from ibscope.tracking import information_plane


def fast(name):
    """The registry estimator ``name`` with settings that keep a test to seconds (neural critics: few epochs)."""
    neural = {"infonce", "mine", "nwj"}
    if name in neural:
        return registry.get(name, max_epochs=1, hidden=(8,), embed_dim=8, batch_size=300)
    if name == "wkl":  # token embeddings repeat exactly within a class: KL needs its tiny noise
        return registry.get(name, noise=1e-3)
    if name == "compressed":
        return registry.get(name, dim_x=4, dim_y=4)
    return registry.get(name)


def offered():
    """Every registry estimator the plane can use (I(T;Y) of a continuous layer and discrete labels)."""
    out = []
    for name in registry.available():
        e = registry.get(name)
        if hasattr(e, "plane") or ("continuous", "discrete") in e.supports:
            out.append(name)
    return out


def assert_laws_flagged(df, n, h_y, chain):
    """Finite values >= 0 in bits; each row (and each later layer of ``chain``) that breaks a law is flagged."""
    slack = lambda a: 1.05 * a + 0.03  # noqa: E731
    assert (df["unit"] == "bits").all() and np.isfinite(df[["i_xt", "i_ty"]].to_numpy()).all()
    assert (df[["i_xt", "i_ty"]].to_numpy() >= -1e-9).all()
    for r in df.itertuples():
        flags = set(str(r.flags).split(";"))
        where = (r.estimator, r.layer, r.i_xt, r.i_ty, r.flags)
        if r.i_ty > slack(r.i_xt):
            assert "dpi_violation" in flags, where
        if r.i_ty > slack(h_y):
            assert "above_label_entropy" in flags, where
        if r.i_xt > slack(math.log2(n)):
            assert "above_log_n" in flags, where
    for est, g in df.groupby("estimator"):
        by = g.set_index("layer")
        for i, early in enumerate(chain):
            for late in chain[i + 1:]:
                up = (by.loc[late, "i_xt"] > slack(by.loc[early, "i_xt"])
                      or by.loc[late, "i_ty"] > slack(by.loc[early, "i_ty"]))
                if up:
                    assert "dpi_chain" in by.loc[late, "flags"].split(";"), (est, early, late)


def every_estimator():
    """Every offered estimator but WKL (measured by :func:`wkl_plane`: it needs few dimensions)."""
    return {name: fast(name) for name in offered() if name != "wkl"}


def wkl_plane(net, x, y, layers, **kw):
    """WKL's bias-cancelling weights exist only in low dimension (d = 128 at n = 600: no k will do, a
    ValueError says so): the plane measures it on random projections to 4 dimensions (``max_features``)."""
    return information_plane(net, x, y, estimators={"wkl": registry.get("wkl", noise=1e-3, k=5)},
                             layers=layers, chain=layers, max_features=4, **kw)


def h_bits(y):
    p = np.bincount(np.asarray(y)) / len(y)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


