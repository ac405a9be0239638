"""Resume is deterministic: a sweep or run killed inside a batch of seeds ends with the uninterrupted table.

The kills are real (SIGKILL of the driver's process group) and land at points
reached deterministically: inside a batch's training (the toy experiment
tests/_sweep_toy_ckpt.py writes a marker after its mid-training checkpoint and
waits to be killed), or between the writes of two seeds' results of one batch
(the driver script kills itself after its n-th ``write_seed_result``). The
toy's batched rows depend on which seeds share the batch (as a real batched
network's do, by float reassociation), so a resume that re-plans the batch
changes the table. Tables are compared with ``np.testing.assert_allclose`` at
rtol 1e-12 (the toy is plain float64 arithmetic in one process layout).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ibscope
from ibscope.experiments.runner import run
from ibscope.store import DamagedFile
from ibscope.sweep import SweepSpec, run_sweep

TOY = "_sweep_toy_ckpt"  # tests/_sweep_toy_ckpt.py
SRC = str(Path(ibscope.__file__).resolve().parents[1])
TESTS = str(Path(__file__).resolve().parent)
RTOL = 1e-12
SPEC = {"experiment": TOY, "grid": {"scale": [1.0, 2.0]}, "seeds": 4}

# The driver scripts run in a subprocess; KILL_AFTER_WRITES=n makes the driver SIGKILL itself right after its
# n-th seed result is written (inside a batch's results when n is not a multiple of the batch size).
_PRELUDE = """
import os, signal, sys
import ibscope.experiments.runner as runner
n = int(os.environ.get("KILL_AFTER_WRITES", "0"))
if n:
    written = runner.write_seed_result
    calls = []
    def write_then_die(*a, **k):
        out = written(*a, **k)
        calls.append(1)
        if len(calls) == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    runner.write_seed_result = write_then_die
"""
_SWEEP = _PRELUDE + """
from ibscope.sweep import SweepSpec, run_sweep
spec = SweepSpec({toy!r}, config={{}}, grid={{"scale": [1.0, 2.0]}}, seeds=4)
run_sweep(spec, sys.argv[1], workers=int(sys.argv[2]), progress=False, report=False, allow_module={toy!r},
          batch_seeds=sys.argv[3] == "1")
"""
_RUN = _PRELUDE + """
from ibscope.experiments.runner import run
run({toy!r}, seeds=[0, 1, 2, 3], out_dir=sys.argv[1], overrides={{"scale": 2.0}}, allow_module={toy!r},
    progress=False, report=False)
"""


@pytest.fixture(autouse=True)
def _allow_toy():
    from ibscope import experiments

    experiments.allow_module(TOY)
    yield
    experiments._ALLOWED.discard(TOY)


def _spec(seeds=4):
    return SweepSpec(TOY, config={}, grid={"scale": [1.0, 2.0]}, seeds=seeds)


def _killed(script: str, args: list[str], *, hold: Path | None = None, ready=lambda: True,
            kill_after_writes: int = 0, hold_kind: str = "batch") -> None:
    """Run ``script`` in its own process group and SIGKILL it at the deterministic point."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, TESTS]), "OMP_NUM_THREADS": "1",
           "KILL_AFTER_WRITES": str(kill_after_writes), "SWEEP_TOY_HOLD_KIND": hold_kind}
    if hold is not None:
        env["SWEEP_TOY_HOLD"] = str(hold)
    proc = subprocess.Popen([sys.executable, "-c", script.format(toy=TOY), *args], env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if hold is None:  # it kills itself
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
            return
        deadline = time.monotonic() + 120
        while not (hold.exists() and ready()):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the held batch was never reached"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, inside the held batch
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _table(path: Path, key: list[str]) -> pd.DataFrame:
    return pd.read_parquet(path).sort_values(key).reset_index(drop=True)


def _assert_same_table(a: pd.DataFrame, b: pd.DataFrame, key: list[str]) -> None:
    assert len(a) and len(a) == len(b)
    pd.testing.assert_frame_equal(a[key], b[key])
    np.testing.assert_allclose(a["value"].to_numpy(), b["value"].to_numpy(), rtol=RTOL, atol=0)


def _calls(path: Path) -> list[str]:
    return path.read_text().splitlines()


# --------------------------------------------------------------------------- sweeps


def test_sweep_killed_inside_a_batch_resumes_that_batch_and_equals_uninterrupted(tmp_path):
    d = tmp_path / "killed"
    # inline driver: the scale=1.0 batch finishes, the scale=2.0 batch (seeds 0-3) is killed at step 3 of 6
    _killed(_SWEEP, [str(d), "0", "1"], hold=tmp_path / "held",
            ready=lambda: len(list(d.glob("tasks/*/result.json"))) == 4)
    (held,) = [p.parent for p in d.glob("batches/*/toy_checkpoint.json")
               if json.loads(p.read_text())["step"] < 6]
    # resumed with two workers: a fresh plan would split the four unfinished seeds into two batches
    res = run_sweep(_spec(), d, workers=2, progress=False, report=False, allow_module=TOY, mp_context="fork")
    assert res.ok and res.ran == 4
    ref = run_sweep(_spec(), tmp_path / "ref", workers=0, progress=False, report=False, allow_module=TOY)
    key = ["task_id", "epoch"]
    _assert_same_table(_table(res.results, key), _table(ref.results, key), key)
    assert _calls(held / "calls.txt") == ["0 1 2 3 from 0", "0 1 2 3 from 3"]  # from its own checkpoint
    plan = json.loads((d / "batches.json").read_text())["batches"]
    assert sorted(p.name for p in (d / "batches").iterdir()) == sorted(b["name"] for b in plan)
    assert [len(b["task_ids"]) for b in plan] == [4, 4]


def test_sweep_killed_between_the_results_of_one_batch_equals_uninterrupted(tmp_path):
    d = tmp_path / "killed"
    _killed(_SWEEP, [str(d), "0", "1"], kill_after_writes=5)  # 4 of scale=1.0, 1 of scale=2.0
    assert len(list(d.glob("tasks/*/result.json"))) == 5
    res = run_sweep(_spec(), d, workers=0, progress=False, report=False, allow_module=TOY)
    assert res.ok and res.ran == 3
    ref = run_sweep(_spec(), tmp_path / "ref", workers=0, progress=False, report=False, allow_module=TOY)
    key = ["task_id", "epoch"]
    _assert_same_table(_table(res.results, key), _table(ref.results, key), key)
    # the batch ran again as a whole from its finished checkpoint (no step retrained)
    calls = sorted(line for p in d.glob("batches/*/calls.txt") for line in _calls(p))
    assert calls == ["0 1 2 3 from 0", "0 1 2 3 from 0", "0 1 2 3 from 6"]


@pytest.mark.slow  # a guard (resuming one task from its checkpoint was already deterministic)
def test_unbatched_sweep_killed_inside_a_task_equals_uninterrupted(tmp_path):
    d = tmp_path / "killed"
    _killed(_SWEEP, [str(d), "0", "0"], hold=tmp_path / "held", hold_kind="seed")
    assert not (d / "batches.json").exists()
    res = run_sweep(_spec(), d, workers=0, progress=False, report=False, allow_module=TOY, batch_seeds=False)
    assert res.ok and not (d / "batches").exists()
    assert any(_calls(p)[-1].endswith("from 3") for p in d.glob("tasks/*/calls.txt"))  # resumed mid-task
    ref = run_sweep(_spec(), tmp_path / "ref", workers=0, progress=False, report=False, allow_module=TOY,
                    batch_seeds=False)
    key = ["task_id", "epoch"]
    _assert_same_table(_table(res.results, key), _table(ref.results, key), key)


def test_batch_plan_is_kept_across_runs_and_a_failed_batch_stays_seed_by_seed(tmp_path):
    from ibscope.sweep import SweepStore
    from ibscope.sweep._run import _plan_units, plan_sweep

    d = tmp_path / "sw"
    spec = _spec()
    run_sweep(spec.with_changes(seeds=2), d, workers=0, progress=False, report=False, allow_module=TOY)
    store = SweepStore(d)
    first = store.read_batches()
    assert [len(b["task_ids"]) for b in first] == [2, 2]
    # grown: the finished batches stay recorded, only the new seeds are planned (here with 4 workers)
    plan = plan_sweep(spec, d, allow_module=TOY)
    todo = [t for t in plan.tasks if not store.is_done(t)]
    units, records = _plan_units(store, plan, todo, parallel=4)
    assert records[:2] == first and sorted(len(u.tasks) for u in units) == [1, 1, 1, 1]
    # a failed batch: its unfinished tasks run one by one, also in later runs
    store.write_batches([{**r, "failed": True} for r in records[:2]] + records[2:])
    for t in plan.tasks[:1]:
        (store.task_dir(t) / "result.json").unlink()
    units, _ = _plan_units(store, plan, [plan.tasks[0]], parallel=1)
    assert [(u.name, [t.task_id for t in u.tasks]) for u in units] == [(None, [plan.tasks[0].task_id])]
    store.batches_path.write_text('{"batches": [{"name": "../x", "config_hash": "h", "task_ids": ["a"]}]}')
    with pytest.raises(DamagedFile, match="batch plan"):
        run_sweep(spec, d, workers=0, progress=False, report=False, allow_module=TOY)


# --------------------------------------------------------------------------- ibscope run


@pytest.mark.slow  # a guard: with the same seeds the run found its batch again before the plan was kept
def test_run_killed_inside_its_batch_equals_uninterrupted(tmp_path):
    d = tmp_path / "killed"
    _killed(_RUN, [str(d)], hold=tmp_path / "held")
    (batch,) = d.glob("batch_*")
    run(TOY, seeds=[0, 1, 2, 3], out_dir=d, overrides={"scale": 2.0}, allow_module=TOY, progress=False,
        report=False)
    assert _calls(batch / "calls.txt") == ["0 1 2 3 from 0", "0 1 2 3 from 3"]
    run(TOY, seeds=[0, 1, 2, 3], out_dir=tmp_path / "ref", overrides={"scale": 2.0}, allow_module=TOY,
        progress=False, report=False)
    key = ["seed", "epoch"]
    _assert_same_table(_table(d / "results.parquet", key), _table(tmp_path / "ref" / "results.parquet", key), key)


def test_run_killed_between_the_results_of_its_batch_equals_uninterrupted(tmp_path):
    d = tmp_path / "killed"
    _killed(_RUN, [str(d)], kill_after_writes=1)
    assert len(list(d.glob("seed_*/result.json"))) == 1
    run(TOY, seeds=[0, 1, 2, 3], out_dir=d, overrides={"scale": 2.0}, allow_module=TOY, progress=False,
        report=False)
    run(TOY, seeds=[0, 1, 2, 3], out_dir=tmp_path / "ref", overrides={"scale": 2.0}, allow_module=TOY,
        progress=False, report=False)
    key = ["seed", "epoch"]
    _assert_same_table(_table(d / "results.parquet", key), _table(tmp_path / "ref" / "results.parquet", key), key)
    assert len(list(d.glob("batch_*"))) == 1  # no second batch was started


def test_run_killed_inside_its_batch_then_grown_resumes_the_batch(tmp_path):
    d = tmp_path / "killed"
    _killed(_RUN, [str(d)], hold=tmp_path / "held")
    run(TOY, seeds=range(6), out_dir=d, overrides={"scale": 2.0}, allow_module=TOY, progress=False, report=False)
    ref = tmp_path / "ref"  # uninterrupted: seeds 0-3, then 4 and 5 added
    run(TOY, seeds=[0, 1, 2, 3], out_dir=ref, overrides={"scale": 2.0}, allow_module=TOY, progress=False,
        report=False)
    run(TOY, seeds=range(6), out_dir=ref, overrides={"scale": 2.0}, allow_module=TOY, progress=False, report=False)
    key = ["seed", "epoch"]
    _assert_same_table(_table(d / "results.parquet", key), _table(ref / "results.parquet", key), key)
    plans = [[b["seeds"] for b in json.loads((p / "batches.json").read_text())["batches"]] for p in (d, ref)]
    assert plans[0] == plans[1] == [[0, 1, 2, 3], [4, 5]]
