"""The review state of one image: decisions, edits, undo/redo, the saved form and reading it back."""

from __future__ import annotations

import pytest

from napari_fracto.dataset import Dataset, Decision, Status
from napari_fracto.findings import AnalysisResult, Box, Finding
from napari_fracto.review.layer import NEW_SHAPE, read_layer, review_shapes
from napari_fracto.review.session import ReviewError, ReviewSession
from napari_fracto.vocabulary import load_vocabulary

LABELS = tuple(load_vocabulary("fracture").names())


def _prediction() -> AnalysisResult:
    return AnalysisResult(
        task="fracture",
        findings=[
            Finding(LABELS[0], 0.9, Box(10, 10, 40, 30)),
            Finding(LABELS[1], 0.6, Box(50, 20, 90, 60)),
            Finding(LABELS[2], 0.4, None),
        ],
        raw_text='{"labels": []}',
        backend="openai",
        model="m",
        adapter=None,
        prompt_version="p1",
        vocabulary_version="1.0",
        seconds=1.0,
        image_shape=(100, 120),
        source="x.png",
    )


def _session() -> ReviewSession:
    return ReviewSession("fracture", _prediction(), labels=LABELS, image_size=(100, 120))


def test_decisions_follow_accept_reject_and_edits():
    s = _session()
    assert s.decisions() == [Decision.PENDING] * 3
    s.reject(0)
    s.relabel(1, LABELS[3])
    s.accept(2)
    assert s.decisions() == [Decision.REJECTED, Decision.EDITED, Decision.ACCEPTED]
    assert [f.label for f in s.corrected()] == [LABELS[3], LABELS[2]]
    assert all(f.confidence is None for f in s.corrected())
    assert [r.id for r in s.shown_boxes()] == [1]  # the rejected box leaves the canvas


def test_accept_all_keeps_rejections_and_is_one_undo_step():
    s = _session()
    s.reject(1)
    s.accept_all()
    assert s.decisions() == [Decision.ACCEPTED, Decision.REJECTED, Decision.ACCEPTED]
    assert s.undo() == "accept all"
    assert s.decisions() == [Decision.PENDING, Decision.REJECTED, Decision.PENDING]


def test_undo_redo_walks_every_edit_and_a_new_edit_clears_redo():
    s = _session()
    new_id = s.add_box(LABELS[4], Box(0, 0, 5, 5))
    s.move_box(0, Box(12, 12, 44, 33))
    s.add_label(LABELS[5])
    assert len(s.corrected()) == 5
    assert s.undo() == "add label"
    assert s.undo() == "move box"
    assert s.row(0).box == Box(10, 10, 40, 30)
    assert s.redo() == "move box"
    assert s.row(0).box == Box(12, 12, 44, 33)
    assert s.decisions()[0] is Decision.EDITED
    s.remove(new_id)
    assert not s.can_redo
    assert new_id not in [r.id for r in s.rows]
    s.undo()
    assert s.row(new_id).label == LABELS[4]
    assert s.undo()
    assert s.undo()
    assert s.undo() is None
    assert not s.dirty


def test_bad_labels_and_boxes_are_refused_with_a_reason():
    s = _session()
    with pytest.raises(ReviewError, match="not a 'fracture' label"):
        s.relabel(0, "pizza")
    with pytest.raises(ReviewError, match="choose a label"):
        s.add_label("  ")
    with pytest.raises(ReviewError, match="no finding #99"):
        s.accept(99)
    with pytest.raises(ReviewError, match="non-finite"):
        s.add_box(LABELS[0], Box(0, 0, float("nan"), 3))
    # reversed and out-of-image corners are ordered and clamped to the image
    row = s.row(s.add_box(LABELS[0], Box(200, 50, -5, 10)))
    assert row.box == Box(0, 10, 120, 50)


def test_layer_sync_moves_deletes_and_draws_in_one_step():
    s = _session()
    added = s.add_box(LABELS[0], Box(1, 1, 2, 2))
    spec = review_shapes(s, load_vocabulary("fracture"), image_name="img")
    assert spec.features["finding_id"] == [0, 1, added]
    data = list(spec.data)
    data[0] = data[0] + 5  # moved by 5 px
    ids = list(spec.features["finding_id"])
    # delete predicted box 1 and the added box; draw one new shape
    data = [data[0], [[70, 70], [70, 80], [90, 80], [90, 70]]]
    ids = [ids[0], NEW_SHAPE]
    known, new = read_layer(data, ids, ["", ""], LABELS[6])
    new_ids = s.apply_layer(known, [(label, box) for _, label, box in new])
    assert s.row(0).box == Box(15, 15, 45, 35)
    assert s.row(1).rejected
    assert added not in [r.id for r in s.rows]
    assert s.row(new_ids[0]).label == LABELS[6]
    assert s.row(new_ids[0]).box == Box(70, 70, 80, 90)
    s.undo()
    assert [r.id for r in s.shown_boxes()] == [0, 1, added]


def test_saved_review_reads_back_as_it_was_left(tmp_path):
    import numpy as np

    ds = Dataset.create(tmp_path / "ds")
    image_id = ds.add_image(np.zeros((100, 120), np.uint8), task="fracture")
    s = _session()
    s.reject(0)
    s.move_box(1, Box(51, 21, 91, 61))
    s.add_box(LABELS[7], Box(5, 5, 9, 9))
    s.notes = "charging at the top"
    record = ds.save_review(image_id, "fracture", status=Status.REVIEWED, **s.save_kwargs("ana"))
    back = ReviewSession.from_review(ds.latest_review(image_id), labels=LABELS, image_size=(100, 120))
    assert back.decisions() == s.decisions() == list(record.decisions)
    assert back.corrected() == s.corrected()
    assert [r.status for r in back.rows] == ["rejected", "edited", "pending", "added"]
    assert back.notes == "charging at the top"
    assert not back.dirty
    assert record.reviewer == "ana"
    assert record.raw_text == '{"labels": []}'


ADVICE = tuple(load_vocabulary("ptychography-advice").names())
PTYCHO = tuple(load_vocabulary("ptychography").names())


def _ptycho_session(**kwargs) -> ReviewSession:
    prediction = AnalysisResult(
        task="ptychography",
        findings=[Finding("Grid artifacts", 0.9, None)],
        raw_text="{}",
        backend="openai",
        model="m",
        adapter=None,
        prompt_version="p1",
        vocabulary_version="1.0",
        seconds=1.0,
        image_shape=(64, 64),
        advice=["Enable position correction", "Increase the number of iterations"],
    )
    return ReviewSession("ptychography", prediction, labels=PTYCHO, advice_labels=ADVICE, **kwargs)


def test_advice_is_accepted_rejected_added_and_undone_like_labels():
    assert "Increase number of probe modes" in ADVICE
    s = _ptycho_session()
    first, second = (a.id for a in s.advice)
    assert [a.status for a in s.advice] == ["pending", "pending"]
    assert s.kept_advice() == ["Enable position correction", "Increase the number of iterations"]
    assert not s.dirty

    s.reject_advice(second)
    added = s.add_advice("Increase number of probe modes")
    s.accept_advice(first)
    assert [a.status for a in s.advice] == ["accepted", "rejected", "added"]
    assert s.kept_advice() == ["Enable position correction", "Increase number of probe modes"]
    assert s.save_kwargs()["advice"] == s.kept_advice()
    assert s.dirty

    assert s.undo() == "accept advice"
    assert s.undo() == "add advice"
    assert s.kept_advice() == ["Enable position correction"]
    assert s.redo() == "add advice"
    assert s.kept_advice() == ["Enable position correction", "Increase number of probe modes"]
    s.reject_advice(added)  # the reviewer's own suggestion is removed, not kept as rejected
    assert [a.text for a in s.advice] == ["Enable position correction", "Increase the number of iterations"]
    assert s.add_advice("Increase the number of iterations") == second  # re-adding takes the rejection back
    assert s.kept_advice() == ["Enable position correction", "Increase the number of iterations"]

    with pytest.raises(ReviewError, match="not a reconstruction suggestion"):
        s.add_advice("Buy a better detector")
    with pytest.raises(ReviewError, match="choose a suggestion"):
        s.add_advice(" ")


def test_accept_all_keeps_advice_rejections_in_one_step():
    s = _ptycho_session()
    s.reject_advice(s.advice[0].id)
    s.accept_all()
    assert [a.status for a in s.advice] == ["rejected", "accepted"]
    assert s.undo() == "accept all"
    assert [a.status for a in s.advice] == ["rejected", "pending"]


def test_saved_advice_reads_back_as_it_was_left(tmp_path):
    import numpy as np

    ds = Dataset.create(tmp_path / "ds")
    image_id = ds.add_image(np.zeros((64, 64), np.uint8), task="ptychography")
    s = _ptycho_session(image_size=(64, 64))
    s.reject_advice(s.advice[0].id)
    s.add_advice("Increase number of probe modes")
    record = ds.save_review(image_id, "ptychography", **s.save_kwargs("ana"))
    assert list(record.advice) == ["Increase the number of iterations", "Increase number of probe modes"]
    assert list(record.predicted_advice) == [
        "Enable position correction",
        "Increase the number of iterations",
    ]
    back = ReviewSession.from_review(ds.latest_review(image_id), labels=PTYCHO, advice_labels=ADVICE)
    assert [(a.text, a.status) for a in back.advice] == [
        ("Enable position correction", "rejected"),
        ("Increase the number of iterations", "accepted"),
        ("Increase number of probe modes", "added"),
    ]
    assert not back.dirty
    ds.close()
