"""Run claims: their sweeps, their statistic, the verdict and the catalogue report.

Layout of a reproduction directory::

    <out>/runs/<experiment>-<hash>/   one sweep per distinct run (shared by claims that run the same thing;
                                      resumable, grows when more seeds are asked for)
    <out>/claims/<id>/verdict.json    the verdict, the statistic, its interval, the rule, the runs
    <out>/claims/<id>/replicates.csv  the statistic's per-replicate values
    <out>/claims/<id>/replicates.png  those values with the interval and the threshold
    <out>/index.html                  the catalogue: every claim evaluated in <out>, its verdict, links

A claim evaluated again reuses every finished task of its runs, so adding
seeds (``--seeds``) only runs the new ones.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import _html
from ..store import (
    DamagedFile,
    atomic_write_json,
    atomic_write_text,
    config_hash,
    read_json,
    require_keys,
)
from ._claims import Claim, catalogue, get_claim
from ._statistics import compute_statistic
from ._verdict import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    UNDERPOWERED,
    Verdict,
    decide,
    minimum_detectable_effect,
)

__all__ = ["reproduce", "reproduce_all", "ClaimResult", "build_catalogue_report", "run_spec"]

log = logging.getLogger(__name__)

_COLORS = {REPRODUCED: "#1a7f37", NOT_REPRODUCED: "#cf222e", INCONCLUSIVE: "#9a6700", UNDERPOWERED: "#8250df"}


def claim_power(claim: Claim, estimate: float, low: float, high: float, n: int) -> dict:
    """The claim's power from its measured interval: the minimum detectable effect (80% power, two-sided t at
    the rule's level) at the measured seed count and projected to the paper profile's, and the paper's effect.

    The effect is a distance from the rule's threshold in the statistic's unit
    (:func:`ibscope.reproduce.minimum_detectable_effect`).
    """
    level = claim.rule.level
    mde = minimum_detectable_effect(low, high, n, level)
    paper_seeds = claim.seeds("paper") if "paper" in claim.profiles else None
    mde_paper = (minimum_detectable_effect(low, high, n, level, seeds=paper_seeds)
                 if paper_seeds is not None else float("nan"))
    effect = claim.paper_effect
    return {"power": 0.8, "level": level, "n": int(n), "mde": mde, "paper_seeds": paper_seeds,
            "mde_at_paper_seeds": mde_paper, "paper_effect": effect,
            "paper_effect_distance": None if effect is None else abs(effect - claim.rule.threshold),
            "detectable": None if effect is None or not np.isfinite(mde)
            else bool(abs(effect - claim.rule.threshold) >= mde)}


@dataclass
class ClaimResult:
    claim: str
    profile: str
    verdict: Verdict
    directory: Path
    runs: dict[str, str]  # run name -> sweep directory (relative to the reproduction directory)


def run_spec(claim: Claim, run: str, profile: str, seeds: int):
    """The SweepSpec of one of ``claim``'s runs at ``profile`` with ``seeds`` seeds."""
    from ..sweep import SweepSpec

    r = claim.runs[run]
    prof = claim.profile(profile)
    config = {**r.config, **dict(prof.get("config") or {}), **dict((r.profiles.get(profile) or {}).get("config") or {})}
    return SweepSpec(r.experiment, config, dict(r.grid), list(range(seeds)), r.profile)


def _run_key(spec) -> str:
    return f"{spec.experiment}-" + config_hash({"experiment": spec.experiment, "config": spec.config,
                                               "grid": spec.grid, "profile": spec.profile})


def reproduce(claim: str | Claim, *, profile: str = "quick", seeds: int | None = None,
              out: str | Path = "runs/reproduce", workers: int | None = None, progress: bool = True,
              catalogue_report: bool = True, batch_seeds: bool = True) -> ClaimResult:
    """Run ``claim``'s experiments at ``profile``, compute its statistic and decide.

    Parameters
    ----------
    claim : str or Claim
        A claim id (``ibscope reproduce --list``) or a loaded claim.
    profile : str
        One of the claim's profiles (``quick``, ``paper``, ...).
    seeds : int, optional
        Number of seeds (0..seeds-1); default: the profile's.
    out : path-like
        The reproduction directory (see the module docstring).
    workers : int, optional
        Processes of the local sweep executor (default: all cores; 0: in this process).
    batch_seeds : bool, default True
        Train the seeds of a grid point together where the experiment can
        (:func:`ibscope.sweep.run_sweep`'s ``batch_seeds``; same results).

    Returns
    -------
    ClaimResult
    """
    from ..experiments.runner import resolve_config
    from ..sweep import SweepStore, grid_points, run_sweep

    c = get_claim(claim) if isinstance(claim, str) else claim
    n_seeds = c.seeds(profile) if seeds is None else seeds
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 1:
        raise ValueError(f"'seeds' must be an int >= 1, got {seeds!r}.")
    out = Path(out)
    tables, where = {}, {}
    specs = {name: run_spec(c, name, profile, n_seeds) for name in c.runs}
    for spec in specs.values():  # every grid point of every run is validated before any runs
        for point in grid_points(spec.grid):
            resolve_config(spec.experiment, profile=spec.profile, overrides={**spec.config, **point})
    for name, spec in specs.items():
        key = _run_key(spec)
        res = run_sweep(spec, out / "runs" / key, workers=workers, progress=progress, report=True,
                        batch_seeds=batch_seeds)
        if res.failed:
            raise RuntimeError(f"Claim {c.id!r}: run {name!r} has {len(res.failed)} failed task(s) in "
                               f"{res.directory} (see tasks/<task>/error.json): {next(iter(res.failed.values()))}")
        tables[name] = SweepStore(res.directory).results()
        where[name] = f"runs/{key}"
    stat = compute_statistic(c.statistic, tables, c.statistic_params, c.rule.level)
    power = claim_power(c, stat.estimate, stat.low, stat.high, stat.n)
    verdict = decide(stat.estimate, stat.low, stat.high, c.rule, n=stat.n, interval=stat.interval,
                     unit=stat.unit, details={**stat.details, "power": power}, paper_effect=c.paper_effect,
                     mde=power["mde"])
    d = out / "claims" / c.id
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "replicates.csv", stat.per_replicate.to_csv(index=False))
    _plot_replicates(stat, c, verdict, d / "replicates.png")
    record = {"claim": c.id, "paper": c.paper, "reference": c.reference, "statement": c.statement,
              "paper_result": c.paper_result, "follows": c.follows, "deviations": list(c.deviations),
              "paper_effect": c.paper_effect, "power": power, "profile": profile, "seeds": n_seeds,
              "statistic": {"name": c.statistic, "params": c.statistic_params, "unit": stat.unit},
              "rule": asdict(c.rule), "verdict": verdict.as_dict(), "runs": where, "notes": c.notes,
              "finished": datetime.datetime.now().isoformat(timespec="seconds")}
    atomic_write_json(d / "verdict.json", record)
    if catalogue_report:
        build_catalogue_report(out)
    return ClaimResult(c.id, profile, verdict, d, where)


def reproduce_all(*, profile: str = "quick", seeds: int | None = None, out: str | Path = "runs/reproduce",
                  workers: int | None = None, progress: bool = True,
                  claims: Iterable[str] | None = None, batch_seeds: bool = True) -> list[ClaimResult]:
    """Every claim of the catalogue (or those named) at ``profile``; one catalogue report at the end.

    A claim whose runs fail is reported (logged, and listed as failed in the
    catalogue) without stopping the others.
    """
    out = Path(out)
    results = []
    ids = list(claims) if claims is not None else list(catalogue())
    for cid in ids:
        try:
            results.append(reproduce(cid, profile=profile, seeds=seeds, out=out, workers=workers,
                                     progress=progress, catalogue_report=False, batch_seeds=batch_seeds))
        except (RuntimeError, ValueError) as e:
            log.error("Claim %s failed: %s", cid, e)
            d = out / "claims" / cid
            d.mkdir(parents=True, exist_ok=True)
            atomic_write_json(d / "error.json", {"claim": cid, "profile": profile, "error": str(e)})
    build_catalogue_report(out)
    return results


def _plot_replicates(stat, claim: Claim, verdict: Verdict, path: Path) -> Path:
    from ..plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 2.6))
    vals = stat.per_replicate["value"].to_numpy(dtype=float) if "value" in stat.per_replicate else np.array([])
    if "arm" in stat.per_replicate:
        for i, (arm, g) in enumerate(stat.per_replicate.groupby("arm")):
            ax.plot(g["value"], np.full(len(g), 0.15 * (i + 1)), "o", ms=4, alpha=0.6, label=f"arm {arm}")
        ax.legend(fontsize=7)
    else:
        ax.plot(vals, np.zeros_like(vals), "o", ms=4, alpha=0.6, color="0.3", label="replicates")
    color = _COLORS[verdict.verdict]
    if np.isfinite([verdict.low, verdict.high]).all():
        ax.errorbar([verdict.estimate], [-0.2], xerr=[[verdict.estimate - verdict.low], [verdict.high - verdict.estimate]],
                    fmt="s", color=color, capsize=4, label=f"{verdict.level:.0%} interval")
    ax.axvline(claim.rule.threshold, color="k", ls="--", lw=1, label=f"threshold {claim.rule.threshold:g}")
    ax.set_yticks([])
    ax.set_ylim(-0.6, 0.6)
    ax.set_xlabel(f"{claim.statistic} [{stat.unit}]")
    ax.set_title(f"{claim.id}: {verdict.verdict}", fontsize=9, color=color)
    ax.legend(fontsize=7, loc="upper right")
    return save_figure(fig, path, dpi=100)


def _deviations_cell(claim: Claim) -> _html.Markup:
    """The claim's deviations as escaped HTML: 'none known', or a count that opens to the list."""
    if not claim.deviations:
        return _html.Markup("none known")
    items = "".join(f"<li>{_html.escape(d)}</li>" for d in claim.deviations)
    return _html.Markup(f"<details><summary>{len(claim.deviations)}</summary><ul>{items}</ul></details>")


def _power_text(power: dict | None, unit: str, long: bool = False) -> str:
    """A verdict record's power as text (plain; the caller escapes it)."""
    if not power or power.get("mde") is None or not np.isfinite(power["mde"]):
        return "n/a (fewer than 2 replicates)" if long else "n/a"
    text = f"MDE {power['mde']:.3g} {unit} at n={power['n']}"
    if not long:
        return text
    mp = power.get("mde_at_paper_seeds")
    if mp is not None and np.isfinite(mp) and power.get("paper_seeds") != power["n"]:
        text += f"; {mp:.3g} {unit} projected to the paper profile's {power['paper_seeds']} seeds"
    if power.get("paper_effect") is None:
        text += "; the paper states no effect size"
    else:
        text += (f"; the paper's effect {power['paper_effect']:g} {unit} lies {power['paper_effect_distance']:.3g} "
                 f"{unit} from the threshold: " + ("detectable" if power.get("detectable") else "not detectable"))
    return (f"smallest distance from the threshold detected with 80% power at the rule's level "
            f"(two-sided t, from the seeds' spread): {text}")


_VERDICT_HINT = "Delete it and run the claim again (its finished runs are reused)."
_VERDICT_KEYS = {"verdict": dict, "statistic": dict, "profile": str, "seeds": int, "runs": dict}
_VERDICT_VALUE_KEYS = {"verdict": str, "estimate": float, "low": float, "high": float, "level": float,
                       "n": int, "interval": str, "reason": str}


def _read_verdict(path: Path, out: Path) -> dict:
    """A claim's ``verdict.json`` read as untrusted data: every key the catalogue shows, with its type.

    Run paths must stay inside ``out`` (relative, no ``..``): they become links and are listed for figures.
    """
    rec = read_json(path, what="the claim's verdict", hint=_VERDICT_HINT, required=_VERDICT_KEYS)
    require_keys(rec["verdict"], _VERDICT_VALUE_KEYS, path=path, what="the claim's verdict", hint=_VERDICT_HINT,
                 where="verdict")
    require_keys(rec["statistic"], {"unit": str}, path=path, what="the claim's verdict", hint=_VERDICT_HINT,
                 where="statistic")
    power = rec.get("power")
    if power is not None:
        require_keys(power, {}, path=path, what="the claim's verdict", hint=_VERDICT_HINT, where="power")
        for k in ("mde", "n", "mde_at_paper_seeds", "paper_seeds", "paper_effect", "paper_effect_distance"):
            if power.get(k) is not None and (isinstance(power[k], bool) or not isinstance(power[k], (int, float))):
                raise DamagedFile(f"The claim's verdict '{path}' is damaged: its key 'power.{k}' is not a number. "
                                  f"{_VERDICT_HINT}")
    for name, where in rec["runs"].items():
        parts = Path(where).parts if isinstance(where, str) else ()
        if not parts or Path(where).is_absolute() or ".." in parts or where != where.strip():
            raise DamagedFile(f"The claim's verdict '{path}' is damaged: run {name!r} points to {where!r}, not to a "
                              f"directory inside '{out}'. {_VERDICT_HINT}")
    return rec


_CATALOGUE_INTRO = (
    "Each claim is decided by a statistic and a rule fixed before the run; the interval is over "
    "seeds (or runs) as stated. <i>not reproduced</i> and <i>inconclusive</i> are results like "
    "<i>reproduced</i>. <i>underpowered</i>: inconclusive, and the paper's stated effect lies closer to "
    "the threshold than the smallest effect the test detects with 80% power at its seed count. "
    "<b>deviations</b>: every known difference from the paper's setting the claim follows; "
    "<b>power</b>: that minimum detectable effect (distance from the threshold) at the measured seed "
    "count, from the seeds' spread.")
_CATALOGUE_HEADER = ("claim", "paper", "verdict", "statistic", "interval", "n", "profile", "deviations", "power")


def _claim_section(cid: str, claim: Claim, rec: dict, out: Path, devs: _html.Markup) -> str:
    """The section of one evaluated claim: every value of its verdict record escaped, links inside ``out``."""
    esc = _html.escape
    v = rec["verdict"]
    unit = rec["statistic"]["unit"]
    color = _COLORS.get(v["verdict"], "#000")
    ci = f"[{v['low']:.3g}, {v['high']:.3g}]" if np.isfinite([v["low"], v["high"]]).all() else "n/a"
    links = " ".join(_html.link(f"{p}/report.html", n, what=f"report of run {n!r}") for n, p in rec["runs"].items())
    run_figs = "".join(_html.linked_figure(f"{p}/{f.name}", n, f"{n}: {f.stem}")
                       for n, p in rec["runs"].items() for f in sorted((out / p).glob("*.png"))[:3])
    # embedded only from a regular PNG file, never a planted link: its target would be embedded in the page
    fig = _html.embedded_image(out / "claims" / cid / "replicates.png", "replicates")
    parts = [
        f"<h2 id='{esc(cid)}'>{esc(cid)}: <span style='color:{color}'>{esc(v['verdict'])}</span></h2>"
        f"<p><b>{esc(claim.paper)}</b> {esc(claim.reference)}</p>",
        f"<p>{esc(claim.statement)}</p>",
        _html.definition("Paper", claim.paper_result or "n/a"),
        _html.definition("Follows", claim.follows),
        _html.definition("Deviations", devs),
        _html.definition("Power", _power_text(rec.get("power"), unit, long=True)),
        f"<p><b>Statistic:</b> {esc(claim.statistic)} {esc(json.dumps(claim.statistic_params))}; "
        f"<b>rule:</b> {esc(claim.rule.describe(unit))}.</p>",
        f"<p><b>Measured</b> ({esc(rec['profile'])} profile, {esc(rec['seeds'])} seeds): "
        f"{v['estimate']:.4g} {esc(unit)}, {v['level']:.0%} interval {ci} "
        f"({esc(v['interval'])}); {esc(v['reason'])}.</p>",
        f"<p>Run reports: {links}; per-replicate values: <code>claims/{esc(cid)}/replicates.csv</code>.</p>{fig}",
        run_figs,
    ]
    if claim.notes:
        parts.append(f"<p><i>{esc(claim.notes)}</i></p>")
    return "".join(parts)


def build_catalogue_report(out: str | Path) -> Path:
    """``<out>/index.html``: every claim evaluated in ``out`` with its verdict, interval and links.

    Rendered with :mod:`ibscope._html`: every value of a ``verdict.json`` or
    an error record is escaped, run links must stay inside ``out``, and the
    replicates figure is embedded only from a regular PNG file.
    """
    out = Path(out)
    rows, sections = [], []
    for cid, claim in catalogue().items():
        devs = _deviations_cell(claim)
        d = out / "claims" / cid
        vpath, epath = d / "verdict.json", d / "error.json"
        if vpath.is_file():
            rec = _read_verdict(vpath, out)
            v = rec["verdict"]
            unit = rec["statistic"]["unit"]
            ci = f"[{v['low']:.3g}, {v['high']:.3g}]" if np.isfinite([v["low"], v["high"]]).all() else "n/a"
            verdict = _html.Markup(f"<b>{_html.escape(v['verdict'])}</b>")
            rows.append([_html.Markup(f"<a href='#{_html.escape(cid)}'>{_html.escape(cid)}</a>"), claim.paper,
                         _html.Cell(verdict, color=_COLORS.get(v["verdict"], "#000")),
                         f"{v['estimate']:.3g} {unit}", ci, v["n"], rec["profile"], devs,
                         _power_text(rec.get("power"), unit)])
            sections.append(_claim_section(cid, claim, rec, out, devs))
        elif epath.is_file():
            err = read_json(epath, what="the claim's error record", required={"error": str},
                            hint="Delete it and run the claim again.")
            rows.append([cid, claim.paper, "failed", _html.Cell(err.get("error", "")[:300], colspan=4), devs, ""])
        else:
            rows.append([cid, claim.paper, "not run", "", "", "", "", devs, ""])
    body = [_html.Markup(f"<p>{_CATALOGUE_INTRO}</p>"), _html.table(rows, _CATALOGUE_HEADER), *sections]
    page = _html.page("ibscope: reproductions", body, heading="ibscope: claims of the literature, reproduced",
                      style=_html.CATALOGUE_STYLE)
    out.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out / "index.html", page)
