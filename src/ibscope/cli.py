"""Command-line interface: ``ibscope run | sweep | report | reproduce | estimate`` (thin layer over the library)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser"]


def _parse_value(text: str, item: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise SystemExit(
            f"ibscope: --set {item!r}: the value is not a plain YAML value ({problem}). Values are read as "
            f"plain YAML (numbers, strings, lists, mappings; no tags such as !!python/...); quote the "
            f"value to pass it as a string, e.g. --set 'key=\"text\"'.") from None


def _parse_sets(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise SystemExit(f"ibscope: --set expects KEY=VALUE, got {item!r}.")
        out[k.strip()] = _parse_value(v, item)
    return out


RUN_CONFIG_KEYS = ("experiment", "config")  # the top-level keys of `ibscope run --config FILE`


def _load_config_file(path: str | None) -> tuple[str | None, dict[str, Any]]:
    """``experiment`` and ``config`` of a run config file; unknown top-level keys are refused.

    Read like a sweep file (:func:`ibscope._validation.read_config_file`: plain
    YAML, no anchors or aliases, size-capped, the same unknown-key check).
    """
    if path is None:
        return None, {}
    from ._validation import read_config_file

    try:
        data = read_config_file(path, RUN_CONFIG_KEYS, argument="--config")
    except (ValueError, FileNotFoundError) as e:
        hint = (" (grid, seeds and profile are keys of a sweep file: run it with `ibscope sweep FILE`, or "
                "give `ibscope run --seeds N --profile NAME`)") if "Unknown top-level" in str(e) else ""
        raise SystemExit(f"ibscope: {e}{hint}") from None
    config = data.get("config") or {}
    if not isinstance(config, dict):
        raise SystemExit(f"ibscope: 'config' in '{path}' must be a mapping of settings, got "
                         f"{type(config).__name__}.")
    return data.get("experiment"), dict(config)


def cmd_run(args: argparse.Namespace) -> int:
    from .experiments import runner

    file_exp, overrides = _load_config_file(args.config)
    experiment = args.experiment or file_exp
    if experiment is None:
        raise SystemExit("ibscope: name an experiment (e.g. `ibscope run tishby`) or give --config.")
    mod = runner.load_experiment(experiment, allow_module=args.allow_module)
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
    run_dir = runner.run(mod, seeds=seeds, out_dir=out, profile=args.profile, overrides=overrides,
                         progress=not args.no_progress, overwrite_config=args.overwrite_config,
                         batched=not args.no_batch)
    report = run_dir / "report.html"
    print(f"Results: {run_dir / 'results.parquet'}")
    print(f"Report:  {report.resolve()}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import load_spec, parse_grid_args, run_sweep

    spec = load_spec(args.config)
    if args.allow_module is not None and args.allow_module != spec.experiment:
        raise SystemExit(f"ibscope: --allow-module names {args.allow_module!r}, but '{args.config}' runs the "
                         f"experiment {spec.experiment!r}; the opt-in must name that exact module.")
    if args.seeds is not None and args.seeds < 1:
        raise SystemExit("ibscope: --seeds must be >= 1.")
    spec = spec.with_changes(seeds=args.seeds, grid=parse_grid_args(args.grid), config=_parse_sets(args.set))
    out = Path(args.out) if args.out else Path("runs") / f"sweep-{Path(args.config).stem}"
    result = run_sweep(spec, out, executor=args.executor, workers=args.workers, address=args.address,
                       num_cpus=args.cpus_per_task, retries=args.retries, force_config=args.force_config,
                       progress=not args.no_progress, report=not args.no_report, results=args.results,
                       allow_module=args.allow_module, batch_seeds=not args.no_batch)
    print(f"Sweep:   {result.directory} ({len(result.done)}/{result.tasks} tasks done, {result.ran} run now)")
    if result.results is not None:
        print(f"Results: {result.results}")
    if result.report is not None:
        print(f"Report:  {result.report}")
    if result.failed:
        print(f"ibscope: {len(result.failed)} task(s) failed (tracebacks in {result.directory}/tasks/<task>/error.json):",
              file=sys.stderr)
        for tid, err in result.failed.items():
            print(f"  {tid}: {err}", file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .experiments import allow_module
    from .reporting import build_report

    if args.allow_module is not None:
        allow_module(args.allow_module)
    path = build_report(args.run_dir)
    print(f"Report: {Path(path).resolve()}")
    return 0


def cmd_lm(args: argparse.Namespace) -> int:
    import numpy as np

    from .lm import RESULTS_FILE, analyze

    data = Path(args.data)
    if not data.is_file():
        raise SystemExit(f"ibscope: data file '{data}' not found (argument --data).")
    with np.load(data, allow_pickle=False) as f:
        if "input_ids" not in f.files:
            raise SystemExit(f"ibscope: '{data}' has no 'input_ids' array (it has {f.files}).")
        ids, mask = f["input_ids"], (f["attention_mask"] if "attention_mask" in f.files else None)
    layers = args.layers or None
    if layers and all(x.isdigit() for x in layers):
        layers = [int(x) for x in layers]          # hidden-state indices (0 = embeddings)
    df = analyze([str(c) for c in args.checkpoints], ids, mask, layers=layers, measures=args.measure or
                 ("prompt_entropy", "dataset_entropy", "effective_rank"), alpha=args.alpha,
                 normalization=args.normalization, batch_size=args.batch_size, max_bytes=args.max_bytes,
                 unit=args.unit, ci=args.ci, device=args.device, out_dir=args.out)
    print(df.groupby(["checkpoint", "measure", "unit"], sort=False)["value"].agg(["min", "max"]).to_string())
    print(f"Table: {(Path(args.out) / RESULTS_FILE).resolve()}")
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    import numpy as np

    from . import estimators, mutual_information

    def load(p: str):
        path = Path(p)
        if not path.is_file():
            raise SystemExit(f"ibscope: file '{path}' not found.")
        if path.suffix == ".npy":
            return np.load(path)
        return np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None)

    params = _parse_sets(args.set)
    reserved = sorted({"ci", "n_resamples", "subsample", "ci_seed", "unit", "method"} & set(params))
    if reserved:
        raise SystemExit(f"ibscope: --set {', '.join(reserved)}: use the options --ci LEVEL, --resamples N, "
                         f"--subsample F, --ci-seed S, --unit and --method instead.")
    ci = {}
    if args.ci is not None:
        ci = {"ci": args.ci, "n_resamples": args.resamples, "subsample": args.subsample, "ci_seed": args.ci_seed}
    elif (args.resamples, args.subsample, args.ci_seed) != (50, 0.5, 0):
        raise SystemExit("ibscope: --resamples, --subsample and --ci-seed need --ci LEVEL (e.g. --ci 0.95).")
    # the registered name means the same configuration as ibscope.mutual_information(method=NAME) and
    # estimators.get(NAME): print it, so the output says which one was used
    settings = estimators.get(args.method, unit=args.unit, **params).get_params()
    config = ", ".join(f"{k}={v!r}" for k, v in settings.items() if k != "unit")
    value = mutual_information(load(args.x), load(args.y), method=args.method, discrete_x=args.discrete_x,
                               discrete_y=args.discrete_y, unit=args.unit, **ci, **params)
    if args.ci is None:
        print(f"I(X;Y) = {value:.6g} {args.unit} ({args.method})")
    else:
        print(f"I(X;Y) = {value.value:.6g} {value.unit}, {value.level:.0%} CI [{value.low:.6g}, {value.high:.6g}] "
              f"({value.method}; {value.n_resamples} subsamples of {value.subsample_size} rows)")
    print(f"estimator {args.method}: {config}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import catalogue, reproduce, reproduce_all

    if args.list:
        for cid, claim in catalogue().items():
            print(f"{cid:40s} {claim.paper}: {claim.statement}")
            print(f"{'':4s}follows: {claim.follows}")
            if claim.paper_effect is not None:
                print(f"{'':4s}paper effect: {claim.paper_effect:g} (statistic {claim.statistic})")
            print(f"{'':4s}deviations:" + ("" if claim.deviations else " none known"))
            for d in claim.deviations:
                print(f"{'':6s}- {d}")
        return 0
    if args.seeds is not None and args.seeds < 1:
        raise SystemExit("ibscope: --seeds must be >= 1.")
    if args.all == bool(args.claim):
        raise SystemExit("ibscope: name one CLAIM (see `ibscope reproduce --list`) or give --all.")
    out = Path(args.out)
    kw = {"profile": args.profile, "seeds": args.seeds, "out": out, "workers": args.workers,
          "progress": not args.no_progress, "batch_seeds": not args.no_batch}
    results = reproduce_all(**kw) if args.all else [reproduce(args.claim, **kw)]
    for r in results:
        v = r.verdict
        ci = f"[{v.low:.3g}, {v.high:.3g}]" if v.low == v.low and v.high == v.high else "n/a"
        print(f"{r.claim}: {v.verdict} (statistic {v.estimate:.4g}, {v.level:.0%} interval {ci}, n={v.n})")
    print(f"Catalogue: {(out / 'index.html').resolve()}")
    n_claims = len(catalogue()) if args.all else 1
    return 0 if len(results) == n_claims else 1


_ALLOW_HELP = ("opt in to running your own experiment module (its exact dotted path, e.g. mypkg.my_exp; "
               "it must be the experiment named); without it only registered experiments run")


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
    r.add_argument("--no-batch", action="store_true",
                   help="train the seeds one after another instead of as one batched network (tishby, iiw, lagrangian)")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--allow-module", metavar="MODULE", help=_ALLOW_HELP)
    r.set_defaults(func=cmd_run)

    sw = sub.add_parser("sweep", help="run an experiment over a grid of settings and seeds (resumable)")
    sw.add_argument("config", help="YAML file: experiment, config, optional grid, seeds, profile")
    sw.add_argument("--seeds", type=int, help="number of seeds per grid point (seeds 0..N-1; adds to the sweep)")
    sw.add_argument("--grid", action="extend", nargs="+", metavar="KEY=V1,V2",
                    help="grid axes (one or more, repeatable; each replaces the file's axis of that name)")
    sw.add_argument("--set", action="append", metavar="KEY=VALUE", help="base setting (YAML value)")
    sw.add_argument("--executor", choices=("local", "ray"), default="local")
    sw.add_argument("--workers", type=int, help="local: processes (default: all cores; 0 = in this process); ray: CPUs of a local Ray")
    sw.add_argument("--address", help="Ray cluster address (e.g. auto or ray://head:10001); default: start a local Ray")
    sw.add_argument("--cpus-per-task", type=float, default=1.0, help="Ray resources per task (num_cpus)")
    sw.add_argument("--results", choices=("workers", "driver"), default="workers",
                    help="who writes task results: the workers (they must see --out, e.g. a shared "
                         "filesystem) or the driver (workers send their rows back)")
    sw.add_argument("--out", help="sweep directory (default runs/sweep-<config name>)")
    sw.add_argument("--retries", type=int, default=1, help="extra attempts for a failing task (default 1)")
    sw.add_argument("--force-config", action="store_true", help="accept a changed base config in an existing --out")
    sw.add_argument("--no-report", action="store_true")
    sw.add_argument("--no-progress", action="store_true")
    sw.add_argument("--allow-module", metavar="MODULE", help=_ALLOW_HELP)
    sw.add_argument("--no-batch", action="store_true",
                    help="one task per seed instead of the seeds of a grid point as one batched network (tishby, iiw, lagrangian)")
    sw.set_defaults(func=cmd_sweep)

    rp = sub.add_parser("report", help="rebuild figures and report.html of a directory: a sweep (sweep.json), an "
                        "experiment run (config.json) or any run recorded by InformationPlane / WeightInformation "
                        "(information_plane.parquet, weight_information.parquet)")
    rp.add_argument("run_dir", metavar="DIR")
    rp.add_argument("--allow-module", metavar="MODULE", help=_ALLOW_HELP)
    rp.set_defaults(func=cmd_report)

    rr = sub.add_parser("reproduce", help="reproduce claims of the literature with a verdict over seeds")
    rr.add_argument("claim", nargs="?", help="claim id (see --list)")
    rr.add_argument("--list", action="store_true", help="list the claims of the catalogue")
    rr.add_argument("--all", action="store_true", help="every claim of the catalogue")
    rr.add_argument("--profile", default="quick", help="claim profile: tiny, quick (default) or paper")
    rr.add_argument("--seeds", type=int, help="number of seeds (default: the profile's)")
    rr.add_argument("--out", default="runs/reproduce", help="reproduction directory (default runs/reproduce)")
    rr.add_argument("--workers", type=int, help="local processes (default: all cores; 0 = in this process)")
    rr.add_argument("--no-progress", action="store_true")
    rr.add_argument("--no-batch", action="store_true",
                    help="one task per seed instead of the seeds of a grid point as one batched network (tishby, iiw, lagrangian)")
    rr.set_defaults(func=cmd_reproduce)

    lm = sub.add_parser("lm", help="layer-wise prompt/dataset entropy and effective rank of language-model "
                        "checkpoints (Hugging Face directories with safetensors weights; resumable)")
    lm.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT_DIR")
    lm.add_argument("--data", required=True, help=".npz file with input_ids (and optionally attention_mask)")
    lm.add_argument("--out", required=True, help="output directory (lm_measures.parquet, .json, .png)")
    lm.add_argument("--layers", nargs="+", help="hidden-state indices (0 = embeddings) or module names / glob "
                    "patterns, e.g. 'h.*' (default: every hidden state)")
    lm.add_argument("--measure", action="append", help="prompt_entropy, dataset_entropy, effective_rank, "
                    "dataset_effective_rank (repeatable; default the first three)")
    lm.add_argument("--alpha", type=float, default=1.0, help="Renyi order (default 1)")
    lm.add_argument("--normalization", default="none", choices=("none", "logN", "logD", "max"))
    lm.add_argument("--unit", default="bits", choices=("bits", "nats"))
    lm.add_argument("--ci", type=float, metavar="LEVEL", help="bootstrap interval over prompts (e.g. 0.95)")
    lm.add_argument("--batch-size", type=int, default=16)
    lm.add_argument("--max-bytes", type=int, default=2 ** 30)
    lm.add_argument("--device", help="cpu, cuda or auto")
    lm.set_defaults(func=cmd_lm)

    e = sub.add_parser("estimate", help="estimate I(X;Y) from two .npy/.csv/.txt files")
    e.add_argument("x")
    e.add_argument("y")
    e.add_argument("--method", default="auto",
                   help="registered estimator name, as ibscope.estimators.available() lists them and "
                        "ibscope.mutual_information(method=...) takes them (same configuration; default: "
                        "auto; the information plane's default is pca_ksg)")
    e.add_argument("--discrete-x", action="store_true")
    e.add_argument("--discrete-y", action="store_true")
    e.add_argument("--unit", default="bits", choices=("bits", "nats"))
    e.add_argument("--ci", type=float, metavar="LEVEL",
                   help="also print a LEVEL confidence interval (e.g. 0.95) from subsampling without replacement")
    e.add_argument("--resamples", type=int, default=50, metavar="N", help="subsamples for --ci (default 50)")
    e.add_argument("--subsample", type=float, default=0.5, metavar="F",
                   help="fraction of the rows in each subsample for --ci (default 0.5)")
    e.add_argument("--ci-seed", type=int, default=0, metavar="S", help="seed that draws the subsamples (default 0)")
    e.add_argument("--set", action="append", metavar="KEY=VALUE", help="estimator parameter")
    e.set_defaults(func=cmd_estimate)
    return p


def _out_problem(out: str | None) -> str:
    """Why ``--out`` cannot be a directory ('' if it can): it, or a folder above it, is a file."""
    if not out:
        return ""
    p = Path(out)
    for q in (p, *p.parents):
        if q.exists():
            if q.is_dir():
                return ""
            if q == p:
                return f"'--out' '{out}' is a file, not a directory; give a directory (new or existing)."
            return f"'--out' '{out}' cannot be a directory: '{q}' above it is a file."
    return ""


def main(argv: list[str] | None = None) -> int:
    from .store import DirectoryLocked

    args = build_parser().parse_args(argv)
    problem = _out_problem(getattr(args, "out", None))
    if problem:
        print(f"ibscope: error: {problem}", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("ibscope: interrupted; everything finished so far is saved. Run the same command to resume.",
              file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, ImportError, DirectoryLocked) as e:
        print(f"ibscope: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
