"""The bmi-hard suite of benchmarks/beyond_normal.py: task list, units, and the message without bmi.

The suite takes its tasks, samples and truths from benchmark-mi (``bmi``,
Czyz et al. 2023, arXiv:2306.11078 and arXiv:2310.10240), which lives in a
separate environment (benchmarks/setup_bench_env.sh). The task list and the
unit conversion are checked here without bmi; the checks that build bmi's
tasks skip when bmi is absent.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "beyond_normal.py"


@pytest.fixture(scope="module")
def bn():
    spec = importlib.util.spec_from_file_location("_beyond_normal_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def test_task_list(bn):
    entries = bn.BMI_HARD_TASKS
    mixtures = [e for e in entries if e[0] == "mixture"]
    students = [e for e in entries if e[0] == "student_t"]
    assert len(mixtures) + len(students) == len(entries)
    # the six bend-and-mix distributions of bmi.benchmark.tasks.mixtures, each once
    assert sorted(e[2] for e in mixtures) == sorted([
        "task_x", "task_ai", "task_waves", "task_galaxy", "task_concentric_multinormal",
        "task_multinormal_sparse_w_inliers"])
    assert all(e[1] == "mixtures" for e in mixtures)
    # default parameters: only the dimensions the factories require are given
    assert {e[2]: e[3] for e in mixtures}["task_concentric_multinormal"] == {"dim_x": 5}
    assert {e[2]: e[3] for e in mixtures}["task_multinormal_sparse_w_inliers"] == {
        "dim_x": 5, "dim_y": 5}
    assert all(not e[3] for e in mixtures if e[2] in ("task_x", "task_ai", "task_waves",
                                                        "task_galaxy"))
    assert all(e[1] == "student" for e in students)
    # the worst Student-t task: sparse 5 x 5, dof 3
    assert ("student_t", "student", "task_student_sparse", {"dim_x": 5, "dim_y": 5, "df": 3}) in entries
    assert bn.BMI_GROUPS == ("mixture", "student_t")
    assert bn.SUITES["bmi-hard"][1] == bn.BMI_GROUPS
    # bmi's KSG is a default column; the neural estimators are not
    defaults = bn._split_specs(bn.BMI_ESTIMATORS)
    assert bn.BMI_KSG in defaults and "auto" in defaults and "gaussian_copula" in defaults
    assert not {"flow", "latent_ksg"} & set(defaults)
    # the existing suites are untouched
    assert len(bn.SUITES["beyond_normal"][0]()) == 40
    assert [t.task_id for t in bn.SUITES["hard"][0]()][0] == "mix-x-rho0.9"


class _FakeTask:
    def __init__(self, nats):
        self.mutual_information = nats


def test_truth_converted_from_nats_to_bits(bn):
    assert bn.truth_bits(_FakeTask(1.5 * math.log(2.0))) == pytest.approx(1.5, rel=1e-12)
    entry = bn.BmiTask("t", "mixture", _FakeTask(math.log(2.0)))
    assert entry.mutual_information == pytest.approx(1.0, rel=1e-12)


def test_bmi_tasks_match_bmi():
    pytest.importorskip("bmi")
    spec = importlib.util.spec_from_file_location("_beyond_normal_script2", SCRIPT)
    bn = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bn
    try:
        spec.loader.exec_module(bn)
        for _, module, factory, kwargs in bn.BMI_HARD_TASKS:
            fn = getattr(importlib.import_module(f"bmi.benchmark.tasks.{module}"), factory)
            inspect.signature(fn).bind(**kwargs)  # the parameters exist
        # a closed-form task (no Monte Carlo): bmi's nats become bits
        from bmi.benchmark.tasks import student

        task = student.task_student_sparse(dim_x=5, dim_y=5, df=3)
        assert bn.truth_bits(task) == pytest.approx(task.mutual_information / math.log(2.0))
        assert task.dim_x == 5 and task.dim_y == 5
    finally:
        sys.modules.pop(spec.name, None)


def test_exits_2_without_bmi(bn, tmp_path, monkeypatch, capsys):
    if importlib.util.find_spec("bmi") is not None:
        pytest.skip("bmi is importable here; the message is for environments without it")
    assert not bn.bmi_available()
    out = tmp_path / "r.csv"
    monkeypatch.setattr(sys, "argv", ["beyond_normal.py", "--suite", "bmi-hard", "--n", "100",
                                      "--seeds", "0", "--out", str(out)])
    with pytest.raises(SystemExit) as exc:
        bn.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "benchmark-mi" in err and "setup_bench_env.sh" in err
    assert not out.exists()
