"""Figures: only the documented columns are required; CI bars, seed bands and flags are really drawn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ibscope import plots


def matplotlib_rgba(c):
    from matplotlib.colors import to_rgba

    return np.asarray(to_rgba(c))

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def figs(monkeypatch):
    """The matplotlib figures the plot functions save (they stay inspectable after being closed)."""
    captured = []
    real = plots.save_figure

    def spy(fig, path, **kw):
        captured.append(fig)
        return real(fig, path, **kw)

    monkeypatch.setattr(plots, "save_figure", spy)
    return captured


def _plane(seeds=(0,), ci=True, flags=True, estimators=("binning",)):
    rng = np.random.default_rng(3)
    rows = []
    for seed in seeds:
        for epoch in (0, 1, 3, 10, 30, 100):
            for li, layer in enumerate(("h1", "h2")):
                for est in estimators:
                    ixt = 6.0 - li + 0.3 * np.log1p(epoch) + rng.normal(0, 0.2)
                    ity = 0.3 + 0.1 * np.log1p(epoch) + rng.normal(0, 0.02)
                    row = {"seed": seed, "epoch": epoch, "layer": layer, "layer_index": li + 1, "estimator": est,
                           "i_xt": ixt, "i_ty": ity, "unit": "bits"}
                    if ci:
                        ok = epoch != 3  # one epoch without a CI: NaN
                        row.update(i_xt_lo=ixt - 0.2 if ok else np.nan, i_xt_hi=ixt + 0.3 if ok else np.nan,
                                   i_ty_lo=ity - 0.05 if ok else np.nan, i_ty_hi=ity + 0.04 if ok else np.nan,
                                   ci_level=0.9 if ok else np.nan)
                    if flags:
                        row["flags"] = "saturated;low_n" if (epoch == 100 and layer == "h2") else ""
                    rows.append(row)
    return pd.DataFrame(rows)


def _hollow(ax):
    """Offsets of the hollow (facecolor 'none') scatter markers of an axes."""
    pts = [c.get_offsets() for c in ax.collections
           if c.__class__.__name__ == "PathCollection" and len(c.get_facecolors()) == 0]
    return np.concatenate(pts) if pts else np.empty((0, 2))


def _legend_texts(fig):
    """Texts of every legend of a figure (figure legends and axes legends)."""
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return [t.get_text() for leg in legends for t in leg.get_texts()]


def _legends_outside_the_data(fig):
    """Every legend is drawn inside the figure and overlaps no axes (so it covers no data)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # the figure was closed after saving: draw it again, as saved (constrained)
    canvas.draw()
    renderer = canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends, "the figure has no legend"
    page = fig.bbox
    for leg in legends:
        box = leg.get_window_extent(renderer)
        assert box.x0 >= page.x0 - 1 and box.x1 <= page.x1 + 1 and box.y0 >= page.y0 - 1 and box.y1 <= page.y1 + 1
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), (leg, ax.get_title())


def _layer_points(ax):
    """{colour: (offsets, sizes)} of the filled scatter markers of an axes, grouped by face colour."""
    out = {}
    for c in ax.collections:
        if c.__class__.__name__ != "PathCollection" or len(c.get_facecolors()) == 0:
            continue
        colors = {tuple(np.round(fc[:3], 3)) for fc in c.get_facecolors()}
        assert len(colors) == 1, "one scatter call per layer, in the layer's colour"
        out[colors.pop()] = (np.asarray(c.get_offsets()), np.broadcast_to(c.get_sizes(), len(c.get_offsets())))
    return out


def test_plane_colour_is_the_layer_and_marker_size_the_epoch(tmp_path, figs):
    """One qualitative colour per layer (same in every panel), epoch 0 drawn, size grows with the epoch."""
    df = _plane(estimators=("binning", "kde"), flags=False).drop(columns="seed")
    df = pd.concat([df, df[df["layer"] == "h2"].assign(layer="h3", layer_index=3, i_xt=df["i_xt"] - 2)])
    plots.plot_information_plane(df, tmp_path / "p.png")
    fig = figs[-1]
    assert len(fig.axes) == 2  # the estimator panels, no epoch colour bar
    per_panel = []
    for ax, est in zip(fig.axes, ("binning", "kde"), strict=True):
        line_colors = {tuple(np.round(matplotlib_rgba(ln.get_color())[:3], 3)) for ln in ax.lines}
        assert len(line_colors) == 3  # one colour per layer
        points = _layer_points(ax)
        assert set(points) == line_colors  # markers in their layer's colour, not an epoch colormap
        per_panel.append(line_colors)
        for layer in ("h1", "h2", "h3"):
            g = df[(df["estimator"] == est) & (df["layer"] == layer)].sort_values("epoch")
            match = [v for v in points.values() if np.allclose(v[0], g[["i_xt", "i_ty"]].to_numpy())]
            assert len(match) == 1, layer  # every epoch of the layer is drawn, epoch 0 included
            sizes = match[0][1]
            assert sizes[0] > 0 and np.all(np.diff(sizes) > 0)  # epoch 0 visible, larger marker = later
        assert not ax.texts  # no text labels at the points (they overlap); the legend names the layers
    assert per_panel[0] == per_panel[1]
    texts = _legend_texts(fig)
    assert {"h1", "h2", "h3", "epoch 0", "epoch 100"} <= set(texts)
    _legends_outside_the_data(fig)


def test_legends_are_outside_the_data(tmp_path, figs):
    plots.plot_information_plane(_plane(flags=False).drop(columns="seed"), tmp_path / "p1.png")
    _legends_outside_the_data(figs[-1])
    plots.plot_information_plane(_plane(seeds=(0, 1, 2), estimators=("binning", "kde")), tmp_path / "p3.png")
    _legends_outside_the_data(figs[-1])
    assert {"h1", "h2"} <= set(_legend_texts(figs[-1]))
    plots.plot_information_curves(_plane().drop(columns="seed"), tmp_path / "c.png")
    _legends_outside_the_data(figs[-1])
    rows = [{"epoch": e, "layer": layer, "quantity": q, "value": (1 + e) * w}
            for e in (0, 1, 2, 4) for q in ("iiw", "fisher") for layer, w in (("fc1", 1.0), ("total", 3.0))]
    plots.plot_weight_information(pd.DataFrame(rows), tmp_path / "w.png")
    _legends_outside_the_data(figs[-1])
    assert sorted(_legend_texts(figs[-1])) == ["fc1", "total"]  # one shared legend, not one per panel


def test_a_users_minimal_table_is_enough(tmp_path):
    df = pd.DataFrame({"epoch": [0, 1, 2, 0, 1, 2], "layer": ["a", "a", "a", "b", "b", "b"],
                       "i_xt": [1.0, 1.5, 1.2, 0.5, 0.7, 0.6], "i_ty": [0.1, 0.3, 0.4, 0.05, 0.2, 0.3]})
    for fn, name in ((plots.plot_information_plane, "plane.png"), (plots.plot_information_curves, "curves.png")):
        path = fn(df, tmp_path / name)
        assert path == tmp_path / name and path.read_bytes()[:8] == PNG
    w = pd.DataFrame({"epoch": [0, 1, 2], "quantity": "iiw", "value": [1.0, 2.0, 4.0]})
    assert plots.plot_weight_information(w, tmp_path / "w.png").read_bytes()[:8] == PNG


def test_bad_tables_are_refused_with_the_column_named(tmp_path):
    df = _plane()
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['i_ty'\]"):
        plots.plot_information_plane(df.drop(columns="i_ty"), tmp_path / "x.png")
    with pytest.raises(TypeError, match="DataFrame"):
        plots.plot_information_plane(df.to_dict(), tmp_path / "x.png")
    with pytest.raises(ValueError, match="no rows"):
        plots.plot_information_curves(df.iloc[:0], tmp_path / "x.png")
    with pytest.raises(ValueError, match="mixes units"):
        plots.plot_information_plane(df.assign(unit=["bits", "nats"] * (len(df) // 2)), tmp_path / "x.png")
    with pytest.raises(TypeError, match="'i_xt'.*numeric"):
        plots.plot_information_plane(df.assign(i_xt="high"), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\['quantity'\]"):
        plots.plot_weight_information(pd.DataFrame({"epoch": [0], "value": [1.0]}), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_one_run_draws_the_estimators_confidence_intervals_and_flags(tmp_path, figs):
    df = _plane().drop(columns="seed")
    plots.plot_information_plane(df, tmp_path / "p.png")
    ax = figs[-1].axes[0]
    bars = [c for c in ax.containers if c.__class__.__name__ == "ErrorbarContainer"]
    assert len(bars) == 2  # one per layer
    h1 = df[(df["layer"] == "h1") & df["i_xt_lo"].notna()].sort_values("epoch")
    xseg, yseg = bars[0].lines[2]  # the x and y bar segments of layer h1
    got = np.array([[s[0][0], s[1][0]] for s in xseg.get_segments()])
    np.testing.assert_allclose(got, h1[["i_xt_lo", "i_xt_hi"]].to_numpy())  # NaN-CI epoch left out
    got = np.array([[s[0][1], s[1][1]] for s in yseg.get_segments()])
    np.testing.assert_allclose(got, h1[["i_ty_lo", "i_ty_hi"]].to_numpy())
    flagged = df[df["flags"] != ""]
    np.testing.assert_allclose(_hollow(ax), flagged[["i_xt", "i_ty"]].to_numpy())
    assert "90% CI" in ax.get_title()
    assert any("flagged" in t for t in _legend_texts(figs[-1]))
    # without CI and flags columns: no bars, no hollow markers, no legend note
    plots.plot_information_plane(df.drop(columns=["i_xt_lo", "i_xt_hi", "i_ty_lo", "i_ty_hi", "flags"]),
                                 tmp_path / "p2.png")
    ax = figs[-1].axes[0]
    assert not ax.containers and len(_hollow(ax)) == 0
    assert not any("flagged" in t for t in _legend_texts(figs[-1]))


def test_several_seeds_draw_student_t_boxes_and_bands(tmp_path, figs):
    from scipy import stats

    df = _plane(seeds=(0, 1, 2), estimators=("binning", "kde"))
    plots.plot_information_plane(df, tmp_path / "p.png")
    fig = figs[-1]
    assert len(fig.axes) == 2 and "mean of 3 seeds" in fig.axes[0].get_title()
    ax = fig.axes[0]
    boxes = [c for c in ax.collections if c.__class__.__name__ == "PatchCollection"]
    assert len(boxes) == 2  # one per layer
    g = df[(df["estimator"] == "binning") & (df["layer"] == "h1")]
    expect = []
    for _epoch, e in g.groupby("epoch"):
        half = [stats.t.ppf(0.975, 2) * e[q].std(ddof=1) / np.sqrt(3) for q in ("i_xt", "i_ty")]
        expect.append([e["i_xt"].mean() - half[0], e["i_xt"].mean() + half[0],
                       e["i_ty"].mean() - half[1], e["i_ty"].mean() + half[1]])
    got = [[b.x0, b.x1, b.y0, b.y1] for b in (p.get_extents() for p in boxes[0].get_paths())]
    np.testing.assert_allclose(got, expect, rtol=1e-9)
    # the mean trajectory passes through the means; flagged epoch (any seed) hollow
    means = g.groupby("epoch")[["i_xt", "i_ty"]].mean().to_numpy()
    np.testing.assert_allclose(ax.lines[0].get_xydata(), means)
    assert len(_hollow(ax)) == 1
    plots.plot_information_curves(df, tmp_path / "c.png")
    ax = figs[-1].axes[0]  # binning, I(X;T)
    band = [c for c in ax.collections if c.__class__.__name__ in ("PolyCollection", "FillBetweenPolyCollection")]
    assert len(band) == 2 and "t-band" in ax.get_title()
    ys = band[0].get_paths()[0].vertices[:, 1]
    lo, hi = np.array(expect)[:, 0], np.array(expect)[:, 1]
    assert ys.min() == pytest.approx(lo.min()) and ys.max() == pytest.approx(hi.max())


def test_band_figures_need_no_n_column(tmp_path):
    from ibscope.sweep import trajectory_bands

    bands = trajectory_bands(_plane(seeds=(0, 1)).assign(lr=0.1), ["lr"]).drop(columns="n")
    assert plots.plot_information_plane_bands(bands, tmp_path / "b.png", ["lr"]).is_file()
    assert plots.plot_trajectory_bands(bands.drop(columns=["i_xt_lo", "i_xt_hi"]), tmp_path / "t.png", ["lr"]).is_file()


def test_weight_information_one_panel_per_quantity_total_bold(tmp_path, figs):
    rows = []
    for seed in (0, 1, 2):
        for epoch in (0, 1, 2, 4, 8, 16):
            for q, unit in (("iiw", "bits"), ("fisher", "nats")):
                vals = {"fc1": (1 + epoch) * (1 + 0.1 * seed), "fc2": 0.5 * (1 + epoch)}
                for layer, v in [*vals.items(), ("total", sum(vals.values()))]:
                    rows.append({"seed": seed, "epoch": epoch, "layer": layer, "quantity": q, "value": v,
                                 "unit": unit, "method": "exact"})
    df = pd.DataFrame(rows)
    plots.plot_weight_information(df, tmp_path / "w.png")
    fig = figs[-1]
    assert [ax.get_ylabel() for ax in fig.axes] == ["iiw [bits]", "fisher [nats]"]
    ax = fig.axes[0]
    assert [ln.get_label() for ln in ax.lines] == ["fc1", "fc2", "total"]
    total = ax.lines[-1]
    assert total.get_linewidth() > 2 * ax.lines[0].get_linewidth() and total.get_color() == "black"
    mean_total = df[(df.quantity == "iiw") & (df.layer == "total")].groupby("epoch")["value"].mean()
    np.testing.assert_allclose(total.get_ydata(), mean_total.to_numpy())
    assert len([c for c in ax.collections]) == 3  # one t-band per line
    with pytest.raises(ValueError, match="mixes units"):
        plots.plot_weight_information(df.assign(unit=["bits", "nats"] * (len(df) // 2)), tmp_path / "x.png")


def test_training_curves_take_eval_or_test_columns(tmp_path, figs):
    df = pd.DataFrame({"epoch": [0, 1, 2], "train_loss": [1.0, 0.5, 0.2], "eval_loss": [1.1, 0.7, 0.5],
                       "eval_acc": [0.5, 0.7, 0.8]})
    plots.plot_training_curves(df, tmp_path / "t.png")
    assert [ln.get_label() for ln in figs[-1].axes[0].lines] == ["train", "eval"]
    with pytest.raises(ValueError, match="none of the metric columns"):
        plots.plot_training_curves(df[["epoch"]], tmp_path / "x.png")


def test_band_figures_take_a_grid_axis_of_names(tmp_path):
    """A sweep over activations has string grid values; the band figures draw them like numbers."""
    from ibscope.sweep import trajectory_bands

    plane = pd.concat([_plane(seeds=(0, 1)).assign(activation=a) for a in ("relu", "elu")], ignore_index=True)
    bands = trajectory_bands(plane, ["activation"])
    assert plots.plot_information_plane_bands(bands, tmp_path / "b.png", ["activation"]).is_file()
    assert plots.plot_trajectory_bands(bands, tmp_path / "t.png", ["activation"]).is_file()
    with pytest.raises(ValueError, match="grid column"):
        plots.plot_information_plane_bands(bands, tmp_path / "c.png", ["width"])
