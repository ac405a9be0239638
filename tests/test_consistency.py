"""Consistency flags of information-plane tables: data processing, the H(Y) and log n ceilings, chains.

Constructed tables check each law with and without intervals (and the cases
inside the intervals or the tolerance that must stay unflagged); small real
networks check that InformationPlane applies the checks, that a plain
nn.Sequential gets its chain by default, and that the default estimator's
real DPI violation (PCA compression dropping the label direction) is flagged.
"""

from __future__ import annotations

import json
import math
import warnings

import pandas as pd
import pytest
import torch
from torch import nn

from ibscope.estimators import FLAG_DESCRIPTIONS, EstimateDiagnosticWarning, warned
from ibscope.estimators.base import BaseMIEstimator
from ibscope.tracking import InformationPlane, information_plane

CONSISTENCY = ("dpi_violation", "above_label_entropy", "above_log_n", "dpi_chain")


def _check(*args, **kwargs):
    from ibscope.tracking._consistency import check_consistency

    return check_consistency(*args, **kwargs)


def _row(i_xt, i_ty, *, layer="h1", epoch=0, estimator="est", unit="bits", n=1000, xt_ci=None, ty_ci=None,
         flags=""):
    xt_lo, xt_hi = xt_ci or (math.nan, math.nan)
    ty_lo, ty_hi = ty_ci or (math.nan, math.nan)
    return {"epoch": epoch, "layer": layer, "layer_index": 1, "estimator": estimator, "i_xt": i_xt,
            "i_ty": i_ty, "unit": unit, "i_xt_lo": xt_lo, "i_xt_hi": xt_hi, "i_ty_lo": ty_lo, "i_ty_hi": ty_hi,
            "flags": flags, "n": n}


def _flags(df):
    return [set(f.split(";")) - {""} for f in df["flags"]]


# --------------------------------------------------------------------------- constructed tables
def test_dpi_violation_without_intervals_uses_the_documented_tolerance():
    rows = pd.DataFrame([
        _row(0.2, 1.99),    # the transformer: far beyond
        _row(0.13, 1.19),   # tiny GPT-2
        _row(3.07, 3.16),   # ResNet's last layer: 0.09 bits > 2% of 3.16 (0.063)
        _row(3.12, 3.16),   # 0.04 bits: inside the tolerance, a tie
        _row(1.00, 1.01),   # inside
        _row(2.0, 0.5),     # the law holds
        _row(0.0, 0.012),   # below 0.01 nats = 0.0144 bits
        _row(math.nan, 1.0),  # no value: not checked
    ])
    out = _check(rows, None, warn=False)
    got = ["dpi_violation" in f for f in _flags(out)]
    assert got == [True, True, True, False, False, False, False, False]
    # the same numbers in nats: the absolute floor is 0.01 nats
    nats = pd.DataFrame([_row(0.0, 0.012, unit="nats"), _row(0.0, 0.008, unit="nats")])
    assert ["dpi_violation" in f for f in _flags(_check(nats, None, warn=False))] == [True, False]


def test_dpi_violation_with_intervals_needs_disjoint_intervals():
    rows = pd.DataFrame([
        # point values 0.3 apart (the tolerance alone would flag) but the intervals overlap: not flagged
        _row(1.2, 1.5, xt_ci=(1.0, 1.4), ty_ci=(1.3, 1.7)),
        # disjoint: flagged
        _row(1.2, 1.5, xt_ci=(1.1, 1.3), ty_ci=(1.45, 1.55)),
        # touching (lo == hi): not flagged
        _row(1.2, 1.5, xt_ci=(1.1, 1.4), ty_ci=(1.4, 1.6)),
        # an interval on one side only (a saturated value gets none): the tolerance decides
        _row(1.2, 1.5, xt_ci=(1.0, 1.4)),
        _row(1.49, 1.5, ty_ci=(1.45, 1.55)),
    ])
    out = _check(rows, None, warn=False)
    assert ["dpi_violation" in f for f in _flags(out)] == [False, True, False, True, False]


def test_label_entropy_and_log_n_ceilings_in_the_tables_unit():
    h = 1.0  # H(Y) of two balanced classes, bits
    rows = pd.DataFrame([
        _row(5.0, 1.01),                      # at H(Y): saturated, not above it
        _row(5.0, 1.2),                       # above
        _row(5.0, 1.2, ty_ci=(0.95, 1.3)),    # interval reaches H(Y): not flagged
        _row(5.0, 1.2, ty_ci=(1.05, 1.3)),    # whole interval above
        _row(6.7, 0.5, n=100),                # log2(100) = 6.64: within 2%
        _row(7.0, 0.5, n=100),                # above log2 n
        _row(7.0, 0.5, n=100, xt_ci=(6.5, 7.5)),
    ])
    out = _check(rows, h, warn=False)
    assert ["above_label_entropy" in f for f in _flags(out)] == [False, True, False, True, False, False, False]
    assert ["above_log_n" in f for f in _flags(out)] == [False] * 5 + [True, False]
    # nats: ln(100) = 4.61 nats, so 5.0 is above it there but not in bits
    for unit, expected in (("nats", True), ("bits", False)):
        one = pd.DataFrame([_row(5.0, 0.5, n=100, unit=unit)])
        assert ("above_log_n" in _flags(_check(one, None, warn=False))[0]) is expected
    # H(Y) = ln 2 nats: 0.75 nats is above it, 0.70 nats within the tolerance
    nats = pd.DataFrame([_row(3.0, 0.75, unit="nats"), _row(3.0, 0.70, unit="nats")])
    assert ["above_label_entropy" in f for f in _flags(_check(nats, math.log(2), warn=False))] == [True, False]


def test_chain_compares_later_layers_within_estimator_and_epoch():
    layers = ["a", "b", "c"]
    rows = pd.DataFrame(
        # estimator e1, epoch 0: c has more I(X;T) than b (and a): c is flagged, a and b are not
        [_row(x, y, layer=lay, epoch=0, estimator="e1") for lay, x, y in zip(layers, (2.0, 1.5, 1.8), (1.0, .9, .8))]
        # e1, epoch 1: I(T;Y) grows from a to b: b is flagged (I(T;Y) along the chain cannot grow)
        + [_row(x, y, layer=lay, epoch=1, estimator="e1") for lay, x, y in zip(layers, (3.0, 2.5, 2.0), (.5, .9, .4))]
        # e2, epoch 0: non-increasing along the chain, within the tolerance: nothing
        + [_row(x, y, layer=lay, epoch=0, estimator="e2") for lay, x, y in zip(layers, (2.0, 2.02, 1.0), (.9, .9, .9))]
        # e3: c above b, but the intervals overlap: nothing
        + [_row(x, y, layer=lay, epoch=0, estimator="e3", xt_ci=ci) for lay, x, y, ci in
           zip(layers, (2.0, 1.5, 1.8), (.5, .5, .5), ((1.8, 2.2), (1.2, 1.9), (1.6, 2.0)))]
    )
    out = _check(rows, None, chain=layers, warn=False)
    chain = ["dpi_chain" in f for f in _flags(out)]
    assert chain == [False, False, True, False, True, False, False, False, False, False, False, False]
    # no chain: no chain flags; the order is the chain's, not the table's
    assert not any("dpi_chain" in f for f in _flags(_check(rows, None, warn=False)))
    rev = ["dpi_chain" in f for f in _flags(_check(rows, None, chain=layers[::-1], warn=False))]
    assert rev[:3] == [True, True, False]  # reversed (c, b, a): a has more I(X;T) than c, b more I(T;Y)
    # a chain of layers absent from the table is skipped; epochs of one layer are not a chain
    assert not any("dpi_chain" in f for f in _flags(_check(rows, None, chain=["x", "y"], warn=False)))
    # seeds are compared separately
    two = pd.concat([rows.iloc[:3].assign(seed=0, i_xt=[2.0, 1.5, 1.4]), rows.iloc[:3].assign(seed=1)])
    assert ["dpi_chain" in f for f in _flags(_check(two, None, chain=layers, warn=False))] == \
        [False] * 5 + [True]


def test_existing_flags_are_kept_once_and_the_check_is_idempotent():
    rows = pd.DataFrame([_row(0.2, 1.99, flags="saturated_ty"), _row(2.0, 0.5, flags="")],
                        index=[7, 3])
    out = _check(rows, 1.0, warn=False)
    assert out["flags"].tolist() == ["saturated_ty;dpi_violation;above_label_entropy", ""]
    assert list(out.index) == [7, 3] and rows["flags"].tolist() == ["saturated_ty", ""]  # a copy
    again = _check(out, 1.0, warn=False)
    assert again["flags"].tolist() == out["flags"].tolist()
    # no flags column: added
    assert _check(rows.drop(columns="flags"), None, warn=False)["flags"].tolist() == ["dpi_violation", ""]


def test_warns_once_per_estimator_and_flag():
    rows = pd.DataFrame([_row(0.2, 1.99, estimator="e1"), _row(0.1, 1.5, estimator="e1", layer="h2"),
                         _row(0.2, 1.99, estimator="e2")])
    with pytest.warns(EstimateDiagnosticWarning) as rec:
        _check(rows, None)
    msgs = [str(w.message) for w in rec if issubclass(w.category, EstimateDiagnosticWarning)]
    assert len(msgs) == 2 and all("dpi_violation" in m and "data processing" in m for m in msgs)
    assert {("e1", "dpi_violation"), ("e2", "dpi_violation")} <= warned()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _check(rows, None)  # already warned in this run
        _check(rows, None, warn=True)


def test_every_consistency_flag_is_described_with_its_likely_cause():
    from ibscope.tracking._consistency import CONSISTENCY_FLAGS

    assert set(CONSISTENCY_FLAGS) == set(CONSISTENCY)
    for flag in CONSISTENCY:
        assert len(FLAG_DESCRIPTIONS[flag]) > 40
    assert "PCA" in FLAG_DESCRIPTIONS["dpi_violation"] and "KSG" in FLAG_DESCRIPTIONS["dpi_violation"]
    assert "binned" in FLAG_DESCRIPTIONS["dpi_chain"]


def test_bad_input_names_the_argument():
    rows = pd.DataFrame([_row(1.0, 0.5)])
    with pytest.raises(ValueError, match="i_ty"):
        _check(rows.drop(columns="i_ty"), None)
    with pytest.raises(TypeError, match="'rows'"):
        _check(rows.to_dict(), None)
    with pytest.raises(ValueError, match="unit"):
        _check(pd.concat([rows, rows.assign(unit="nats")]), None)
    for bad in (-0.1, math.nan, math.inf, "1"):
        with pytest.raises(ValueError, match="label_entropy"):
            _check(rows, bad)
    with pytest.raises(TypeError, match="chain"):
        _check(rows, None, chain="h1")
    with pytest.raises(ValueError, match="chain"):
        _check(rows, None, chain=["h1", "h1"])


# --------------------------------------------------------------------------- real networks
def _sequential():
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def test_plain_sequential_gets_its_chain_by_default(tmp_path):
    x, y = torch.randn(64, 3), torch.arange(64) % 2
    net = _sequential()
    plane = InformationPlane(net, x, y, out_dir=tmp_path)
    assert plane.chain == ["0", "1", "2"] and plane.metadata()["chain"] == ["0", "1", "2"]
    assert InformationPlane(net, x, y, layers=["2", "0"]).chain == ["0", "2"]  # the Sequential's order
    assert InformationPlane(net, x, y, chain=False).chain is None
    assert InformationPlane(net, x, y, chain=["2", "0"]).chain == ["2", "0"]  # as given
    assert InformationPlane(net, x, y, layers=["0"]).chain is None            # one layer: no chain

    class Net(nn.Module):  # not a plain Sequential: its forward may branch
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, v):
            return self.b(self.a(v))

    assert InformationPlane(Net(), x, y).chain is None
    assert InformationPlane(nn.Sequential(_sequential(), nn.Tanh()), x, y).chain is None  # nested leaves
    with pytest.raises(ValueError, match="'chain'.*'7'"):
        InformationPlane(net, x, y, chain=["0", "7"])
    with pytest.raises(TypeError, match="chain"):
        InformationPlane(net, x, y, chain="0")
    # stored in the json next to the table
    plane.record(0)
    assert json.loads((tmp_path / "information_plane.json").read_text())["chain"] == ["0", "1", "2"]


def _pca_trap(n=400, seed=0):
    """X: four loud noise coordinates and one quiet one that is the label's; PCA to 4 dims drops the label."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 5, generator=g)
    z[:, :4] *= 10
    y = (z[:, 4] > 0).long()
    keep = nn.Linear(5, 5)      # T_1 = X: PCA of T_1 loses the label direction too
    pick = nn.Linear(5, 1)      # T_2 = 3 x_5: the label direction alone (one unit: not compressed)
    with torch.no_grad():
        keep.weight.copy_(torch.eye(5))
        keep.bias.zero_()
        pick.weight.zero_()
        pick.weight[0, 4] = 3.0
        pick.bias.zero_()
    return nn.Sequential(keep, pick), z, y


def test_default_estimator_really_violating_dpi_is_flagged_and_reported(tmp_path):
    # The default estimator (PCA to 4 dims + KSG) computes I(X;T_2) from the top 4 principal components of
    # X, which are independent of T_2: I(X;T_2) ~ 0 while I(T_2;Y) ~ H(Y) = 1 bit. The same compression of
    # T_1 = X gives I(T_1;Y) ~ 0 < I(T_2;Y): the chain X -> T_1 -> T_2 is violated too.
    net, z, y = _pca_trap()
    with pytest.warns(EstimateDiagnosticWarning, match="dpi_violation"):
        df = information_plane(net, z, y, out_dir=tmp_path)
    by = df.set_index("layer")
    assert by.loc["1", "i_ty"] > 0.8 and by.loc["1", "i_xt"] < 0.3  # the estimate really breaks the law
    assert by.loc["0", "i_ty"] < 0.3
    assert {"dpi_violation", "dpi_chain"} <= set(by.loc["1", "flags"].split(";"))
    assert not set(by.loc["0", "flags"].split(";")) & set(CONSISTENCY)
    assert ("pca_ksg", "dpi_violation") in warned() and ("pca_ksg", "dpi_chain") in warned()
    # without the chain: the row's own violation only
    df2 = information_plane(net, z, y, chain=False)
    assert "dpi_chain" not in df2.set_index("layer").loc["1", "flags"]
    assert "dpi_violation" in df2.set_index("layer").loc["1", "flags"]
    # reports show the flags and what they mean
    from ibscope.report import flag_legend, flagged_estimates, plane_summary, render_tracker_report

    assert "dpi_violation" in plane_summary(df).set_index("layer").loc["1", "flags"]
    assert "dpi_chain" in flagged_estimates(df)["flags"].iloc[0]
    legend = flag_legend(df).set_index("flag")
    assert legend.loc["dpi_violation", "meaning"] == FLAG_DESCRIPTIONS["dpi_violation"]
    page = render_tracker_report(tmp_path, plane=df).read_text()
    assert "dpi_chain" in page and "data processing inequality" in page


class _Constant(BaseMIEstimator):
    """Returns ``value_nats`` for every pair: a stand-in that breaks a ceiling on purpose."""

    name = "constant"

    def __init__(self, *, value_nats: float = 0.5, unit: str = "bits"):
        self.value_nats, self.unit = value_nats, unit

    def _estimate_nats(self, x, y, discrete_x, discrete_y) -> float:
        return self.value_nats


def test_plane_checks_the_label_entropy_of_its_labels_in_its_unit():
    net = _sequential()
    x, y = torch.randn(100, 3), torch.arange(100) % 2  # H(Y) = 1 bit
    for unit, value_nats, above in (
            ("bits", 0.5545, False),  # 0.80 bits < H(Y) = 1 bit (a plane passing H(Y) in nats would flag it)
            ("bits", 0.75, True),     # 1.08 bits > 1 bit
            ("nats", 0.75, True)):    # 0.75 nats > ln 2 = 0.69 nats (a plane passing H(Y) in bits would not)
        df = information_plane(net, x, y, layers=["2"], estimators=_Constant(value_nats=value_nats, unit=unit),
                               unit=unit)
        assert df["unit"].iloc[0] == unit
        assert ("above_label_entropy" in df["flags"].iloc[0]) is above, (unit, value_nats)
        assert "dpi_violation" not in df["flags"].iloc[0]  # I(X;T) = I(T;Y): equal is allowed
