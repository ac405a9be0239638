"""The tutorial of docs/language_models.md (train a tiny GPT, checkpoint, analyse, real text) runs verbatim
at reduced size."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "language_models.md"
SIZES = "STEPS, N_TRAIN, N_EVAL, TEXT_STEPS = 600, 2000, 48, 300"


@pytest.mark.slow  # ~20-60 s of CPU training on a loaded 2-core machine
def test_tutorial_runs_at_reduced_size(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    tutorial = [b for b in blocks if "lm.MarkovSource" in b]
    assert len(tutorial) == 1, "docs/language_models.md should hold one tutorial block using lm.MarkovSource"
    code = tutorial[0]
    assert SIZES in code, "the tutorial's size line changed: update SIZES here"
    code = code.replace(SIZES, "STEPS, N_TRAIN, N_EVAL, TEXT_STEPS = 20, 64, 6, 3")
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(code, str(DOC), "exec"), ns)
    assert [p.name for p in ns["run"]["checkpoints"]] == ["checkpoint-0", "checkpoint-2", "checkpoint-6",
                                                          "checkpoint-20"]
    assert (tmp_path / "tiny_gpt_measures" / "lm_measures.png").is_file()
    table = pd.read_parquet(tmp_path / "tiny_gpt_measures" / "lm_measures.parquet")
    assert {"prompt_entropy", "soft_i_xt", "soft_i_ty"} == set(table["measure"])
    assert set(table["step"]) == {0, 2, 6, 20} and table["value"].notna().all()
    assert (table.loc[table["measure"] == "soft_i_xt", "unit"] == "bits").all()
