"""`napari-fracto report INPUT --out report.html [--pdf report.pdf]`.

Registered through `napari_fracto.cli.EXTRA_COMMANDS`; importing this module costs argparse only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    """Add the `report` sub-command."""
    p = subparsers.add_parser(
        "report",
        help="a shareable HTML (and PDF) report of an analyze JSONL, a dataset or an eval folder",
        description=(
            "Make a self-contained HTML report (images inline, opens offline, readable on a phone) and "
            "optionally a PDF of the same content. INPUT is an `analyze --out` JSONL (one image: a per-image "
            "report; more: a batch report), a corrections dataset folder (its reviewed items, or a split) "
            "or an `eval` output folder. Local paths are shown as file names unless --include-paths."
        ),
    )
    p.add_argument("input", type=Path, metavar="INPUT", help="analyze JSONL, dataset folder or eval folder")
    p.add_argument("--out", type=Path, required=True, help="the HTML file (more pages: NAME-2.html, ...)")
    p.add_argument("--pdf", type=Path, help="also write this PDF")
    p.add_argument(
        "--pdf-engine",
        choices=["auto", "chromium", "matplotlib"],
        default="auto",
        help="auto: headless Chromium/Chrome when installed (the HTML as printed), else matplotlib",
    )
    p.add_argument("--per-page", type=int, default=50, help="images per HTML page (default 50)")
    p.add_argument("--split", choices=["train", "val", "test"], help="dataset: only this split")
    p.add_argument("--task", help="dataset: only this task")
    p.add_argument(
        "--all",
        dest="all_reviews",
        action="store_true",
        help="dataset: also unreviewed predictions and skipped images",
    )
    p.add_argument("--dataset", type=Path, help="eval: the dataset folder, when it moved since the run")
    p.add_argument("--title", default="", help="the report's title")
    p.add_argument(
        "--include-paths",
        action="store_true",
        help="show full local paths (default: file names only, for reports meant to be shared)",
    )
    p.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    from napari_fracto.report import make_report

    if args.per_page < 1:
        print(f"error: --per-page must be at least 1, got {args.per_page}", file=sys.stderr)
        return 2
    made = make_report(
        args.input,
        args.out,
        pdf=args.pdf,
        include_paths=args.include_paths,
        per_page=args.per_page,
        split=args.split,
        task=args.task,
        all_reviews=args.all_reviews,
        dataset=args.dataset,
        title=args.title,
        pdf_engine=args.pdf_engine,
    )
    pages = f" ({len(made.pages)} pages)" if len(made.pages) > 1 else ""
    print(f"wrote {made.pages[0]}{pages}", file=sys.stderr)
    if made.pdf is not None:
        print(f"wrote {made.pdf} (drawn by {made.pdf_engine})", file=sys.stderr)
    return 0
