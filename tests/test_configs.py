"""Every shipped config names an existing experiment and valid settings."""

from pathlib import Path

import pytest
import yaml

from ibscope.experiments import available
from ibscope.experiments.runner import resolve_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_resolves(path):
    spec = yaml.safe_load(path.read_text())
    assert spec["experiment"] in available()
    base = dict(spec.get("config") or {})
    grid = spec.get("grid") or {}
    # the base config and the first and last value of every axis are valid settings
    resolve_config(spec["experiment"], profile=spec.get("profile"), overrides=base)
    for key, values in grid.items():
        for v in (values[0], values[-1]):
            resolve_config(spec["experiment"], profile=spec.get("profile"), overrides={**base, key: v})
