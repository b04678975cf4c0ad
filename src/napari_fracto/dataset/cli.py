"""`napari-fracto dataset create|info|validate|export|import|import-papers|split|autolabel|backup|doctor|
queue`.

Only argparse is imported to build the parser; each action imports what it needs when it runs.
Exit codes: 0 ok, 1 problems found (validate) or some inputs failed, 2 the command could not run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_dataset_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `dataset` and its actions on the top-level `napari-fracto` sub-parsers."""
    from napari_fracto.cli import add_backend_arguments, add_request_arguments
    from napari_fracto.dataset.folder_import import add_folder_arguments

    parser = subparsers.add_parser(
        "dataset", help="the corrections dataset: info, validate, export, import, split, autolabel"
    )
    actions = parser.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_text, description=help_text)
        p.add_argument("dataset", type=Path, help="dataset folder")
        return p

    p = action("create", "make a new, empty dataset folder")
    p.add_argument("--name", help="a name for the dataset (default: the folder name)")

    p = action("info", "counts per task, status, split and label; rare labels flagged")
    p.add_argument("--task")
    p.add_argument("--rare", type=int, default=10, help="flag labels with fewer reviewed images (10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = action("validate", "check images, hashes, labels and boxes; exit 1 with a list of problems")
    p.add_argument("--no-hashes", action="store_true", help="only check that image files exist (faster)")

    p = action("export", "write the reviewed items for training: jsonl, parquet or csv")
    p.add_argument("out", type=Path, help="output file (jsonl, csv) or folder (parquet)")
    p.add_argument("--format", choices=["jsonl", "parquet", "csv"], help="default: from the OUT suffix")
    p.add_argument("--task")
    p.add_argument("--split", choices=["train", "val", "test"])
    p.add_argument(
        "--status",
        default="reviewed",
        choices=["reviewed", "unreviewed", "any"],
        help="which current reviews to export (default: reviewed)",
    )
    p.add_argument(
        "--part", choices=["phase", "amplitude"], help="for complex data (default: as each review was asked)"
    )

    p = action("import", "import PtychoBench JSON splits or a folder-per-class image set")
    p.add_argument("source", type=Path, help="PtychoBench JSON/folder, or a folder of class folders")
    p.add_argument(
        "--format",
        choices=["ptychobench", "ptychobench-params", "folders"],
        required=True,
        help="ptychobench-params: a parameter-recommendation split (advice letters A-X)",
    )
    p.add_argument("--task", help="task of the labels (default: ptychography for PtychoBench)")
    p.add_argument("--images", type=Path, help="PtychoBench: folder holding the images")
    p.add_argument("--name", help="name of the dataset when it is created by this import")
    add_folder_arguments(p)

    from napari_fracto.papers.cli import HELP as PAPERS_HELP
    from napari_fracto.papers.cli import add_arguments as add_papers_arguments

    add_papers_arguments(action("import-papers", PAPERS_HELP))

    p = action("split", "deterministic multi-label stratified train/val/test split, stored")
    p.add_argument("--task")
    p.add_argument(
        "--fractions", type=float, nargs=3, default=[0.8, 0.1, 0.1], metavar=("TRAIN", "VAL", "TEST")
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reassign", action="store_true", help="redo the whole split (changes the test set!)")

    p = action(
        "backup", "a consistent copy, also while the dataset is in use: share or move datasets this way"
    )
    p.add_argument("dest", type=Path, help="new folder for the copy")

    p = action("doctor", "check the dataset, repair what is safe (stale temp files, orphan images)")
    p.add_argument("--check-only", action="store_true", help="report, change nothing")
    p.add_argument(
        "--salvage", type=Path, metavar="NEW_FOLDER", help="copy every readable row of a corrupt dataset"
    )

    p = action("autolabel", "predict labels for images with a model; stored as unreviewed predictions")
    p.add_argument("paths", nargs="*", type=Path,
                   help="image files and folders; none: the dataset's unreviewed items without an answer yet "
                        "(imported papers), each asked with its stored context")  # fmt: skip
    p.add_argument("--task", required=True)
    p.add_argument("--context-csv", type=Path, help="CSV with per-image context (file-name column)")
    p.add_argument("--file-column", default="filename", help="CSV column with the image file name")
    p.add_argument("--text-column", help="CSV column with free-text context (goes into notes)")
    p.add_argument("--relabel", action="store_true", help="also predict images that already have a review")
    add_request_arguments(p)
    add_backend_arguments(p)

    from napari_fracto.review.queue_cli import add_queue_action

    add_queue_action(action)
    parser.set_defaults(handler=run)
    return parser


add_parser = add_dataset_parser  # the name `napari_fracto.cli.EXTRA_COMMANDS` modules provide


def run(args: argparse.Namespace) -> int:
    """Run one dataset action; user errors print one clear line and return 2."""
    import sqlite3

    from napari_fracto.dataset.model import DatasetError
    from napari_fracto.dataset.store import dataset_error
    from napari_fracto.vocabulary import VocabularyError

    handler = _HANDLERS[args.dataset_command]
    try:
        return handler(args)
    except (DatasetError, VocabularyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (sqlite3.Error, OSError) as exc:  # full disk, read-only folder, corrupt file: say what to do
        error = dataset_error(exc, args.dataset)
        if error is None:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2


def _open(args: argparse.Namespace):
    from napari_fracto.dataset import Dataset

    ds = Dataset.open(args.dataset)
    if ds.migrated_from is not None:
        print(f"note: dataset upgraded from schema v{ds.migrated_from} (backup kept)", file=sys.stderr)
    return ds


def _create(args: argparse.Namespace) -> int:
    from napari_fracto.dataset import Dataset

    with Dataset.create(args.dataset, name=args.name) as ds:
        print(f"created dataset {ds.name!r} at {ds.root}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from napari_fracto.dataset.tools import format_info, info

    with _open(args) as ds:
        report = info(ds, task=args.task, rare=args.rare)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_info(report))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from napari_fracto.dataset.tools import has_errors, validate

    with _open(args) as ds:
        problems = validate(ds, check_hashes=not args.no_hashes)
        count = len(ds)
    for problem in problems:
        print(problem)
    errors = sum(p.severity == "error" for p in problems)
    print(
        f"{count} image(s) checked: {errors} error(s), {len(problems) - errors} warning(s)", file=sys.stderr
    )
    return 1 if has_errors(problems) else 0


def _export(args: argparse.Namespace) -> int:
    from napari_fracto.dataset import export

    fmt = args.format or {".jsonl": "jsonl", ".csv": "csv"}.get(args.out.suffix.lower(), "parquet")
    status = None if args.status == "any" else args.status
    options = {"task": args.task, "split": args.split, "status": status}
    with _open(args) as ds:
        if fmt == "jsonl":
            n = export.export_jsonl(ds, args.out, complex_part=args.part, **options)
            print(f"wrote {n} example(s) to {args.out}")
        elif fmt == "csv":
            n = export.export_csv(ds, args.out, **options)
            print(f"wrote {n} row(s) to {args.out}")
        else:
            files = export.export_parquet(ds, args.out, complex_part=args.part, **options)
            print("wrote " + ", ".join(str(p) for p in files.values()))
    return 0


def _import(args: argparse.Namespace) -> int:
    from napari_fracto.dataset import Dataset, importers
    from napari_fracto.dataset.folder_import import run_folder_import

    if args.format == "folders":
        if not args.task:
            print("error: --task is required with --format folders", file=sys.stderr)
            return 2
        return run_folder_import(args)
    with Dataset.open_or_create(args.dataset, name=args.name) as ds:
        if args.format == "ptychobench-params":
            from napari_fracto.dataset.ptychobench import import_ptychobench_params

            summary = import_ptychobench_params(
                ds, args.source, images_dir=args.images, task=args.task or "ptychography"
            )
        else:
            summary = importers.import_ptychobench(
                ds, args.source, images_dir=args.images, task=args.task or "ptychography"
            )
    print(summary.describe())
    return 1 if summary.skipped else 0


def _import_papers(args: argparse.Namespace) -> int:
    from napari_fracto.papers.cli import run as import_papers

    return import_papers(args)


def _split(args: argparse.Namespace) -> int:
    from napari_fracto.dataset.split import split_dataset

    with _open(args) as ds:
        counts = split_dataset(
            ds, fractions=args.fractions, seed=args.seed, task=args.task, reassign=args.reassign
        )
    print(", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def _autolabel(args: argparse.Namespace) -> int:
    from napari_fracto.backends.factory import make_backend
    from napari_fracto.cli import (
        adapter_from_args,
        apply_adapter_display,
        confirm_remote,
        context_from_args,
        in_flight_for,
        progress_bar,
        request_options,
    )
    from napari_fracto.dataset.autolabel import autolabel, read_context_csv
    from napari_fracto.vocabulary import load_vocabulary

    load_vocabulary(args.task)  # fail before loading a model
    contexts = None
    if args.context_csv:
        contexts = read_context_csv(
            args.context_csv, file_column=args.file_column, text_column=args.text_column
        )
    choice = adapter_from_args(args)
    settings = choice.settings
    apply_adapter_display(args, choice.request_settings)
    if settings.kind == "openai" and not settings.model:
        print("error: --model is required with --backend openai", file=sys.stderr)
        return 2
    if not confirm_remote(settings, args.allow_remote):
        return 2
    context = context_from_args(args)
    options = request_options(args)
    with _open(args) as ds, progress_bar("autolabel") as progress:
        backend = make_backend(settings)
        try:
            if not args.paths:
                from napari_fracto.papers.teacher import autolabel_stored

                summary = autolabel_stored(
                    ds, task=args.task, backend=backend, tiles=options["tiles"], progress=progress,
                    max_image_tokens=settings.max_image_tokens, max_new_tokens=settings.max_new_tokens,
                )  # fmt: skip
            else:
                summary = autolabel(
                    ds,
                    args.paths,
                    task=args.task,
                    backend=backend,
                    context=context,
                    contexts=contexts,
                    part=args.part,
                    relabel=args.relabel,
                    max_image_tokens=settings.max_image_tokens,
                    max_new_tokens=settings.max_new_tokens,
                    progress=progress,
                    concurrency=in_flight_for(settings),
                    **options,
                )
        finally:
            backend.close()
    for source, message in summary.failures:
        print(f"failed {source}: {message}", file=sys.stderr)
    print(
        f"{summary.predicted} prediction(s) stored as unreviewed, {summary.already_labelled} image(s) "
        f"already labelled, {len(summary.failures)} failed"
    )
    return 1 if summary.failures else 0


def _backup(args: argparse.Namespace) -> int:
    from napari_fracto.dataset.backup import backup

    print(backup(args.dataset, args.dest).describe())
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from napari_fracto.dataset.doctor import doctor, salvage

    if args.salvage:
        print(salvage(args.dataset, args.salvage))
        return 0
    report = doctor(args.dataset, repair=not args.check_only)
    print(report.describe())
    return 1 if report.problems else 0


def _queue(args: argparse.Namespace) -> int:
    from napari_fracto.review.queue_cli import run_queue

    return run_queue(args)


_HANDLERS = {
    "backup": _backup,
    "doctor": _doctor,
    "create": _create,
    "info": _info,
    "validate": _validate,
    "export": _export,
    "import": _import,
    "split": _split,
    "autolabel": _autolabel,
    "import-papers": _import_papers,
    "queue": _queue,
}
