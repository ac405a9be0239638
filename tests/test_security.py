"""A config file never imports code: user experiment modules need an explicit opt-in naming them."""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ibscope
from ibscope import experiments
from ibscope.experiments import runner
from ibscope.sweep import SweepSpec, run_sweep

SRC = str(Path(ibscope.__file__).resolve().parents[1])
TOY = "_sweep_toy"

PLANTED = """\
from pathlib import Path
Path(__file__).with_name("IMPORTED").write_text("the planted module ran")
"""


@pytest.fixture
def no_import(monkeypatch):
    """Fail the test if anything tries to find or import a module outside ibscope."""
    def guard(real):
        def call(name, *args, **kwargs):
            if not name.startswith("ibscope."):
                raise AssertionError(f"a lookup of module {name!r} happened")
            return real(name, *args, **kwargs)
        return call

    monkeypatch.setattr(importlib, "import_module", guard(importlib.import_module))
    monkeypatch.setattr(importlib.util, "find_spec", guard(importlib.util.find_spec))


@pytest.mark.parametrize("name", ["this", "antigravity", "os", "mypkg.evil", TOY])
def test_unregistered_module_refused_before_any_import(name, no_import):
    with pytest.raises(ValueError, match=rf"Unknown experiment '{name}'.*--allow-module {name}"):
        runner.load_experiment(name)
    with pytest.raises(ValueError, match="Unknown experiment"):
        runner.resolve_config(name)


def test_opt_in_must_name_the_exact_module():
    with pytest.raises(ValueError, match="must name the experiment module exactly"):
        runner.load_experiment("this", allow_module=TOY)
    with pytest.raises(ValueError, match="dotted module path"):
        experiments.allow_module("../evil")
    assert not experiments.is_allowed("this")


def test_opted_in_module_runs_and_is_checked_against_the_contract(tmp_path):
    try:
        mod = runner.load_experiment(TOY, allow_module=TOY)
        assert mod.NAME == "sweep_toy" and experiments.is_allowed(TOY)
        out = runner.run(TOY, seeds=[0], out_dir=tmp_path / "run", progress=False, report=False)
        assert (out / "results.parquet").is_file()
        # an opted-in module that is not an experiment is refused after import, with the reason
        experiments.allow_module("json")
        with pytest.raises(ValueError, match=r"'json' is not an experiment: it lacks \['NAME'"):
            runner.load_experiment("json")
        with pytest.raises(ImportError, match="No module named 'no_such_module_xyz'"):
            runner.load_experiment("no_such_module_xyz", allow_module="no_such_module_xyz")
    finally:
        for name in (TOY, "json", "no_such_module_xyz"):
            experiments._ALLOWED.discard(name)


def test_sweep_of_a_user_module_needs_the_opt_in_and_workers_get_it(tmp_path):
    spec = SweepSpec(TOY, grid={"scale": [1.0, 2.0]}, seeds=1)
    with pytest.raises(ValueError, match="Unknown experiment"):
        run_sweep(spec, tmp_path / "refused", workers=0, progress=False, report=False)
    assert not (tmp_path / "refused" / "sweep.json").exists()
    try:  # (spawned workers, which have no opt-in of their own, get the driver's with each task:
        # tests/test_sweep.py runs this module on a pool of 2)
        res = run_sweep(spec, tmp_path / "sw", workers=0, progress=False, report=False, allow_module=TOY)
    finally:
        experiments._ALLOWED.discard(TOY)
    assert res.ok and len(res.done) == 2, res.failed


# Run in one fresh interpreter whose working directory is first on sys.path (as under `python -m ibscope`),
# so that a .py file beside the YAML is importable: each CLI call prints its exit status.
CLI_SCRIPT = """
import sys
from ibscope.cli import main

for args in [
    ["sweep", "zen.yaml", "--out", "sw1", "--workers", "0"],
    ["sweep", "planted.yaml", "--out", "sw2", "--workers", "0"],
    ["run", "planted", "--out", "r"],
    ["run", "--config", "planted.yaml", "--out", "r"],
    ["sweep", "planted.yaml", "--out", "sw3", "--workers", "0", "--allow-module", "this"],
    ["sweep", "planted.yaml", "--out", "sw4", "--workers", "0", "--allow-module", "planted"],
]:
    try:
        code = main([*args, "--no-progress"])
    except SystemExit as e:
        print(e, file=sys.stderr)
        code = "exit"
    print("STATUS", args[1], args[-1], code, "imported" if "planted" in sys.modules else "-", flush=True)
"""


def test_sweep_file_cannot_run_the_zen_of_python_or_a_planted_module(tmp_path):
    (tmp_path / "planted.py").write_text(PLANTED)
    (tmp_path / "zen.yaml").write_text("experiment: this\n")
    (tmp_path / "planted.yaml").write_text("experiment: planted\nconfig: {}\n")
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", CLI_SCRIPT], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Beautiful is better than ugly" not in res.stdout + res.stderr  # `import this` never ran
    status = [line.split()[1:] for line in res.stdout.splitlines() if line.startswith("STATUS")]
    assert status == [
        ["zen.yaml", "0", "2", "-"],            # refused: not registered, no opt-in
        ["planted.yaml", "0", "2", "-"],        # the planted module was not imported
        ["planted", "r", "2", "-"],
        ["--config", "r", "2", "-"],
        ["planted.yaml", "this", "exit", "-"],  # the opt-in names another module: refused
        ["planted.yaml", "planted", "2", "imported"],  # opted in: imported, then refused as no experiment
    ], res.stdout + res.stderr
    assert res.stderr.count("Unknown experiment 'planted'") == 3 and "Unknown experiment 'this'" in res.stderr
    assert "must name that exact module" in res.stderr and "'planted' is not an experiment" in res.stderr
    assert (tmp_path / "IMPORTED").read_text() == "the planted module ran"  # only after the opt-in


def test_modules_import_alone_without_cycles():
    """Each module imports first into an interpreter without ibscope (an import cycle fails some order)."""
    names = ["ibscope.experiments.runner", "ibscope.sweep", "ibscope.sweep._run", "ibscope.sweep._task",
             "ibscope.sweep._store", "ibscope.store", "ibscope.cli", "ibscope.data", "ibscope.report",
             "ibscope.experiments"]
    code = ("import importlib, sys\n"
            "for n in sys.argv[1:]:\n"
            "    for m in [m for m in sys.modules if m == 'ibscope' or m.startswith('ibscope.')]:\n"
            "        del sys.modules[m]\n"
            "    importlib.import_module(n)\n"
            "    if n == 'ibscope.experiments.runner':  # the sweep builds on the runner, not the reverse\n"
            "        assert not [m for m in sys.modules if m.startswith('ibscope.sweep') or m == 'ibscope.reporting']\n"
            "    if n == 'ibscope.report':  # the renderer imports neither the runner nor the sweep\n"
            "        assert not [m for m in sys.modules if m.startswith('ibscope.sweep') or m == 'ibscope.experiments.runner']\n"
            "print('ok')\n")
    env = {**os.environ, "PYTHONPATH": SRC}
    out = subprocess.run([sys.executable, "-c", code, *names], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def test_registries_satisfy_the_interface_protocols():
    """ibscope._interface is the contract: every registered estimator, task and experiment satisfies it."""
    from ibscope import estimators, tasks
    from ibscope._interface import Experiment, MIEstimator, PlaneEstimator, Task

    for name in estimators.available():
        est = estimators.get(name)
        assert isinstance(est, MIEstimator) and est.name == name and est.unit == "bits", name
    planes = [n for n in estimators.available() if isinstance(estimators.get(n), PlaneEstimator)]
    assert {"binning", "kde_upper", "kde_lower"} <= set(planes) and "ksg" not in planes
    for name in tasks.available():
        task = tasks.get(name)
        assert isinstance(task, Task) and task.mutual_information >= 0, name
    for name in experiments.available():
        assert isinstance(runner.load_experiment(name), Experiment), name
    assert not isinstance(importlib.import_module("json"), Experiment)


def test_passing_the_module_object_is_the_opt_in_for_its_name(tmp_path):
    toy = importlib.import_module(TOY)
    try:
        assert not experiments.is_allowed(TOY)
        out = runner.run(toy, seeds=[0], out_dir=tmp_path / "run", progress=False, report=True)
        assert experiments.is_allowed(TOY) and (out / "report.html").is_file()  # the report reloads it by name
    finally:
        experiments._ALLOWED.discard(TOY)


def test_directory_lock_never_writes_through_a_planted_link(tmp_path):
    from ibscope.store import DirectoryLock

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(victim)
    with pytest.raises(ValueError, match="symbolic link"):
        DirectoryLock(run, what="run").acquire()
    assert victim.read_text() == "precious"
    # a FIFO (or any non-regular file) as the lock is refused too, without blocking
    fifo_dir = tmp_path / "fifo"
    fifo_dir.mkdir()
    os.mkfifo(fifo_dir / ".lock")
    with pytest.raises(ValueError, match="not a regular file"):
        DirectoryLock(fifo_dir).acquire()
    # the normal case still locks and releases
    lock = DirectoryLock(tmp_path / "fresh").acquire()
    lock.release()
