"""The built-in experiments give the same results as before they trained through ``ibscope.training.fit``.

``tests/data/experiments_reference.csv`` holds a handful of values per
experiment computed by the code *before* the port (see
``tests/data/experiments_reference.md`` for the commit and the command). The
test recomputes them at the same tiny settings and compares with a relative
tolerance of 1e-6: the port keeps the batch order and the order of the
operations, so only the floating point of another machine may differ. Only
continuous quantities are stored (losses, KDE bounds, IIW, RMSE, the finite
NTK networks' curves): a binned estimate or an accuracy could jump by one
count on another machine's floating point.

Regenerate (only when a result is *meant* to change, and say why in the commit)::

    PYTHONPATH=src OMP_NUM_THREADS=1 python tests/test_experiments_unchanged.py --write
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

REFERENCE = Path(__file__).parent / "data" / "experiments_reference.csv"
RTOL, ATOL = 1e-6, 1e-9


def _tishby(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    from ibscope.experiments import _tishby

    cfg = _tishby.Config(epochs=30, n_snapshots=3, batch_size=256, hidden=[10, 7, 5],
                         estimators={"binning": {}, "kde_upper": {}}, keep_activations=False)
    full = _tishby.run_seed(cfg, 1, out / "tishby")
    keep = []
    sel = full[(full["estimator"] == "kde_upper") & full["epoch"].isin([1, 30])]  # first step and last snapshot
    for r in sel.itertuples():
        keep += [(f"seed={r.seed}|epoch={r.epoch}|layer={r.layer}|kde_upper|i_xt", r.i_xt),
                 (f"seed={r.seed}|epoch={r.epoch}|layer={r.layer}|kde_upper|i_ty", r.i_ty)]
    for r in sel.drop_duplicates(["seed", "epoch"]).itertuples():
        keep += [(f"seed={r.seed}|epoch={r.epoch}|train_loss", r.train_loss),
                 (f"seed={r.seed}|epoch={r.epoch}|test_loss", r.test_loss)]
    return full, _values("tishby", keep)


def _ib_compare(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    from ibscope.experiments import _ib_compare as ibc

    frames = [ibc.run_seed(ibc.Config(method=m, **ibc.PROFILES["test"]), s, out / "ibc")
              for m in ("vanilla", "l2", "dropout", "vib", "pib") for s in (0, 1)]  # the methods of the reference
    full = pd.concat(frames, ignore_index=True)
    # 'pib' trains through train_gibbs, ported separately: its rows are kept in the
    # full table but not compared here
    sel = full[(full["method"] != "pib") & (full["quantity"] == "iiw")]
    keep = [(f"method={r.method}|seed={r.seed}|{r.quantity}", r.value) for r in sel.itertuples()]
    return full, _values("ib_compare", keep)


def _csib(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    from ibscope.experiments import _csib_regression as reg

    full = pd.concat([reg.run_seed(reg.Config(method=m, dataset=d, **reg.PROFILES["test"]), 0, out / "csib")
                      for d in ("diabetes", "heteroscedastic") for m in ("mse", "csib")], ignore_index=True)
    keep = [(f"dataset={r.dataset}|method={r.method}|seed={r.seed}|{r.quantity}", r.value)
            for r in full.itertuples()]
    return full, _values("csib_regression", keep)


def _ntk(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    from ibscope.experiments import get

    ntk = get("ntk")
    cfg = dataclasses.replace(ntk.Config(), **ntk.PROFILES["test"])
    full = ntk.run_seed(cfg, 0, out / "ntk")
    fin = full[(full["source"] == "finite") & (full["quantity"] != "accuracy")]
    keep = [(f"split={r.split}|t={r.t:.9g}|{r.quantity}", r.value) for r in fin.itertuples()]
    return full, _values("ntk", keep)


def _values(experiment: str, items: list[tuple[str, float]]) -> pd.DataFrame:
    return pd.DataFrame({"experiment": experiment, "key": [k for k, _ in items],
                         "value": [float(v) for _, v in items]})


CASES = {"tishby": _tishby, "ib_compare": _ib_compare, "csib_regression": _csib, "ntk": _ntk}


@pytest.mark.parametrize("experiment", list(CASES))
def test_results_unchanged_by_the_port_to_fit(experiment, tmp_path, one_thread):
    ref = pd.read_csv(REFERENCE, comment="#")
    ref = ref[ref["experiment"] == experiment].set_index("key")["value"]
    assert len(ref) >= 4, f"no reference values for {experiment}"
    _, now = CASES[experiment](tmp_path)
    now = now.set_index("key")["value"]
    assert now.index.is_unique and sorted(now.index) == sorted(ref.index)
    now = now.loc[ref.index]
    rel = np.abs(now.to_numpy() - ref.to_numpy()) / np.maximum(np.abs(ref.to_numpy()), 1e-300)
    bad = ~np.isclose(now.to_numpy(), ref.to_numpy(), rtol=RTOL, atol=ATOL)
    assert not bad.any(), (f"{experiment}: {int(bad.sum())} value(s) moved (max relative difference "
                           f"{rel.max():.3g}):\n{pd.DataFrame({'ref': ref, 'now': now})[bad]}")


def _write(parquet_dir: Path | None) -> None:  # pragma: no cover - the regeneration command
    import tempfile

    torch.set_num_threads(1)
    tables = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, case in CASES.items():
            full, values = case(Path(tmp))
            tables.append(values)
            if parquet_dir is not None:
                full.to_parquet(parquet_dir / f"before_{name}.parquet", index=False)
    REFERENCE.parent.mkdir(exist_ok=True)
    pd.concat(tables, ignore_index=True).to_csv(REFERENCE, index=False, float_format="%.17g")
    print(f"wrote {REFERENCE}")


if __name__ == "__main__":  # pragma: no cover
    args = sys.argv[1:]
    if "--write" not in args:
        raise SystemExit(__doc__)
    where = Path(args[args.index("--parquet-dir") + 1]) if "--parquet-dir" in args else None
    _write(where)
