"""Reports: `ibscope report DIR` for tracker, run and sweep directories; tables with CIs and flags; layering."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ibscope
from ibscope.cli import main
from ibscope.report import plane_summary, weight_summary

SRC = Path(ibscope.__file__).resolve().parents[1]
TOY = "_sweep_toy"  # tests/_sweep_toy.py: a run_seed of milliseconds


@pytest.fixture(autouse=True)
def _allow_toy():
    """The toy is a user experiment module: opt in to it (tests/test_security.py checks the refusal)."""
    from ibscope import experiments

    experiments.allow_module(TOY)
    yield
    experiments._ALLOWED.discard(TOY)


def _plane(seeds=(None,), flags=True):
    rows = []
    rng = np.random.default_rng(7)
    for seed in seeds:
        for epoch in (0, 2, 5):
            for li, layer in enumerate(("fc1", "fc2")):
                ixt, ity = 3.0 - li + 0.1 * epoch + rng.normal(0, 0.1), 0.4 + 0.05 * epoch
                row = {"epoch": epoch, "layer": layer, "layer_index": li + 1, "estimator": "binning",
                       "i_xt": ixt, "i_ty": ity, "unit": "bits", "i_xt_lo": ixt - 0.1, "i_xt_hi": ixt + 0.2,
                       "i_ty_lo": ity - 0.02, "i_ty_hi": ity + 0.03, "ci_level": 0.95,
                       "flags": "saturated" if (flags and epoch == 5 and layer == "fc2") else "", "n": 256,
                       "seconds": 0.01, "train_loss": 1.0 / (1 + epoch), "eval_acc": 0.5 + 0.05 * epoch}
                if seed is not None:
                    row = {"seed": seed, **row}
                rows.append(row)
    return pd.DataFrame(rows)


def _weights():
    rows = []
    for epoch in (0, 2, 5):
        for layer, v in (("fc1", 1.0 + epoch), ("fc2", 0.5 + epoch), ("total", 1.5 + 2 * epoch)):
            rows.append({"epoch": epoch, "layer": layer, "quantity": "iiw", "value": v, "unit": "bits",
                         "method": "sgld"})
    return pd.DataFrame(rows)


def _tracker_dir(d: Path, plane=True, weights=True, sidecars=True) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    if plane:
        _plane().to_parquet(d / "information_plane.parquet")
        if sidecars:
            (d / "information_plane.json").write_text(json.dumps({
                "format": "ibscope.information_plane/1", "unit": "bits", "layers": ["fc1", "fc2"],
                "estimators": {"binning": {"name": "binning", "params": {"n_bins": 30}}}, "schedule": [0, 2, 5],
                "ci": 0.95, "n_samples": 256, "reduction": {}, "created": "2025-01-01T00:00:00",
                "ibscope_version": "0.1.0"}))
    if weights:
        _weights().to_parquet(d / "weight_information.parquet")
        if sidecars:
            (d / "weight_information.json").write_text(json.dumps({
                "format": "ibscope.weight_information/1", "quantities": ["iiw"], "schedule": [0, 2, 5],
                "prior_mean": "init", "unit": "bits"}))
    return d


def test_report_of_a_tracker_dir_with_both_tables(tmp_path, capsys):
    d = _tracker_dir(tmp_path / "run")
    assert main(["report", str(d)]) == 0
    assert str((d / "report.html").resolve()) in capsys.readouterr().out
    page = (d / "report.html").read_text()
    for fig in ("information_plane.png", "information_curves.png", "training_curves.png", "weight_information.png"):
        assert (d / fig).is_file() and fig in page
    assert page.count("data:image/png;base64,") == 4
    from ibscope.report import build_report  # the public entry (resolved from ibscope.reporting)
    assert build_report(d) == d / "report.html"
    for text in ("<th>i_xt_lo</th>", "<th>i_ty_hi</th>", "<th>ci_level</th>", "<th>flags</th>", "saturated",
                 "Flagged estimates", "Information in the weights", "&quot;n_samples&quot;: 256",
                 "&quot;prior_mean&quot;: &quot;init&quot;", "estimator CI"):
        assert text in page, text


def test_report_of_a_users_minimal_table_or_one_table_only(tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    _plane()[["epoch", "layer", "i_xt", "i_ty"]].to_parquet(d / "information_plane.parquet")
    assert main(["report", str(d)]) == 0
    page = (d / "report.html").read_text()
    assert "information_plane.png" in page and "Settings" not in page and "weight" not in page.lower()
    w = _tracker_dir(tmp_path / "w", plane=False)
    assert main(["report", str(w)]) == 0
    assert "weight_information.png" in (w / "report.html").read_text()


def test_report_refuses_what_it_cannot_read_naming_the_dir(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    err = capsys.readouterr().err
    assert str(empty) in err and "sweep.json" in err and "config.json" in err
    assert "information_plane.parquet" in err and "weight_information.parquet" in err
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "not a directory" in capsys.readouterr().err
    d = _tracker_dir(tmp_path / "bad", weights=False)
    (d / "information_plane.json").write_text(json.dumps({"format": "someone.else/3"}))
    assert main(["report", str(d)]) == 2
    assert "format 'someone.else/3'" in capsys.readouterr().err
    (d / "information_plane.json").write_text("{not json")
    assert main(["report", str(d)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_report_of_an_experiment_run_dir(tmp_path, capsys):
    from ibscope.experiments import runner

    out = runner.run(TOY, seeds=[0, 1], out_dir=tmp_path / "run", progress=False, report=False)
    assert not (out / "report.html").exists()
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "sweep_toy" in page and "2 seed(s)" in page and "Summary" in page and "&quot;scale&quot;: 1.0" in page


def test_report_of_a_sweep_dir_with_an_experiment_hook(tmp_path, monkeypatch):
    import importlib

    from ibscope.report import Section
    from ibscope.sweep import SweepSpec, run_sweep

    toy = importlib.import_module(TOY)
    calls = []

    def sweep_sections(results, point_columns, out_dir):
        calls.append((len(results), list(point_columns), Path(out_dir)))
        return [Section("Toy statistics", "computed by the hook", tables=[results.head(2)]),
                {"title": "As a mapping", "text": "also accepted"}]

    monkeypatch.setattr(toy, "sweep_sections", sweep_sections, raising=False)
    d = tmp_path / "sw"
    run_sweep(SweepSpec(TOY, grid={"scale": [1.0, 2.0]}, seeds=2), d, workers=0, progress=False, report=False)
    assert main(["report", str(d)]) == 0
    page = (d / "report.html").read_text()
    assert calls == [(12, ["scale"], d.resolve())] or calls == [(12, ["scale"], d)]
    assert "Toy statistics" in page and "As a mapping" in page and "Summary per grid point" in page


def test_plane_summary_one_run_and_over_seeds():
    from scipy import stats

    one = plane_summary(_plane())
    assert one["epoch"].tolist() == [5, 5] and one["layer"].tolist() == ["fc1", "fc2"]
    assert one["flags"].tolist() == ["", "saturated"] and one["interval"].iloc[0] == "estimator CI"
    assert {"i_xt_lo", "i_xt_hi", "i_ty_lo", "i_ty_hi", "ci_level", "n"} <= set(one.columns)
    many = _plane(seeds=(0, 1, 2, 3))
    many.loc[(many["seed"] == 2) & (many["epoch"] == 5) & (many["layer"] == "fc1"), "flags"] = "low_n;saturated"
    s = plane_summary(many).set_index("layer")
    last = many[(many["epoch"] == 5) & (many["layer"] == "fc1")]["i_xt"]
    half = stats.t.ppf(0.975, 3) * last.std(ddof=1) / 2
    assert s.loc["fc1", "i_xt"] == pytest.approx(last.mean())
    assert s.loc["fc1", "i_xt_hi"] - s.loc["fc1", "i_xt"] == pytest.approx(half)
    assert s.loc["fc1", "seeds"] == 4 and s.loc["fc1", "interval"] == "Student t over seeds"
    assert s.loc["fc1", "flags"] == "low_n;saturated" and s.loc["fc2", "flags"] == "saturated"
    w = weight_summary(_weights())
    assert w.set_index("layer").loc["total", "value"] == pytest.approx(11.5) and set(w["epoch"]) == {5}


def _tishby_like(n_seeds=5):
    rows = []
    for seed in range(n_seeds):  # compression grows with seed, and so does the gap: rho = +1
        for epoch, ixt in ((0, 5.0), (10, 8.0), (100, 8.0 - seed)):
            rows.append({"seed": seed, "epoch": epoch, "layer": "h1", "layer_index": 1, "estimator": "binning",
                         "i_xt": ixt, "i_ty": 0.5 + 0.01 * seed, "unit": "bits", "train_acc": 1.0,
                         "test_acc": 1.0 - 0.01 * seed, "train_loss": 0.1, "test_loss": 0.1 + 0.02 * seed,
                         "flags": "saturated" if seed == 3 and epoch == 100 else ""})
    return pd.DataFrame(rows)


def test_tishby_compression_statistics_and_sweep_section(tmp_path):
    from ibscope.experiments import _tishby_stats as ts

    res = _tishby_like()
    per, corr = ts.compression_statistics(res)
    assert per.sort_values("seed")["compression"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert corr["rho_acc"].iloc[0] == pytest.approx(1.0) and corr["rho_loss"].iloc[0] == pytest.approx(1.0)
    assert corr["n"].iloc[0] == 5
    # held-out metrics named eval_* (the training loop's names) work the same
    ev = res.rename(columns={"test_acc": "eval_acc", "test_loss": "eval_loss"})
    assert ts.compression_statistics(ev)[1]["rho_acc"].iloc[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="tishby-like"):
        ts.compression_statistics(res.drop(columns="test_acc"))
    (section,) = ts.sweep_sections(res, [], tmp_path)
    assert section["title"] == "Compression vs generalization" and Path(section["figures"][0]).is_file()
    assert ts.sweep_sections(res.drop(columns="train_acc"), [], tmp_path) == []


def test_tishby_summary_has_t_intervals_not_std():
    from scipy import stats

    from ibscope.experiments import get

    s = get("tishby").summarize(_tishby_like(4)).iloc[0]
    final = 8.0 - np.arange(4)
    half = stats.t.ppf(0.975, 3) * final.std(ddof=1) / 2
    assert s["i_xt"] == pytest.approx(final.mean()) and s["i_xt_hi"] - s["i_xt"] == pytest.approx(half)
    assert s["seeds"] == 4 and "Student t" in s["interval"] and s["flags"] == "saturated"
    assert not any(c.endswith("_std") for c in s.index)


_LAYERING = r"""
import ast, importlib, sys
from pathlib import Path

for name in ("ibscope.report", "ibscope.experiments.runner", "ibscope.sweep", "ibscope.reporting"):
    before = set(sys.modules)
    importlib.import_module(name)  # each imports (the first alone, in a fresh interpreter)
    if name == "ibscope.report":
        loaded = set(sys.modules) - before
        assert not any(m.startswith(("ibscope.sweep", "ibscope.experiments", "ibscope.reporting")) for m in loaded), loaded

root = Path(sys.argv[1]) / "ibscope"

def imports(path):
    # (absolute module, name of the enclosing function or None) for every import, module- or function-level
    mod = ".".join(path.relative_to(root.parent).with_suffix("").parts)
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = []
    def visit(node, func):
        for child in ast.iter_child_nodes(node):
            f = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            if isinstance(child, ast.Import):
                out.extend((a.name, f) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = pkg.split(".")[: len(pkg.split(".")) - child.level + 1]
                    base = ".".join(parts + ([child.module] if child.module else []))
                out.extend([(base, f)] + [(base + "." + a.name, f) for a in child.names])
            visit(child, f)
    visit(ast.parse(path.read_text()), None)
    return mod, out

graph = {}
for path in root.rglob("*.py"):
    mod, imps = imports(path)
    graph[mod.removesuffix(".__init__")] = imps

def targets(mod, skip_alias=True):
    out = set()
    for target, func in graph[mod]:
        if skip_alias and mod == "ibscope.report" and func == "__getattr__":
            continue  # the documented alias ibscope.report.build_report -> ibscope.reporting
        owners = [k for k in graph if target == k or target.startswith(k + ".")]
        if owners:  # the most specific module that holds the target (a package's submodule, not the package)
            out.add(max(owners, key=len))
    return out - {mod}

report = {t for t, _ in graph["ibscope.report"]}
assert not any(t.startswith(("ibscope.experiments", "ibscope.sweep")) for t in report), report
alias = [(t, f) for t, f in graph["ibscope.report"] if t.startswith("ibscope.reporting")]
assert alias and all(f == "__getattr__" for _, f in alias), alias
assert not any(t.startswith("ibscope.sweep") for t in targets("ibscope.experiments.runner"))
assert "ibscope.reporting" not in set().union(*(targets(m) for m in graph if m != "ibscope.reporting" and m != "ibscope.cli"))

# no cycle among the report / runner / sweep / reporting / experiment-stats modules (depth-first search)
nodes = [m for m in graph if m.startswith(("ibscope.report", "ibscope.plots", "ibscope._intervals",
                                           "ibscope.experiments", "ibscope.sweep", "ibscope.store"))]
state = {}
def dfs(m, stack):
    state[m] = 1
    for t in targets(m):
        if t not in nodes:
            continue
        if state.get(t) == 1:
            raise AssertionError("import cycle: " + " -> ".join([*stack, m, t]))
        if t not in state:
            dfs(t, [*stack, m])
    state[m] = 2
for m in nodes:
    if m not in state:
        dfs(m, [])
print("ok")
"""


def test_no_import_cycle_between_report_runner_and_sweep():
    out = subprocess.run([sys.executable, "-c", _LAYERING, str(SRC)], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]
