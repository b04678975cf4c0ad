"""`napari-fracto dataset queue DATASET`: the unreviewed images in the order to review them, with why.

Registered by `dataset/cli.py`; importing this module costs argparse only.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_queue_action(action) -> None:
    """Add the `queue` action through dataset/cli.py's `action(name, help)` helper."""
    p = action("queue", "unreviewed images in the order that teaches most (or random/file), with reasons")
    p.add_argument("--order", choices=["teach", "random", "file"], default="teach", help="default: teach")
    p.add_argument("--n", type=int, default=20, help="how many to list (default 20; 0 for all)")
    p.add_argument("--task", help="needed only when the dataset holds several tasks")
    p.add_argument("--seed", type=int, default=0, help="breaks ties; the same seed gives the same order")
    p.add_argument("--no-probe", action="store_true", help="rank without training the probe")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")


def run_queue(args: argparse.Namespace) -> int:
    from napari_fracto.dataset import Dataset, DatasetError
    from napari_fracto.review.teach_inputs import teach_queue

    with Dataset.open(args.dataset) as ds:
        task = args.task or _only_task(ds)
        ranked, notes = teach_queue(
            ds, task, order=args.order, n=args.n or None, seed=args.seed, probe=not args.no_probe
        )
        names = {i.image_id: i.image.original_name for i in ds.iter_items(task=task)}
    if not ranked and not args.json:
        raise DatasetError(f"{args.dataset} has no unreviewed '{task}' images to queue")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for place, r in enumerate(ranked, 1):
        name = names.get(r.item_id, "")
        if args.json:
            print(json.dumps({"rank": place, "image_id": r.item_id, "name": name, "score": r.score,
                              "reasons": list(r.reasons), "signals": dict(r.signals)}))  # fmt: skip
        else:
            print(f"{place:>4}  {r.item_id[:12]}  {name[:28]:<28}  {r.score:5.2f}  {'; '.join(r.reasons)}")
    return 0


def _only_task(ds) -> str:
    from napari_fracto.dataset import DatasetError

    tasks = sorted({i.task for i in ds.iter_items() if i.task})
    if len(tasks) == 1:
        return tasks[0]
    if not tasks:
        raise DatasetError(f"{ds.root} holds no images with a task; add or autolabel images first")
    raise DatasetError(f"{ds.root} holds several tasks ({', '.join(tasks)}); choose one with --task")
