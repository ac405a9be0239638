"""Issue 22 (validation): no silent coercion, no silent acceptance, no hangs.

Every case here was accepted (or coerced, or hung) before: a schedule given as
a string or with float epochs, a float seed, metrics overwriting the table's
own columns, unknown top-level keys of ``ibscope run --config``, a list where a
setting takes one value, YAML aliases (the "billion laughs" expansion), grids
too large to plan, integers above 2^53 rounded by float64, bfloat16 tensors.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ibscope
from ibscope import estimators
from ibscope.models import MLP
from ibscope.tracking import ActivationRecorder, InformationPlane
from ibscope.weights import WeightInformation

ROOT = Path(__file__).resolve().parents[1]
CE = nn.functional.cross_entropy


def _xy(n: int = 40):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 4, generator=g), torch.randint(0, 2, (n,), generator=g)


# --------------------------------------------------------------------------- schedules and seeds
BAD_SCHEDULES = ["10", b"10", 10, [1.7], [0, 2.0], [True], [0, -1], [], {0: 1}, np.array([0.5, 1.0])]


@pytest.mark.parametrize("schedule", BAD_SCHEDULES, ids=repr)
@pytest.mark.parametrize("owner", ["InformationPlane", "WeightInformation"])
def test_schedule_refused_by_every_tracker(owner, schedule):
    x, y = _xy()
    with pytest.raises(ValueError, match=f"'schedule' parameter of {owner}"):
        if owner == "InformationPlane":
            InformationPlane(MLP(4, (5,), 2, seed=0), x, y, schedule=schedule)
        else:
            WeightInformation(CE, [(x, y)], schedule=schedule)


@pytest.mark.parametrize("schedule", ["10", [1.7], [True], [-1]], ids=repr)
def test_recorder_schedule_refused(schedule):
    x, _ = _xy()
    with pytest.raises(ValueError, match="'schedule' parameter of ActivationRecorder"):
        ActivationRecorder(MLP(4, (5,), 2, seed=0), x, schedule=schedule)


def test_schedule_accepts_integers_of_any_kind():
    from ibscope._validation import check_schedule

    assert check_schedule([5, np.int64(0), torch.tensor(2).item(), 5]) == [0, 2, 5]
    assert check_schedule(np.arange(3)) == [0, 1, 2]
    assert check_schedule(torch.tensor([3, 1])) == [1, 3]
    assert check_schedule(None) is None
    x, y = _xy()
    assert WeightInformation(CE, [(x, y)], schedule=range(3)).schedule == [0, 1, 2]
    assert ActivationRecorder(MLP(4, (5,), 2, seed=0), x).schedule == set()  # empty default stays allowed


@pytest.mark.parametrize("seed", [1.7, 2.0, -1, "1", True, None], ids=repr)
@pytest.mark.parametrize("owner", ["InformationPlane", "WeightInformation"])
def test_seed_refused(owner, seed):
    x, y = _xy()
    with pytest.raises((ValueError, TypeError), match=f"'seed' parameter of {owner}"):
        if owner == "InformationPlane":
            InformationPlane(MLP(4, (5,), 2, seed=0), x, y, seed=seed)
        else:
            WeightInformation(CE, [(x, y)], seed=seed)


def test_seed_accepts_numpy_ints():
    from ibscope._validation import check_seed

    assert check_seed(np.int64(3)) == 3 and type(check_seed(np.int64(3))) is int
    x, y = _xy()
    assert InformationPlane(MLP(4, (5,), 2, seed=0), x, y, seed=np.int32(4), estimators="binning").seed == 4


# --------------------------------------------------------------------------- metrics
def test_metrics_never_overwrite_the_table():
    x, y = _xy()
    plane = InformationPlane(MLP(4, (5,), 2, seed=0), x, y, estimators="binning")
    with pytest.warns(UserWarning, match=r"\['epoch', 'i_xt'\].*metric_epoch"):
        new = plane.record(3, metrics={"epoch": 77, "i_xt": 123.0, "loss": torch.tensor(0.25)})
    assert plane.epochs_done() == [3]
    assert (new["epoch"] == 3).all()
    assert (new["i_xt"] != 123.0).all() and (new["i_xt"] <= math.log2(len(x)) + 1e-9).all()
    assert (new["metric_epoch"] == 77).all() and (new["metric_i_xt"] == 123.0).all()
    assert (new["loss"] == 0.25).all()


@pytest.mark.parametrize("metrics, match", [
    ({"loss": "low"}, "'loss' must be a number"),
    ({"loss": [1.0, 2.0]}, "'loss' must be a number"),
    ({"epoch": 1.0, "metric_epoch": 2.0}, "'metric_epoch'.*already taken"),
])
def test_bad_metrics_refused_before_any_work(metrics, match):
    x, y = _xy()
    plane = InformationPlane(MLP(4, (5,), 2, seed=0), x, y, estimators="binning")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(ValueError, match=match):
            plane.record(0, metrics=metrics)
    assert plane.epochs_done() == []
    with pytest.raises(TypeError, match="'metrics'"):
        plane.record(0, metrics=[("loss", 1.0)])


# --------------------------------------------------------------------------- config files
def test_run_config_refuses_unknown_keys_like_sweep(tmp_path):
    from ibscope.cli import _load_config_file
    from ibscope.sweep import load_spec

    f = tmp_path / "typo.yaml"
    f.write_text("experiment: tishby\nconfg: {epochs: 3}\n")
    with pytest.raises(SystemExit, match=r"Unknown top-level key\(s\) \['confg'\]"):
        _load_config_file(str(f))
    with pytest.raises(ValueError, match=r"Unknown top-level key\(s\) \['confg'\]"):
        load_spec(f)
    good = tmp_path / "good.yaml"
    good.write_text("experiment: tishby\nconfig: {epochs: 3}\n")
    assert _load_config_file(str(good)) == ("tishby", {"epochs": 3})


def test_run_config_cli_refuses_before_running(tmp_path, monkeypatch, capsys):
    from ibscope import cli

    monkeypatch.chdir(tmp_path)
    # `seeds` is a sweep key that run never read; the invalid epochs make the old behaviour fail fast too
    (tmp_path / "typo.yaml").write_text("experiment: tishby\nseeds: 3\nconfig: {epochs: -1}\n")
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--config", "typo.yaml", "--out", "r"])
    assert "Unknown top-level key(s) ['seeds']" in str(exc.value) + capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_check_keys_and_reader(tmp_path):
    from ibscope._validation import check_keys, read_config_file

    with pytest.raises(ValueError, match="must hold a mapping"):
        check_keys([1, 2], ("a",), "x")
    with pytest.raises(ValueError, match=r"\['experiment'\]"):
        check_keys({}, ("experiment",), "x", required=("experiment",))
    with pytest.raises(FileNotFoundError, match="argument '--config'"):
        read_config_file(tmp_path / "none.yaml", ("a",), argument="--config")


BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x]"]
                 + [f"{c}: &{c} [{', '.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")])


def test_yaml_aliases_refused_everywhere(tmp_path):
    from ibscope._validation import load_yaml
    from ibscope.cli import _load_config_file
    from ibscope.reproduce._claims import load_claim
    from ibscope.sweep import load_spec

    sweep = tmp_path / "bomb.yaml"
    sweep.write_text("experiment: tishby\nconfig:\n  " + BOMB.replace("\n", "\n  ") + "\n")
    with pytest.raises(ValueError, match="anchors"):
        load_spec(sweep)
    with pytest.raises(SystemExit, match="anchors"):
        _load_config_file(str(sweep))
    claim = tmp_path / "c.yaml"
    claim.write_text("id: c\nruns: &r {}\nother: *r\n")
    with pytest.raises(ValueError, match="anchors"):
        load_claim(claim)
    with pytest.raises(ValueError, match="aliases"):  # an alias of an undefined anchor: still refused
        load_yaml("a: *x\n", "t")


def test_yaml_plain_data_and_size_cap():
    from ibscope._validation import MAX_YAML_BYTES, load_yaml

    assert load_yaml("a: [1, 2]\nb: {c: x}\n", "t") == {"a": [1, 2], "b": {"c": "x"}}
    assert load_yaml("", "t") is None
    with pytest.raises(ValueError, match="not valid plain YAML"):
        load_yaml("a: !!python/object:os.system {}\n", "t")
    with pytest.raises(ValueError, match=f"at most {MAX_YAML_BYTES}"):
        load_yaml("a: 1\n" + "#" * MAX_YAML_BYTES, "t")


# --------------------------------------------------------------------------- sweeps
def test_list_for_a_one_value_setting_names_the_axis(tmp_path):
    from ibscope.experiments import runner
    from ibscope.sweep import SweepSpec, parse_grid_args
    from ibscope.sweep._run import plan_sweep

    spec = SweepSpec("tishby", grid=parse_grid_args(["activation=[tanh]"]), profile="demo")
    with pytest.raises(ValueError, match=r"'activation'.*takes one value.*--grid activation=a,b"):
        plan_sweep(spec, tmp_path / "sw")
    with pytest.raises(ValueError, match=r"'activation'.*takes one value"):
        runner.resolve_config("tishby", overrides={"activation": ["tanh"]})
    with pytest.raises(ValueError, match=r"'epochs'.*takes one value"):
        runner.resolve_config("tishby", overrides={"epochs": {"a": 1}})
    # list-valued settings stay lists
    assert runner.resolve_config("tishby", profile="demo", overrides={"hidden": [10, 7]}).hidden


def test_grid_size_capped_before_expanding():
    from ibscope.sweep import SweepSpec

    MAX_TASKS = 100_000  # the documented cap (ibscope.sweep._spec.MAX_TASKS)
    axis = list(range(1000))
    with pytest.raises(ValueError, match=f"more than {MAX_TASKS} points"):
        SweepSpec("tishby", grid={"lr": axis, "epochs": axis})  # 10^6 points: never built
    with pytest.raises(ValueError, match=f"at most {MAX_TASKS}"):
        SweepSpec("tishby", grid={"lr": axis}, seeds=1000)
    spec = SweepSpec("tishby", grid={"lr": axis[:100]}, seeds=1000)  # exactly at the cap
    with pytest.raises(ValueError, match=f"at most {MAX_TASKS}"):
        spec.with_changes(seeds=1001)


def test_planning_does_not_search_modules_per_point(tmp_path, monkeypatch):
    """The registries' module lookups are cached: planning cost does not grow with a filesystem scan per task."""
    import importlib.util

    from ibscope.sweep import SweepSpec
    from ibscope.sweep._run import plan_sweep

    plan_sweep(SweepSpec("tishby", profile="demo"), tmp_path / "warm")
    calls = []
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda *a, **k: calls.append(a) or real(*a, **k))
    plan = plan_sweep(SweepSpec("tishby", grid={"lr": [1e-3 * (i + 1) for i in range(30)]}, profile="demo"),
                      tmp_path / "sw")
    assert len(plan.tasks) == 30
    assert len(calls) < 30, f"{len(calls)} module lookups for 30 tasks"
    assert len(plan.meta["grid"]["lr"]) == 30


# --------------------------------------------------------------------------- numeric inputs
def _offset_pair(n: int = 4000):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    x = (3 * y + rng.integers(0, 4, n)).astype(np.int64)  # only x == 3 is ambiguous: I = 0.75 bit
    return x, y


@pytest.mark.filterwarnings("ignore::ibscope.estimators.EstimateDiagnosticWarning")
@pytest.mark.parametrize("offset", [2**62, -(2**62), 2**53 + 1])
def test_large_integers_keep_their_information(offset):
    x, y = _offset_pair()
    xo = x + np.int64(offset)
    # discrete: exact symbols, the same plug-in value as without the offset
    ref = ibscope.mutual_information(x, y, discrete_x=True, discrete_y=True)
    assert ibscope.mutual_information(xo, y, discrete_x=True, discrete_y=True) == pytest.approx(ref, abs=1e-12)
    assert ref == pytest.approx(0.75, abs=0.05)  # ground truth 0.75 bit (n = 4000)
    # continuous: centred in integer arithmetic, so the differences survive float64
    ref_c = ibscope.mutual_information(x, y, discrete_y=True)
    assert ibscope.mutual_information(xo, y, discrete_y=True) == pytest.approx(ref_c, abs=1e-9)
    assert ref_c > 0.5
    ksg = estimators.get("ksg")
    assert ksg.estimate(torch.as_tensor(xo), y, discrete_y=True) == pytest.approx(
        ksg.estimate(x, y, discrete_y=True), abs=1e-9)


def test_uint64_above_int64_range():
    x, y = _offset_pair()
    xu = x.astype(np.uint64) + np.uint64(2**63 + 2**62)
    ref = ibscope.mutual_information(x, y, discrete_y=True)
    assert ibscope.mutual_information(xu, y, discrete_y=True) == pytest.approx(ref, abs=1e-9)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_tensors_upcast(dtype):
    rng = np.random.default_rng(1)
    z = rng.standard_normal(2000)
    x = torch.tensor(z, dtype=dtype)
    y = torch.tensor(z + rng.standard_normal(2000), dtype=dtype)
    exact_x, exact_y = x.to(torch.float64), y.to(torch.float64)  # upcasting is exact
    # numpy-side estimators (the default copula, binning) and torch-side ones (gaussian, ksg)
    for name in ("gaussian_copula", "binning", "gaussian", "ksg"):
        est = estimators.get(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bfloat16 has ties: ksg flags duplicates
            assert est.estimate(x, y) == pytest.approx(est.estimate(exact_x, exact_y), abs=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = ibscope.mutual_information(x, y)
    assert got == pytest.approx(0.5, abs=0.06)  # truth 0.5 * log2(2) = 0.5 bit


# --------------------------------------------------------------------------- packaging
def test_license_is_an_spdx_string():
    if sys.version_info < (3, 11):
        pytest.skip("tomllib needs Python 3.11")
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert all((ROOT / f).is_file() for f in project["license-files"])
