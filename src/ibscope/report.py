"""A self-contained HTML report of a run directory (figures embedded as base64)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

from .store import atomic_write_text

__all__ = ["build_report"]


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}"/><figcaption>{html.escape(path.name)}</figcaption></figure>'


def build_report(run_dir: str | Path) -> Path:
    """(Re)build figures and ``report.html`` from the stored results of a run; returns the report path."""
    from .experiments import get as get_experiment
    from .experiments.runner import collect_results

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"'{run_dir}' is not a run directory (no config.json); argument 'run_dir'.")
    record = json.loads(cfg_path.read_text())
    mod = get_experiment(record["experiment"])
    results = collect_results(run_dir)
    if results.empty:
        raise ValueError(f"'{run_dir}' has no finished seed yet; nothing to report.")
    figures = mod.plot(results, run_dir)
    summary = mod.summarize(results) if hasattr(mod, "summarize") else pd.DataFrame()
    n_seeds = results["seed"].nunique()
    unit = results["unit"].iloc[0] if "unit" in results else ""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>ibscope report: {html.escape(run_dir.name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "img{max-width:100%}figure{margin:1em 0}pre{background:#f6f6f6;padding:1em;overflow-x:auto}</style>",
        "</head><body>",
        f"<h1>ibscope: {html.escape(record['experiment'])} run <code>{html.escape(run_dir.name)}</code></h1>",
        f"<p>{n_seeds} seed(s); information in <b>{html.escape(str(unit))}</b>; config hash "
        f"<code>{html.escape(record['config_hash'])}</code>.</p>",
        "<h2>Figures</h2>",
        *[_img(p) for p in figures if Path(p).is_file()],
    ]
    if len(summary):
        parts += ["<h2>Summary (final epoch, mean over seeds)</h2>",
                  summary.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="")]
    parts += ["<h2>Configuration</h2>", f"<pre>{html.escape(json.dumps(record['config'], indent=2))}</pre>",
              f"<p>Tidy results: <code>{html.escape(str((run_dir / 'results.parquet').name))}</code> "
              f"({len(results)} rows).</p>", "</body></html>"]
    return atomic_write_text(run_dir / "report.html", "\n".join(parts))
