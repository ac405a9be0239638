"""Claims as data: one YAML file per claim of a paper, read as plain YAML (no aliases).

A claim file (``src/ibscope/reproduce/claims/<id>.yaml``) holds::

    id: tishby-tanh-compression            # unique, also the file name
    paper: Shwartz-Ziv & Tishby (2017)
    reference: arXiv:1703.00810
    statement: the claim, in one or two sentences
    paper_result: what the paper shows (figure, number), for the report
    follows: the paper's setting this claim follows (figure, code, section)
    deviations:                             # every known difference from that setting (a list; [] if none known)
      - batch 512 (paper 256)
    paper_effect: 0.5                       # optional: the paper's value of the statistic, where it states one
    runs:                                   # the experiments that test it
      tanh:                                 # a run name (used by the statistic)
        experiment: tishby                  # a registered experiment (nothing else is imported)
        config: {activation: tanh, ...}     # base settings
        grid: {weight_decay: [0, 1e-3]}     # optional sweep axes
    profiles:                               # settings per profile, applied to every run
      quick: {seeds: 5, config: {epochs: 1500}}
      paper: {seeds: 50, config: {}}
    statistic:                              # a statistic of ibscope.reproduce._statistics, by name
      name: late_compression
      params: {run: tanh, estimator: binning, layer: last_hidden}
    rule: {direction: greater, threshold: 0.1, level: 0.95}

``paper_effect`` feeds the power check: an inconclusive verdict whose test
could not detect the paper's effect at its seed count is ``underpowered``
(:func:`ibscope.reproduce.minimum_detectable_effect`).

Everything in a claim is data; its statistic and experiments are looked up by
name in ibscope's own registries, never imported from the file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .._validation import load_yaml
from ._statistics import STATISTICS
from ._verdict import Rule

__all__ = ["Claim", "RunSpec", "load_claim", "catalogue", "get_claim"]

_KEYS = {"id", "paper", "reference", "statement", "paper_result", "runs", "profiles", "statistic", "rule", "notes",
         "follows", "deviations", "paper_effect"}
_REQUIRED = ("id", "paper", "statement", "runs", "profiles", "statistic", "rule", "follows", "deviations")


@dataclass(frozen=True)
class RunSpec:
    """One experiment (optionally a grid) that a claim runs."""

    name: str
    experiment: str
    config: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    profile: str | None = None
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    """A claim of a paper, the runs that test it, its statistic and its decision rule."""

    id: str
    paper: str
    statement: str
    runs: dict[str, RunSpec]
    profiles: dict[str, dict[str, Any]]
    statistic: str
    statistic_params: dict[str, Any]
    rule: Rule
    reference: str = ""
    paper_result: str = ""
    notes: str = ""
    follows: str = ""
    deviations: tuple[str, ...] = ()
    paper_effect: float | None = None

    def seeds(self, profile: str) -> int:
        return int(self.profile(profile).get("seeds", 5))

    def profile(self, profile: str) -> dict[str, Any]:
        if profile not in self.profiles:
            raise ValueError(f"Claim {self.id!r} has no profile {profile!r}; it has {sorted(self.profiles)}.")
        return dict(self.profiles[profile] or {})


def _mapping(v: Any, what: str, where: str) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise ValueError(f"{where}: '{what}' must be a mapping, got {type(v).__name__}.")
    return dict(v)


def load_claim(path: str | Path) -> Claim:
    """Read and check one claim file (every key, the runs' experiments, the statistic's name)."""
    from ..experiments import available as experiments

    p = Path(path)
    data = load_yaml(p.read_bytes(), f"Claim file '{p}'")  # plain YAML: no aliases, size-capped
    if not isinstance(data, Mapping):
        raise ValueError(f"Claim file '{p}' must hold a mapping.")
    unknown = sorted(set(data) - _KEYS)
    missing = [k for k in _REQUIRED if k not in data]
    if unknown or missing:
        raise ValueError(f"Claim file '{p}': unknown keys {unknown}, missing keys {missing}.")
    if data["id"] != p.stem:
        raise ValueError(f"Claim file '{p}': its id {data['id']!r} must equal its file name {p.stem!r}.")
    runs = {}
    for name, r in _mapping(data["runs"], "runs", str(p)).items():
        r = _mapping(r, f"runs.{name}", str(p))
        extra = sorted(set(r) - {"experiment", "config", "grid", "profile", "profiles"})
        if extra or "experiment" not in r:
            raise ValueError(f"Claim file '{p}': run {name!r} needs 'experiment' and may hold config, grid, "
                             f"profile, profiles (unknown: {extra}).")
        if r["experiment"] not in experiments():
            raise ValueError(f"Claim file '{p}': run {name!r} names experiment {r['experiment']!r}, which is not "
                             f"registered ({', '.join(experiments())}).")
        runs[str(name)] = RunSpec(str(name), r["experiment"], _mapping(r.get("config"), "config", str(p)),
                                  _mapping(r.get("grid"), "grid", str(p)), r.get("profile"),
                                  _mapping(r.get("profiles"), "profiles", str(p)))
    if not runs:
        raise ValueError(f"Claim file '{p}' names no run.")
    stat = _mapping(data["statistic"], "statistic", str(p))
    if stat.get("name") not in STATISTICS:
        raise ValueError(f"Claim file '{p}': unknown statistic {stat.get('name')!r} "
                         f"(known: {', '.join(sorted(STATISTICS))}).")
    follows = data["follows"]
    if not isinstance(follows, str) or not follows.strip():
        raise ValueError(f"Claim file '{p}': 'follows' must name the paper's setting the claim follows (a "
                         f"non-empty string), got {follows!r}.")
    devs = data["deviations"]
    if devs is None:
        devs = []
    if not isinstance(devs, list) or not all(isinstance(d, str) and d.strip() for d in devs):
        raise ValueError(f"Claim file '{p}': 'deviations' must be a list of non-empty strings (an empty list "
                         f"where none is known), got {devs!r}.")
    effect = data.get("paper_effect")
    if effect is not None and (isinstance(effect, bool) or not isinstance(effect, (int, float))
                               or not math.isfinite(effect)):
        raise ValueError(f"Claim file '{p}': 'paper_effect' must be a finite number (the paper's value of the "
                         f"statistic) or absent, got {effect!r}.")
    profiles = _mapping(data["profiles"], "profiles", str(p))
    for prof, values in profiles.items():
        bad = sorted(set(_mapping(values, f"profiles.{prof}", str(p))) - {"seeds", "config"})
        if bad:
            raise ValueError(f"Claim file '{p}': profile {prof!r} may hold 'seeds' and 'config' only (got {bad}).")
    return Claim(id=str(data["id"]), paper=str(data["paper"]), statement=" ".join(str(data["statement"]).split()),
                 runs=runs, profiles=profiles, statistic=stat["name"],
                 statistic_params=_mapping(stat.get("params"), "statistic.params", str(p)),
                 rule=Rule.from_dict(_mapping(data["rule"], "rule", str(p))),
                 reference=str(data.get("reference", "")),
                 paper_result=" ".join(str(data.get("paper_result", "")).split()),
                 notes=" ".join(str(data.get("notes", "")).split()),
                 follows=" ".join(follows.split()), deviations=tuple(" ".join(d.split()) for d in devs),
                 paper_effect=None if effect is None else float(effect))


def _claim_files() -> list[Path]:
    root = resources.files("ibscope.reproduce") / "claims"
    return sorted(Path(str(root)).glob("*.yaml"))


def catalogue() -> dict[str, Claim]:
    """Every shipped claim, by id (in file-name order)."""
    return {c.id: c for c in (load_claim(f) for f in _claim_files())}


def get_claim(claim_id: str) -> Claim:
    claims = catalogue()
    if claim_id not in claims:
        raise ValueError(f"Unknown claim {claim_id!r}. Known claims: {', '.join(claims)} "
                         "(`ibscope reproduce --list`).")
    return claims[claim_id]
