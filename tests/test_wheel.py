"""The built wheel, installed in a clean virtual environment outside the checkout, works.

One slow test (``pytest -m slow tests/test_wheel.py``): it copies the project's sources
to a temporary folder (so the checkout gets no ``build/`` or ``*.egg-info``), builds the wheel
with ``pip wheel`` and checks the build prints no deprecation warning (the SPDX ``license``
string of pyproject.toml; a ``license = {text = ...}`` table or a license classifier would
warn), creates a fresh venv under ``tmp_path``, installs the wheel there with
``pip install -c constraints.txt`` (torch from the local CPU wheel that the pip configuration
provides, as ``make install`` does) and runs ``ibscope estimate`` and
``ibscope reproduce --list`` from a folder outside the checkout, without ``PYTHONPATH``, so
that only the installed package can answer. It catches a wheel that lacks a module or package
data (the claims YAML files), an entry point that does not resolve, or a dependency missing
from pyproject.toml.

It downloads the dependencies the local wheel folders do not hold from the package registry
(no other network); about two minutes on the shared 2-core machine.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# what a built checkout may hold that is not source: never copied into the build folder
_NOT_SOURCE = (".git", ".venv", "build", "dist", "runs", "site", "*.egg-info", "__pycache__",
               ".pytest_cache", ".ruff_cache", ".hypothesis", ".bench-env", ".whl")


def _clean_env() -> dict[str, str]:
    """The environment without anything that would import ibscope from the checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _run(cmd: list[str], cwd: Path, timeout: float = 600) -> str:
    """Run ``cmd``; its stdout and stderr together, or a failure that shows them."""
    p = subprocess.run(cmd, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout)
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"{' '.join(map(str, cmd))} exited {p.returncode}:\n{out[-4000:]}"
    return out


def _build_wheel(src: Path, dist: Path) -> tuple[Path, str]:
    """Build the wheel of the sources in ``src`` into ``dist``: (wheel path, build log).

    The build backend of the running interpreter is used when it meets pyproject.toml's
    build requirement (setuptools>=77), otherwise pip builds in an isolated environment
    (setuptools from the package registry).
    """
    cmd = [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(dist), str(src)]
    try:
        import setuptools

        if int(setuptools.__version__.split(".")[0]) >= 77:
            import wheel  # noqa: F401  (bdist_wheel for setuptools < 70.1)

            cmd.insert(4, "--no-build-isolation")
    except ImportError:
        pass
    log = _run(cmd, cwd=src.parent)
    wheels = sorted(dist.glob("ibscope-*.whl"))
    assert len(wheels) == 1, f"expected one ibscope wheel in {dist}, found {wheels}"
    return wheels[0], log


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    """Build the wheel, install it in a clean venv, run the CLI from outside the checkout."""
    steps, t0 = {}, time.perf_counter()  # printed (pytest -s), never asserted: the machine's load sets them
    src = tmp_path / "src-copy"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*_NOT_SOURCE))
    wheel, log = _build_wheel(src, tmp_path / "dist")
    deprecations = [line for line in log.splitlines() if "deprecat" in line.lower()]
    assert not deprecations, "the wheel build printed deprecation warnings:\n" + "\n".join(deprecations)
    steps["build"] = time.perf_counter() - t0

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    steps["venv"] = time.perf_counter() - t0 - sum(steps.values())
    bindir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    py = bindir / ("python.exe" if os.name == "nt" else "python")
    # --no-compile: no .pyc for torch's thousands of modules (a minute of the shared CPUs)
    _run([str(py), "-m", "pip", "install", "-q", "--no-compile", "--disable-pip-version-check",
          "-c", str(ROOT / "constraints.txt"), str(wheel)], cwd=tmp_path)
    steps["install"] = time.perf_counter() - t0 - sum(steps.values())

    work = tmp_path / "elsewhere"  # the current folder of the commands: outside the checkout
    work.mkdir()
    where = _run([str(py), "-c", "import ibscope; print(ibscope.__file__); print(ibscope.__version__)"],
                 cwd=work).splitlines()
    installed = Path(where[0]).resolve()
    assert installed.is_relative_to(env_dir.resolve()), f"ibscope imported from {installed}, not the venv"
    assert not installed.is_relative_to(ROOT), f"ibscope imported from the checkout: {installed}"
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), flags=re.M)
    assert version and where[1] == version.group(1), (where, version)

    # I(X;Y) of a bivariate Gaussian with correlation rho is -log2(1 - rho^2) / 2 bits (Cover &
    # Thomas, Elements of Information Theory, 2006, eq. 8.56): 0.737 bits for rho = 0.8
    rng = np.random.default_rng(0)
    rho, n = 0.8, 2000
    x = rng.standard_normal(n)
    y = rho * x + np.sqrt(1 - rho ** 2) * rng.standard_normal(n)
    np.save(work / "x.npy", x[:, None])
    np.save(work / "y.npy", y[:, None])
    ibscope = str(bindir / "ibscope")
    out = _run([ibscope, "estimate", "x.npy", "y.npy", "--method", "ksg"], cwd=work)
    m = re.search(r"I\(X;Y\) = (\S+) bits \(ksg\)", out)
    assert m, f"unexpected `ibscope estimate` output:\n{out}"
    truth = -0.5 * np.log2(1 - rho ** 2)
    assert abs(float(m.group(1)) - truth) < 0.1, (float(m.group(1)), truth)
    assert "estimator ksg:" in out

    listing = _run([ibscope, "reproduce", "--list"], cwd=work)
    ids = re.findall(r"^(\S+)\s+.+$", listing, flags=re.M)
    claims = sorted(p.stem for p in (ROOT / "src" / "ibscope" / "reproduce" / "claims").glob("*.yaml"))
    assert claims and set(claims) <= set(ids), f"claims missing from `reproduce --list`: {listing[:2000]}"
    assert listing.count("follows:") == len(claims)
    steps["commands"] = time.perf_counter() - t0 - sum(steps.values())
    print("test_wheel seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in steps.items()))
