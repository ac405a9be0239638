"""Every shipped config names a registered experiment, and every point of its grid is a valid config."""

from pathlib import Path

import pytest

from ibscope.experiments import available
from ibscope.experiments.runner import load_experiment, resolve_config
from ibscope.sweep import grid_points, load_spec, plan_sweep

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_validates_at_every_grid_point(path, tmp_path):
    spec = load_spec(path)
    assert spec.experiment in available()
    # the sweep planner resolves and validates (Config.validate) every grid point before any work
    plan = plan_sweep(spec, tmp_path / "sweep")
    points = grid_points(spec.grid)
    assert len(plan.tasks) == len(points) * len(spec.seeds)
    for point in points:  # and each point on its own, as `ibscope run --config` would see it
        cfg = resolve_config(spec.experiment, profile=spec.profile, overrides={**spec.config, **point})
        assert all(getattr(cfg, k) == v or list(getattr(cfg, k)) == v for k, v in point.items())


# one setting per experiment that Config.validate must reject, naming it
BAD = {
    "tishby": ("activation", "swishy"),
    "iiw": ("momentum", 1.5),
    "ib_compare": ("test_fraction", 1.0),
    "ntk": ("datasets", ["digits-1"]),
    "csib_regression": ("sigma", "widest"),
    "compressed_images": ("compression", "jpeg"),
    "noisy_convnet": ("noise_std", 0.0),
    "lagrangian": ("nuisance", "rotation"),
    "lm_tiny": ("support", 9),  # more successors than the vocabulary (8) holds
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_every_experiment_validates_its_config_before_any_work(name):
    assert set(BAD) == set(available())
    mod = load_experiment(name)
    assert callable(getattr(mod.Config, "validate", None))
    resolve_config(name, profile="test")  # the test profile is valid
    key, value = BAD[name]
    with pytest.raises(ValueError, match=key):
        resolve_config(name, profile="test", overrides={key: value})


def test_torch_threads_and_check_seeds():
    import torch

    from ibscope.experiments import check_seeds, torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError  # restored on an error too
    assert torch.get_num_threads() == before
    with torch_threads(0):  # 0 leaves the count as is
        assert torch.get_num_threads() == before
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="torch_threads"), torch_threads(bad):
            pass
    assert check_seeds((3, 1)) == [3, 1]
    for bad in ([], [2, 2], [1.5], ["a"], [True]):
        with pytest.raises(ValueError, match="seeds"):
            check_seeds(bad)


@pytest.mark.parametrize("experiment, key", [
    ("csib_regression", "hidden"), ("ib_compare", "hidden"), ("noisy_convnet", "channels"),
    ("noisy_convnet", "ae_hidden"), ("compressed_images", "ae_channels"), ("tishby", "hidden")])
def test_layer_sizes_are_checked_by_one_rule(experiment, key):
    # a float is refused, not truncated; a string or a bool is refused, not compared (no TypeError)
    for bad in ([], [0], ["a"], [2.5], [True], 3):
        with pytest.raises(ValueError, match=f"'{key}' of {experiment} must be a non-empty list of ints >= 1"):
            resolve_config(experiment, overrides={key: bad})
    resolve_config(experiment, overrides={key: [4, 3]})
