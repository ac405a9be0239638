"""The README's "Your own model" code block, executed verbatim, then `ibscope report` on its directory."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(heading: str, index: int = 0) -> str:
    text = README.read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)[index]


def test_readme_your_own_model_runs_verbatim(tmp_path, monkeypatch, capsys):
    from ibscope.cli import main

    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_block("Your own model"), "README.md", "exec"), namespace)
    table = namespace["table"]
    assert {"i_xt_lo", "i_xt_hi", "i_ty_lo", "i_ty_hi", "ci_level", "flags", "unit"} <= set(table.columns)
    assert set(table["estimator"]) == {"pca_ksg", "kde_upper"} and set(table["unit"]) == {"bits"}
    assert sorted(table["epoch"].unique()) == [0, 1, 2, 4, 7, 10]
    ok = table[table["i_xt_lo"].notna()]
    assert len(ok) and (ok["ci_level"] == 0.95).all() and (ok["i_xt_lo"] <= ok["i_xt"]).all() \
        and (ok["i_xt"] <= ok["i_xt_hi"]).all()
    # a value without an interval is one the diagnostics flagged as saturated
    assert table.loc[table["i_xt_lo"].isna(), "flags"].str.contains("saturated_xt").all()
    weights = namespace["weights"].results()
    assert {"iiw", "fisher"} <= set(weights["quantity"]) and np.isfinite(weights["value"]).all()
    capsys.readouterr()
    assert main(["report", "runs/digits-cnn"]) == 0
    assert "report.html" in capsys.readouterr().out
    html = (tmp_path / "runs/digits-cnn/report.html").read_text()
    assert html.count("<img") >= 3 and "Information in the weights" in html
    for fig in ("information_plane.png", "weight_information.png"):
        assert (tmp_path / "runs/digits-cnn" / fig).is_file()


def test_readme_transformer_example_runs_verbatim(tmp_path, monkeypatch, capsys):
    """The token-transformer block after the CNN (it reuses the CNN block's imports)."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    head = "import torch\nfrom torch import nn\nimport ibscope\nfrom ibscope.training import fit\n"
    exec(compile(head + _block("Your own model", 1), "README.md", "exec"), namespace)
    table = namespace["tokens"].results()
    assert sorted(table["epoch"].unique()) == [0, 5, 10] and set(table["unit"]) == {"bits"}
    embed = table[table["layer"] == "embed"]
    # integer inputs: the injective embedding of 600 distinct sequences is at log2 600, flagged at its ceiling
    assert table["discrete_input"].all()
    assert np.allclose(embed["i_xt"], np.log2(600), rtol=0.01) and embed["flags"].str.contains("saturated_xt").all()
    assert "flags" in capsys.readouterr().out
