"""The review queue: folder, stack and results.jsonl sources, statuses and counts, resume after reopening."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_fracto.dataset import Dataset
from napari_fracto.findings import AnalysisResult, Box, Finding
from napari_fracto.review.queue import QueueError, ReviewQueue


def _png(path, value):
    from PIL import Image

    Image.fromarray(np.full((16, 20), value, np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    for i in range(4):
        _png(d / f"img{i}.png", 10 * i + 5)
    (d / "notes.txt").write_text("not an image")
    return d


def _result(source: str, label: str = "dimples") -> dict:
    return AnalysisResult(
        task="fracture",
        findings=[Finding(label, 0.7, Box(1, 2, 8, 9))],
        raw_text=f'{{"labels": [{{"label": "{label}"}}]}}',
        backend="openai",
        model="m",
        adapter=None,
        prompt_version="p1",
        vocabulary_version="1.0",
        seconds=0.5,
        image_shape=(16, 20),
        source=source,
    ).to_record()


def test_folder_queue_counts_skip_and_next_unreviewed(tmp_path, folder):
    ds = Dataset.create(tmp_path / "ds")
    q = ReviewQueue.open(ds, folder, "fracture")
    assert [e.name for e in q.entries] == ["img0.png", "img1.png", "img2.png", "img3.png"]
    assert q.progress_text() == "0 / 4 reviewed"
    q.save(0, q.session(0), reviewer="ana")
    q.skip(1, q.session(1))
    assert q.statuses() == ["reviewed", "skipped", "unreviewed", "unreviewed"]
    assert q.progress_text() == "1 / 4 reviewed, 1 skipped"
    assert q.next_unreviewed() == 2
    q.go(3)
    assert q.next_unreviewed() == 2  # wraps around, skipping reviewed and skipped images


def test_stack_file_becomes_one_image_per_plane(tmp_path):
    import tifffile

    stack = np.stack([np.full((8, 9), i, np.uint16) for i in range(3)])
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    ds = Dataset.create(tmp_path / "ds")
    q = ReviewQueue.open(ds, tmp_path / "stack.tif", "fracture")
    assert [e.name for e in q.entries] == [f"stack.tif [plane {i}]" for i in range(3)]
    assert (ds.image_array(q.entries[2].image_id) == 2).all()


def test_results_jsonl_stores_predictions_once_and_reports_bad_lines(tmp_path, folder):
    stack = np.stack([np.full((8, 9), i, np.float32) for i in range(2)])
    np.save(tmp_path / "stack.npy", stack)
    lines = [
        json.dumps(_result("images/img0.png")),  # relative to the results file
        "this is not json",
        json.dumps(_result(str(tmp_path / "stack.npy") + " [plane 1]", "cleavage facets")),
        json.dumps(_result(str(tmp_path / "missing.png"))),
    ]
    results = tmp_path / "results.jsonl"
    results.write_text("\n".join(lines) + "\n")
    ds = Dataset.create(tmp_path / "ds")
    q = ReviewQueue.open(ds, results)
    assert q.task == "fracture"
    assert [e.name for e in q.entries] == ["img0.png", "stack.npy [plane 1]"]
    assert any("line 2" in p for p in q.problems)
    assert any("missing.png" in p for p in q.problems)
    assert (ds.image_array(q.entries[1].image_id) == 1).all()
    session = q.session(1)
    assert [r.label for r in session.rows] == ["cleavage facets"]
    assert session.prediction.model == "m"
    ReviewQueue.open(ds, results)  # opening the file again adds no duplicate predictions
    assert ds.review_count() == 2


def test_resume_after_reopening_continues_where_the_reviewer_left_off(tmp_path, folder):
    root = tmp_path / "ds"
    with Dataset.create(root) as ds:
        q = ReviewQueue.open(ds, folder, "fracture")
        q.save(0, q.session(0))
        q.save(1, q.session(1))
        q.go(1)
    with Dataset.open(root) as ds:
        again = ReviewQueue.resume(ds)
        assert again is not None
        assert again.progress_text() == "2 / 4 reviewed"
        assert again.position == 1
        assert again.next_unreviewed() == 2


def test_bad_sources_say_what_to_do(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    with pytest.raises(QueueError, match="does not exist"):
        ReviewQueue.open(ds, tmp_path / "nope", "fracture")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(QueueError, match="holds no images"):
        ReviewQueue.open(ds, empty, "fracture")
    with pytest.raises(QueueError, match="choose the task"):
        ReviewQueue.open(ds, empty, None)
    (tmp_path / "r.jsonl").write_text("garbage\n")
    with pytest.raises(QueueError, match="nothing to review"):
        ReviewQueue.open(ds, tmp_path / "r.jsonl")
    with pytest.raises(QueueError, match="no 'fracture' images"):
        ReviewQueue.from_dataset(ds, "fracture")
    assert ReviewQueue.resume(ds) is None


def _many(ds, n, task="fracture"):
    return [ds.add_image(np.full((4, 4), i, np.uint16), task=task, name=f"im{i:03d}") for i in range(n)]


def test_whole_dataset_queue_pages_complete_and_ordered(tmp_path):
    from napari_fracto.review.queue import PAGE_SIZE

    ds = Dataset.create(tmp_path / "ds")
    ids = _many(ds, 2 * PAGE_SIZE + 17)
    q = ReviewQueue.from_dataset(ds, "fracture")
    assert len(q) == len(ids)
    assert q.page_count == 3
    pages = [q.page(n) for n in range(q.page_count)]
    assert [len(p) for p in pages] == [PAGE_SIZE, PAGE_SIZE, 17]
    assert [e.image_id for p in pages for _, e, _ in p] == ids  # every image once, in order added
    assert [i for p in pages for i, _, _ in p] == list(range(len(ids)))
    assert [e.name for e in q.entries[PAGE_SIZE - 1 : PAGE_SIZE + 1]] == ["im099", "im100"]
    # saves across page boundaries: statuses, counts, next unreviewed all follow
    for i in range(PAGE_SIZE + 5):
        q.save(i, q.session(i))
    q.go(PAGE_SIZE + 2)
    assert q.next_unreviewed() == PAGE_SIZE + 5
    assert q.status(PAGE_SIZE + 4) == "reviewed"
    assert q.progress_text() == f"{PAGE_SIZE + 5} / {len(ids)} reviewed"
    q.go(len(ids) - 1)
    for i in range(PAGE_SIZE + 5, len(ids)):
        q.skip(i, q.session(i))
    assert q.next_unreviewed() is None
    # another process saving meanwhile is seen after refresh
    with Dataset.open(ds.root) as other:
        other.save_review(ids[3], "fracture", [], status="unreviewed")
    q.refresh()
    assert q.status(3) == "unreviewed"
    assert q.next_unreviewed() == 3  # wraps around to the start


def test_whole_dataset_queue_is_remembered_without_listing_it(tmp_path):
    root = tmp_path / "ds"
    with Dataset.create(root) as ds:
        _many(ds, 130)
        q = ReviewQueue.from_dataset(ds, "fracture")
        q.go(120)
        saved = ds.get_meta("review_queue:dataset:fracture")
        assert len(saved) < 200  # the order's name, not 130 entries
    with Dataset.open(root) as ds:
        ids = _many(ds, 135)[130:]  # images added since are part of it
        again = ReviewQueue.resume(ds)
        assert again is not None
        assert (len(again), again.position) == (135, 120)
        assert [e.image_id for e in again.entries[130:]] == ids


def test_explicit_order_keeps_its_ranking(tmp_path):
    ds = Dataset.create(tmp_path / "ds")
    ids = _many(ds, 6)
    ranking = [ids[4], ids[1], "0" * 64, ids[5]]  # e.g. most informative first; one id unknown
    q = ReviewQueue.from_order(ds, "fracture", ranking, key="teach", source="ranked")
    assert [e.image_id for e in q.entries] == [ids[4], ids[1], ids[5]]
    assert [e.name for e in q.entries] == ["im004", "im001", "im005"]
    q.save(0, q.session(0))
    assert q.statuses() == ["reviewed", "unreviewed", "unreviewed"]
    assert q.next_unreviewed() == 1
    again = ReviewQueue.resume(ds)
    assert [e.image_id for e in again.entries] == [ids[4], ids[1], ids[5]]
    assert again.source == "ranked"
    assert list(q.pairs()) == [(ids[4], "im004"), (ids[1], "im001"), (ids[5], "im005")]
    whole = ReviewQueue.from_dataset(ds, "fracture")
    assert [i for i, _ in whole.pairs()] == ids
