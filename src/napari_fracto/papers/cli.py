"""`napari-fracto dataset import-papers DATASET PDF_OR_FOLDER... --task T [--want [LABEL ...]]`.

Only argparse at import time; the pipeline is imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "figures of papers (PDF, JATS XML) as unreviewed micrograph panels with their caption and citing text"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "papers",
        nargs="+",
        type=Path,
        metavar="PDF_OR_FOLDER",
        help="PDF files, JATS .xml/.nxml articles (figure files beside them), or folders of them",
    )
    parser.add_argument("--task", required=True, help="task of the dataset items, e.g. fracture")
    parser.add_argument(
        "--want",
        nargs="*",
        metavar="LABEL",
        help="keep only panels whose caption or citing text mention one of these labels; --want alone: the "
        "labels `dataset info` flags as rare",
    )
    parser.add_argument("--name", help="name of the dataset when this import creates it")


def run(args: argparse.Namespace) -> int:
    """Import; per-file problems are listed and the batch goes on (exit 1 when any file was skipped)."""
    from napari_fracto.cli import progress_bar
    from napari_fracto.dataset import Dataset
    from napari_fracto.papers.collect import import_papers
    from napari_fracto.papers.model import PaperError
    from napari_fracto.vocabulary import load_vocabulary

    load_vocabulary(args.task)  # an unknown task fails before any file is read
    try:
        with Dataset.open_or_create(args.dataset, name=args.name) as ds, progress_bar("papers") as bar:
            summary = import_papers(
                ds,
                args.papers,
                task=args.task,
                want=args.want,
                progress=lambda done, total, _message: bar(done, total),
            )
    except PaperError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary.describe())
    if summary.kept:
        print(
            f"next: napari-fracto dataset autolabel {args.dataset} --task {args.task} --backend openai "
            "--model MODEL  (asks the model with each panel's context), then review them"
        )
    return 1 if summary.failed else 0
