"""Every registered experiment through the real CLI entry point with default flags (issue 22).

``ibscope run iiw`` with its default progress bars once crashed while every test passed, because the
tests ran with progress off. Here each experiment of the registry (:func:`ibscope.experiments.available`)
runs as a user runs it: ``python -m ibscope run NAME --profile test --out DIR`` in a fresh process, with
progress bars on (no ``--no-progress``) and one seed. The run must exit 0, print no traceback, and leave
the results table (``results.parquet``, rows with a ``unit`` column) and ``report.html``.

Experiments whose ``test`` profile reads MNIST skip when the shared data directory is absent (the
``shared_data`` fixture, ``$IBSCOPE_DATA``); every other experiment runs with ``$IBSCOPE_DATA`` pointing at
an empty directory, so a silent dependence on the shared data fails here. The heaviest experiments are
marked ``slow`` to keep the default suite fast, and the selected runs are started two at a time when the
first of them is needed (each CLI process is single-threaded and spends seconds importing torch), each
test then waiting for its own run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

import ibscope
from ibscope import experiments

# experiments whose `test` profile reads the MNIST test images of the shared data directory
NEEDS_MNIST = {"noisy_convnet"}
# the slowest through the CLI (tens of seconds on a 2-core machine): run with `pytest -m slow`
SLOW = {"ntk", "noisy_convnet", "lm_tiny"}  # lm_tiny imports transformers and trains a GPT: ~30-100 s
TIMEOUT_S = 600
WORKERS = 2  # CLI processes at once


def _params():
    for name in experiments.available():
        marks = [pytest.mark.slow] if name in SLOW else []
        yield pytest.param(name, marks=marks, id=name)


def _run_cli(args: list[str], data_dir: Path, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m ibscope ARGS`` in a fresh process that imports this ibscope (not another install)."""
    src = str(Path(ibscope.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    env["IBSCOPE_DATA"] = str(data_dir)
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run([sys.executable, "-m", "ibscope", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)


def test_every_experiment_has_a_test_profile():
    """The CLI test below needs each registered experiment's small `test` profile."""
    missing = [n for n in experiments.available() if "test" not in getattr(experiments.get(n), "PROFILES", {})]
    assert not missing, f"experiments without a 'test' profile: {missing}"
    assert set(NEEDS_MNIST) | set(SLOW) <= set(experiments.available())


@pytest.fixture(scope="module")
def cli_runs(request, tmp_path_factory):
    """``{name: (future of the finished process, run directory)}`` for the selected experiments, started
    ``WORKERS`` at a time (MNIST experiments only where the shared data is present)."""
    from ibscope.data import data_dir

    names = [item.callspec.params["name"] for item in request.session.items
             if getattr(item, "originalname", None) == "test_cli_run_default_flags"]
    runs: dict[str, tuple[Future, Path]] = {}
    pool = ThreadPoolExecutor(max_workers=WORKERS)
    for name in names:
        root = tmp_path_factory.mktemp(name)
        if name in NEEDS_MNIST:
            if not data_dir().is_dir():
                continue  # the test skips through the shared_data fixture
            data = data_dir()
        else:
            data = root / "no-shared-data"
            data.mkdir()
        out = root / "run"
        args = ["run", name, "--profile", "test", "--seeds", "1", "--out", str(out)]
        runs[name] = (pool.submit(_run_cli, args, data, root), out)
    yield runs
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("name", list(_params()))
def test_cli_run_default_flags(name, cli_runs, request):
    if name in NEEDS_MNIST:
        request.getfixturevalue("shared_data")  # skips with a reason when absent
    future, out = cli_runs[name]
    proc = future.result()
    detail = f"\n--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-8000:]}"
    assert proc.returncode == 0, f"`ibscope run {name} --profile test` exited {proc.returncode}{detail}"
    assert "Traceback" not in proc.stderr, detail
    assert f"{name} seeds" in proc.stderr, "the progress bar (on by default) was not drawn" + detail
    results, report = out / "results.parquet", out / "report.html"
    assert results.is_file() and report.is_file(), detail
    assert f"Results: {results}" in proc.stdout and "Report:" in proc.stdout, detail
    table = pd.read_parquet(results)
    assert len(table) > 0 and "unit" in table.columns
    assert set(table["seed"]) == {0}
    assert report.stat().st_size > 0
