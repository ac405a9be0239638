"""Command-line interface: ``ibscope run | report | estimate`` (thin layer over the library)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser"]


def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def _parse_sets(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"ibscope: --set expects KEY=VALUE, got {item!r}.")
        k, v = item.split("=", 1)
        out[k.strip()] = _parse_value(v)
    return out


def _load_config_file(path: str | None) -> tuple[str | None, dict[str, Any]]:
    if path is None:
        return None, {}
    import yaml

    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"ibscope: config file '{p}' not found (argument --config).")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise SystemExit(f"ibscope: config file '{p}' must hold a mapping.")
    return data.get("experiment"), dict(data.get("config", {}))


def cmd_run(args: argparse.Namespace) -> int:
    from .experiments import get as get_experiment
    from .experiments import runner

    file_exp, overrides = _load_config_file(args.config)
    experiment = args.experiment or file_exp
    if experiment is None:
        raise SystemExit("ibscope: name an experiment (e.g. `ibscope run tishby`) or give --config.")
    mod = get_experiment(experiment)
    flag_map = {"epochs": args.epochs, "data": args.data, "train_fraction": args.train_fraction,
                "n_snapshots": args.snapshots, "activation": args.activation, "device": args.device}
    if args.estimator:
        flag_map["estimators"] = {name: {} for name in args.estimator}
    fields = set(mod.Config.__dataclass_fields__)
    for key, value in flag_map.items():
        if value is None:
            continue
        if key not in fields:
            raise SystemExit(f"ibscope: experiment '{experiment}' has no setting '{key}'.")
        overrides[key] = value
    overrides.update(_parse_sets(args.set))
    if args.seeds is not None and args.seeds < 1:
        raise SystemExit("ibscope: --seeds must be >= 1.")
    n_seeds = args.seeds or (getattr(mod, "DEMO_SEEDS", 1) if args.profile == "demo" else 1)
    seeds = range(args.first_seed, args.first_seed + n_seeds)
    out = Path(args.out) if args.out else Path("runs") / (experiment + (f"-{args.profile}" if args.profile else ""))
    run_dir = runner.run(experiment, seeds=seeds, out_dir=out, profile=args.profile, overrides=overrides,
                         progress=not args.no_progress, overwrite_config=args.overwrite_config)
    report = run_dir / "report.html"
    print(f"Results: {run_dir / 'results.parquet'}")
    print(f"Report:  {report.resolve()}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    path = build_report(args.run_dir)
    print(f"Report: {Path(path).resolve()}")
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    import numpy as np

    from . import mutual_information

    def load(p: str):
        path = Path(p)
        if not path.is_file():
            raise SystemExit(f"ibscope: file '{path}' not found.")
        if path.suffix == ".npy":
            return np.load(path)
        return np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None)

    value = mutual_information(load(args.x), load(args.y), method=args.method, discrete_x=args.discrete_x,
                               discrete_y=args.discrete_y, unit=args.unit, **_parse_sets(args.set))
    print(f"I(X;Y) = {value:.6g} {args.unit} ({args.method})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="ibscope", description="Information-theoretic analysis of deep networks.")
    p.add_argument("--version", action="version", version=f"ibscope {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run an experiment (e.g. tishby) for one or more seeds")
    r.add_argument("experiment", nargs="?", help="experiment name (tishby, ...); or give --config")
    r.add_argument("--config", help="YAML file with 'experiment:' and 'config:' keys")
    r.add_argument("--profile", help="named settings profile of the experiment (e.g. demo)")
    r.add_argument("--epochs", type=int)
    r.add_argument("--seeds", type=int, help="number of seeds (seeds first-seed .. first-seed+K-1)")
    r.add_argument("--first-seed", type=int, default=0)
    r.add_argument("--estimator", action="append", help="plane estimator (repeatable): binning, adaptive_binning, kde_upper, kde_lower, adaptive_kde")
    r.add_argument("--data", help="path to the original var_u.mat (default: built-in generator)")
    r.add_argument("--train-fraction", type=float)
    r.add_argument("--snapshots", type=int, help="number of log-spaced snapshot epochs")
    r.add_argument("--activation")
    r.add_argument("--device", help="cpu, cuda or auto")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other config setting (YAML value)")
    r.add_argument("--out", help="run directory (default runs/<experiment>[-<profile>])")
    r.add_argument("--overwrite-config", action="store_true", help="reuse --out even if it holds another config")
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=cmd_run)

    rp = sub.add_parser("report", help="rebuild figures and report.html from a run directory")
    rp.add_argument("run_dir")
    rp.set_defaults(func=cmd_report)

    e = sub.add_parser("estimate", help="estimate I(X;Y) from two .npy/.csv/.txt files")
    e.add_argument("x")
    e.add_argument("y")
    e.add_argument("--method", default="ksg")
    e.add_argument("--discrete-x", action="store_true")
    e.add_argument("--discrete-y", action="store_true")
    e.add_argument("--unit", default="bits", choices=("bits", "nats"))
    e.add_argument("--set", action="append", metavar="KEY=VALUE", help="estimator parameter")
    e.set_defaults(func=cmd_estimate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("ibscope: interrupted; everything finished so far is saved. Run the same command to resume.",
              file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"ibscope: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
