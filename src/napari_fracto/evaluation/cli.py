"""`napari-fracto eval`: score one or several configurations on a dataset split, into one table.

Registered through `napari_fracto.cli.EXTRA_COMMANDS`; importing this module costs argparse only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _shots(text: str) -> list[int]:
    from napari_fracto.evaluation.compare import ComparisonError, parse_shots

    try:
        return parse_shots(text)
    except ComparisonError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("Shots must be", "--shots takes", 1)) from None


def _pair(text: str) -> tuple[str, str]:
    names = tuple(n.strip() for n in text.split(",", 1))
    if len(names) != 2 or not all(names):
        raise argparse.ArgumentTypeError(f"--combine takes two configuration names, A,B (got {text!r})")
    return names  # type: ignore[return-value]


def add_parser(subparsers) -> None:
    """Add the `eval` sub-command (its handler imports the heavy parts when it runs)."""
    from napari_fracto.cli import add_backend_arguments, add_example_feature_arguments, add_request_arguments

    p = subparsers.add_parser(
        "eval",
        help="compare models, adapters, k-shot prompts and context on a dataset split",
        description=(
            "Run configurations over the reviewed images of a dataset split and score them against the "
            "corrections. Predictions are cached in OUT/cache, so re-running only asks what is new."
        ),
    )
    p.add_argument("--dataset", required=True, type=Path, help="the corrections dataset folder")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="default: test")
    p.add_argument("--task", help="needed only when the split holds several tasks")
    p.add_argument("--shots", type=_shots, default=[0], help="in-context examples, e.g. 0,1,3,5 (default 0)")
    p.add_argument(
        "--select", choices=["similar", "random"], default="similar", help="how examples are picked"
    )
    add_example_feature_arguments(p)
    p.add_argument("--no-context", action="store_true", help="leave the sample context out of the prompt")
    add_request_arguments(p, overrides=True)
    p.add_argument("--seed", type=int, default=0, help="seed of random example picks and the bootstrap")
    p.add_argument(
        "--resamples", type=int, help="bootstrap resamples, 0 to 10000 (default 1000; ptychobench: 10000)"
    )
    p.add_argument(
        "--scoring",
        choices=["default", "ptychobench"],
        help="scoring rules: default, or PtychoBench's own (empty answer = nothing, labels outside the "
        "vocabulary dropped, their bootstrap: seed 42, 10000 resamples); see docs/evaluation.md",
    )
    p.add_argument(
        "--export-ptychobench",
        type=Path,
        metavar="FILE",
        help="also write PtychoBench results JSON (for their evaluation/bootstrap.py); implies "
        "--scoring ptychobench",
    )
    p.add_argument("--name", default="", help="name of this configuration in the table")
    p.add_argument(
        "--compare", type=Path, help="TOML/JSON file listing configurations (backend flags become defaults)"
    )
    p.add_argument(
        "--probe", action="store_true", help="add a row for the probe trained on the dataset's train split"
    )
    p.add_argument(
        "--combine",
        metavar="SPECIALIST,GENERALIST",
        type=_pair,
        help="add rows combining two configurations' labels: agreement only, either, specialist with veto",
    )
    p.add_argument("--out", type=Path, help="output folder (default: DATASET/evaluation)")
    add_backend_arguments(p)
    p.set_defaults(handler=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from napari_fracto.cli import confirm_remote, settings_from_args
    from napari_fracto.dataset import Dataset, DatasetError
    from napari_fracto.evaluation.compare import ComparisonError, expand, load_comparison, make_config
    from napari_fracto.evaluation.report import markdown_table, write_reports
    from napari_fracto.evaluation.runner import EvaluationError, evaluate

    if args.resamples is not None and not 0 <= args.resamples <= 10_000:
        print(f"error: --resamples must be between 0 and 10000, got {args.resamples}", file=sys.stderr)
        return 2
    scoring = args.scoring or ("ptychobench" if args.export_ptychobench else "default")
    if args.export_ptychobench and scoring != "ptychobench":
        print(
            "error: --export-ptychobench scores by PtychoBench's rules; drop --scoring default",
            file=sys.stderr,
        )
        return 2
    if args.export_ptychobench and "param" in args.export_ptychobench.name.lower():
        print(
            "error: PtychoBench's bootstrap.py reads any file named '*param*' as parameter advice; name the "
            "--export-ptychobench file without 'param' (advice goes to <name>_param_rec.json beside it)",
            file=sys.stderr,
        )
        return 2
    base = settings_from_args(args)
    if args.adapter is None:  # the adapter saved by Analyze never sneaks into a "base" row
        base = base.model_copy(update={"adapter": ""})
    try:
        if args.compare:
            configs = load_comparison(args.compare, base)
        else:
            entry = {
                "name": args.name,
                "shots": args.shots,
                "select": args.select,
                "example_features": args.example_features,
                "feature_model": args.feature_model,
                "context": not args.no_context,
                "advice": bool(args.advice),
                "seed": args.seed,
                "tiles": args.tiles,
                "complex_part": args.part,
            }
            if args.remove_ramp or args.unwrap or args.crop_scanned:
                entry["display"] = {
                    "ramp": args.remove_ramp,
                    "unwrap": args.unwrap,
                    "crop": args.crop_scanned,
                }
            if args.adapter:
                entry["adapter"] = args.adapter
                if args.max_image_tokens is not None:
                    entry["max_image_tokens"] = args.max_image_tokens
            configs = expand([entry], base)
        if args.probe:
            configs.append(make_config({"name": "probe (texture features)", "backend": "probe"}))
    except ComparisonError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for config in configs:
        if config.settings.kind == "openai" and not config.settings.model:
            print(f"error: {config.label}: --model is required with --backend openai", file=sys.stderr)
            return 2
        if not confirm_remote(config.settings, args.allow_remote):
            return 2
    out = args.out or args.dataset / "evaluation"
    bar = tqdm(unit="image", desc="eval", file=sys.stderr, dynamic_ncols=True)

    def progress(done: int, total: int, message: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(message[-40:], refresh=True)

    try:
        with Dataset.open(args.dataset) as dataset:
            run = evaluate(
                dataset,
                configs,
                out,
                split=args.split,
                task=args.task,
                resamples=args.resamples,
                seed=args.seed,
                scoring=scoring,
                progress=progress,
                combine=args.combine,
            )
    except (DatasetError, EvaluationError, ValueError) as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    paths = list(write_reports(run, out).values())
    if args.export_ptychobench:
        from napari_fracto.evaluation.export_ptychobench import write_ptychobench

        try:
            paths += write_ptychobench(run, args.export_ptychobench)
        except EvaluationError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print(markdown_table(run))
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 1 if any(r.error for r in run.results) else 0
