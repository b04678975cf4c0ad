"""`dataset import --format folders`: plan, dry run, import, and no empty dataset left behind.

The folder -> label plan is made before anything is written: with `--dry-run` it is only printed; when
no folder maps to a label the command stops with the plan and what to pass (`--map`), and a dataset
folder this command created is removed again if the import saved no image (whatever the reason).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from napari_fracto.dataset.model import DatasetError


def add_folder_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a class-folder import (registered on `dataset import`)."""
    parser.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FOLDER=LABEL",
        help='folders: map a folder to label(s), e.g. --map "Ductile=ductile overload" (repeatable; '
        '"FOLDER=" skips it)',
    )
    parser.add_argument(
        "--mapping", type=Path, help="folders: a file of FOLDER=LABEL lines, or TOML/JSON {folder = label}"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="folders: show which folder becomes which label; write nothing"
    )


def run_folder_import(args: argparse.Namespace) -> int:
    """Exit 0 all imported, 1 some inputs skipped, 2 nothing to import (the dataset is then not kept)."""
    from napari_fracto.dataset import Dataset, importers
    from napari_fracto.dataset.label_mapping import describe_matches, parse_mapping, read_mapping_file
    from napari_fracto.vocabulary import load_vocabulary

    vocab = load_vocabulary(args.task)
    mapping = read_mapping_file(args.mapping, vocab) if args.mapping else {}
    mapping.update(parse_mapping(args.map, vocab))
    plan = importers.plan_class_folders(args.source, vocab, mapping)
    counts = {match.folder: len(files) for match, files in plan}
    table = describe_matches([m for m, _ in plan], counts)
    if args.dry_run:
        print(f"class folders of {args.source} -> {args.task} labels (dry run, nothing written):\n{table}")
        return 0
    if not any(match.matched and files for match, files in plan):
        raise DatasetError(
            f"no class folder of {args.source} maps to a {args.task} label, nothing imported:\n{table}\n"
            'map folders with --map "FOLDER=LABEL" or --mapping FILE (see them with --dry-run)'
        )
    root = Path(args.dataset).expanduser()
    existed = root.exists()
    # only a dataset made here from nothing may be removed again: never a folder that held anything
    created = not existed or (root.is_dir() and not any(root.iterdir()))
    try:
        with Dataset.open_or_create(root, name=args.name) as ds:
            summary = importers.import_class_folders(ds, args.source, task=args.task, mapping=mapping)
            empty = len(ds) == 0
    except BaseException:
        if created:
            _remove_if_empty(root, existed)
        raise
    if created and empty:
        _remove_if_empty(root, existed)
        print(summary.describe(), file=sys.stderr)
        print(f"error: no image was imported, so no dataset was left at {root}", file=sys.stderr)
        return 2
    print(summary.describe())
    return 1 if summary.skipped else 0


def _remove_if_empty(root: Path, existed: bool) -> None:
    """Undo a dataset this import created, only while it holds no image (earlier saves are never lost)."""
    from napari_fracto.dataset import Dataset

    try:
        with Dataset.open(root) as ds:
            if len(ds):
                return
    except (DatasetError, OSError):
        pass
    if not existed:
        shutil.rmtree(root, ignore_errors=True)
        return
    for child in root.iterdir():  # the folder was empty before: everything in it is ours
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
