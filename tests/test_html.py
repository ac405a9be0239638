"""One HTML renderer (ibscope._html) for the run report and the claims' catalogue: every value from data escaped.

A ``<script>`` planted in any field of a ``verdict.json`` or an error record,
in a file name inside a run directory, or in any text column / setting of a
results table must reach the page as text, never as markup; links stay inside
the page's directory.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ibscope import _html

SCRIPT = "<script>alert(1)</script>"
PNG = b"\x89PNG\r\n\x1a\n"


def _claim_dir(out):
    from ibscope.reproduce import catalogue

    cid = next(iter(catalogue()))
    d = out / "claims" / cid
    d.mkdir(parents=True)
    return cid, d


def _record(runs=None):
    return {"claim": "c", "paper": "p", "profile": "quick", "seeds": 2, "runs": runs or {"main": "runs/x"},
            "statistic": {"name": "s", "params": {}, "unit": "bits"},
            "verdict": {"verdict": "reproduced", "estimate": 1.0, "low": 0.5, "high": 1.5, "level": 0.95, "n": 2,
                        "interval": "t", "reason": "because", "details": {}},
            "power": None}


def _no_markup(page: str) -> None:
    assert "<script" not in page.lower(), page[page.lower().find("<script") - 200:][:400]
    assert "&lt;script&gt;" in page


# every string a verdict.json gives the catalogue page (numbers are checked for their type on reading)
_FIELDS = [("profile",), ("statistic", "unit"), ("statistic", "name"), ("verdict", "verdict"),
           ("verdict", "interval"), ("verdict", "reason"), ("claim",), ("paper",)]


@pytest.mark.parametrize("field", _FIELDS, ids=".".join)
def test_catalogue_escapes_a_script_in_every_verdict_field(tmp_path, field):
    from ibscope.reproduce import build_catalogue_report

    out = tmp_path / "repro"
    _, d = _claim_dir(out)
    rec = _record()
    target = rec
    for k in field[:-1]:
        target = target[k]
    target[field[-1]] = SCRIPT
    (d / "verdict.json").write_text(json.dumps(rec))
    page = build_catalogue_report(out).read_text()
    if field in {("statistic", "name"), ("claim",), ("paper",)}:  # not shown: the catalogue's own values are
        assert "<script" not in page.lower()
    else:
        _no_markup(page)


def test_catalogue_escapes_run_names_paths_figure_names_and_errors(tmp_path):
    """Run names and paths of a verdict, PNG file names in the run directories, an error record."""
    from ibscope.reproduce import build_catalogue_report, catalogue

    out = tmp_path / "repro"
    cid, d = _claim_dir(out)
    planted = "'><img src=x onerror=alert(1)>"  # a file name cannot hold '/': no closing tag needed
    run = out / "runs" / f"r{planted}"
    run.mkdir(parents=True)
    (run / f"x{planted}.png").write_bytes(PNG)  # a planted file name in a run directory
    (d / "verdict.json").write_text(json.dumps(_record(runs={SCRIPT: f"runs/{run.name}"})))
    other = next(c for c in catalogue() if c != cid)
    (out / "claims" / other).mkdir(parents=True)
    (out / "claims" / other / "error.json").write_text(json.dumps({"error": SCRIPT}))
    page = build_catalogue_report(out).read_text()
    _no_markup(page)
    assert "<img src=x" not in page and "'>" + "<img" not in page
    assert "x&#x27;&gt;&lt;img src=x onerror=alert(1)&gt;" in page  # the figure's caption, as text
    # the figure's URL: the run directory and the file name, quoted
    assert "src='runs/r%27%3E%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E/x%27%3E%3Cimg" in page


def test_catalogue_failed_row_has_the_header_s_columns(tmp_path):
    from ibscope.reproduce import build_catalogue_report

    out = tmp_path / "repro"
    _, d = _claim_dir(out)
    (d / "error.json").write_text(json.dumps({"error": "boom"}))
    page = build_catalogue_report(out).read_text()
    row = next(line for line in page.splitlines() if ">failed<" in line)
    header = next(line for line in page.splitlines() if "<th>claim</th>" in line)
    width = row.count("<td") + 3  # colspan=4: one cell for four columns
    assert width == header.count("<th>") == 9


def _plane(text: str) -> pd.DataFrame:
    rows = []
    for seed in (0, 1):
        for epoch in (1, 2):
            for li, layer in enumerate((f"h1{text}", f"h2{text}")):
                rows.append({"seed": seed, "epoch": epoch, "layer": layer, "layer_index": li,
                             "estimator": f"binning{text}", "i_xt": 1.0 + 0.1 * seed + li, "i_ty": 0.5 + 0.1 * epoch,
                             "unit": f"bits{text}", "flags": f"saturated{text}" if li else ""})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seeds", [1, 2])
def test_run_report_escapes_a_script_in_every_text_column_and_setting(tmp_path, seeds):
    from ibscope.report import render_tracker_report

    plane = _plane(SCRIPT)
    plane = plane[plane["seed"] < seeds]
    weights = pd.DataFrame({"epoch": [1, 2], "quantity": [f"iiw{SCRIPT}"] * 2, "layer": [SCRIPT] * 2,
                            "value": [0.1, 0.2], "unit": [SCRIPT] * 2})
    path = render_tracker_report(tmp_path / "run", plane=plane, weights=weights,
                                 plane_settings={"estimator": SCRIPT, SCRIPT: 1}, weight_settings={"x": SCRIPT},
                                 title=f"run {SCRIPT}")
    page = path.read_text()
    _no_markup(page)
    assert page.count("<table") >= 2 and page.count("<img") >= 2  # the tables and figures are still there


def test_report_sections_escape_titles_text_captions_and_figure_names(tmp_path):
    from ibscope.report import Section, render_report

    fig = tmp_path / f"f{SCRIPT.replace('/', '_')}.png"
    fig.write_bytes(PNG + b"rest")
    df = pd.DataFrame({SCRIPT: [SCRIPT], "v": [np.nan]})
    page = render_report(tmp_path / "report.html", title=SCRIPT, intro=SCRIPT,
                         sections=[Section(SCRIPT, SCRIPT, figures=[fig], tables=[(SCRIPT, df)])]).read_text()
    _no_markup(page)
    assert "<figure>" in page and "<caption>&lt;script&gt;" in page


# --------------------------------------------------------------------------- the helpers themselves


def test_table_escapes_every_cell_but_markup():
    t = _html.table([[SCRIPT, 1.5, _html.Markup("<b>x</b>"), _html.Cell(SCRIPT, colspan=2, color="red'")]],
                    header=["a<", "b"], caption=SCRIPT)
    assert "<script" not in t and "<b>x</b>" in t and "<th>a&lt;</th>" in t
    assert "<td colspan=2 style='color:red&#x27;'>&lt;script&gt;" in t and "<td>1.5</td>" in t


def test_escape_is_idempotent_on_markup_only():
    once = _html.escape("<a>")
    assert once == "&lt;a&gt;" and _html.escape(once) == once  # Markup passes unchanged
    assert _html.escape(str(once)) == "&amp;lt;a&amp;gt;"  # a plain string is data


@pytest.mark.parametrize("target", ["/etc/passwd", "../x", "runs/../../x", "", " runs/x", "javascript:alert(1)",
                                    "C:/x", "//host/x"])
def test_links_stay_inside_the_page_directory(target):
    with pytest.raises(ValueError, match="does not point inside the page's directory"):
        _html.link(target, "x")


def test_link_quotes_and_escapes_its_target():
    a = _html.link("runs/a b'#x/report.html", "<n>")
    assert a == "<a href='runs/a%20b%27%23x/report.html'>&lt;n&gt;</a>"


def test_figure_embeds_only_a_regular_png(tmp_path):
    png = tmp_path / "a.png"
    png.write_bytes(PNG + b"data")
    assert "data:image/png;base64," in _html.figure(png)
    (tmp_path / "link.png").symlink_to(png)
    assert "not shown" in _html.figure(tmp_path / "link.png") and _html.embedded_image(tmp_path / "link.png", "a") == ""
    (tmp_path / "text.png").write_text("not a png")
    assert "not shown" in _html.figure(tmp_path / "text.png")
    assert _html.figure(tmp_path / "missing.png") == ""


def test_page_escapes_the_title():
    p = _html.page(SCRIPT, ["<p>body</p>"])
    assert "<title>&lt;script&gt;" in p and "<h1>&lt;script&gt;" in p and "<p>body</p>" in p
