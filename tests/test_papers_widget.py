"""Review's "Add papers…" in a real viewer: papers into the dataset in a worker, queued for review, then
"Run the model on unlabelled" asks a model over real HTTP with each panel's context (run under xvfb-run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
pytest.importorskip("pypdfium2", reason="the papers extra (pypdfium2) is not installed")

from napari_fracto.dataset import Status
from napari_fracto.papers.provenance import item_provenance
from napari_fracto.widgets.review import ReviewWidget


@pytest.fixture(scope="module")
def papers(tmp_path_factory) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    from napari_fracto.testing import paper_corpus as corpus

    data = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fractography" / "ceramic-sem"
    sources = sorted(data.glob("*.jpg"))
    if not sources:
        pytest.skip(f"shared micrographs not found at {data}")
    out = tmp_path_factory.mktemp("papers")
    one = out / "alumina.pdf"
    corpus.one_column(one, corpus.micrographs(sources))
    corpus.encrypt(one, out / "locked.pdf")
    return {"one_column": one, "encrypted": out / "locked.pdf"}


def _review(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    widget = ReviewWidget(viewer)
    qtbot.addWidget(widget)
    assert widget.open_dataset(tmp_path / "ds")
    widget.task_combo.setCurrentText("fracture")
    return widget


def test_add_papers_imports_in_a_worker_and_queues_the_panels(make_napari_viewer, qtbot, tmp_path, papers):
    w = _review(make_napari_viewer, qtbot, tmp_path)
    with qtbot.waitSignal(w.papers.finished, timeout=60_000) as blocker:
        assert w.papers.start([papers["encrypted"], papers["one_column"]])
        assert w.papers.busy
        assert w.papers.cancel_button.isEnabled()
    added = blocker.args[0]
    assert len(added) == 4
    assert "4 panel(s) added as unreviewed from 1 paper(s), 1 file(s) skipped" in w.papers.status_label.text()
    assert "locked.pdf: the PDF is encrypted" in w.papers.error_panel.text
    assert w.papers.add_button.isEnabled()
    assert not w.papers.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: w.queue is not None and len(w.queue) == 4, timeout=30_000)
    assert [e.image_id for e in w.queue.entries] == list(added)
    assert w.queue.current.name == "alumina.pdf p. 1 Fig. 1a"
    assert all(w.dataset.latest_review(i).status is Status.UNREVIEWED for i in added)


def test_add_papers_needs_an_open_dataset(make_napari_viewer, qtbot, papers):
    viewer = make_napari_viewer()
    w = ReviewWidget(viewer)
    qtbot.addWidget(w)
    assert not w.papers.start([papers["one_column"]])
    assert "Open a dataset first" in w.papers.error_panel.text


def test_cancel_leaves_no_paper_half_added(make_napari_viewer, qtbot, tmp_path, papers):
    w = _review(make_napari_viewer, qtbot, tmp_path)
    with qtbot.waitSignal(w.papers.finished, timeout=60_000):
        w.papers.start([papers["one_column"]] * 1 + [papers["encrypted"]])
        w.papers.cancel()
    assert w.papers.summary.cancelled or w.papers.summary.kept == 4
    assert len(w.dataset) in (0, 4)  # the paper is in whole or not at all


def test_run_the_model_asks_the_teacher_with_each_panels_context(make_napari_viewer, qtbot, tmp_path, papers):
    from napari_fracto.backends.openai_backend import OpenAIBackend
    from napari_fracto.testing.fake_openai_server import FakeOpenAIServer

    w = _review(make_napari_viewer, qtbot, tmp_path)
    with qtbot.waitSignal(w.papers.finished, timeout=60_000):
        w.papers.start([papers["one_column"]])
    qtbot.waitUntil(lambda: w.queue is not None and len(w.queue) == 4, timeout=30_000)
    w.state.model = "teacher"
    answer = json.dumps({"labels": [{"label": "cleavage facets", "confidence": 0.8}]})
    with FakeOpenAIServer(answer=answer, models=("teacher",)) as server:
        w.predict.make_backend = lambda settings, key: OpenAIBackend("teacher", base_url=server.base_url)
        with qtbot.waitSignal(w.predict.finished, timeout=60_000) as blocker:
            w.predict.run_button.click()
        sent = [json.dumps(r.body["messages"]) for r in server.chat_requests()]
    assert blocker.args == [4]
    provenance = item_provenance(w.dataset)
    for image_id, prov in provenance.items():
        review = w.dataset.latest_review(image_id)
        assert review.labels == ["cleavage facets"]
        assert review.request.context == prov.context()
        (mine,) = [s for s in sent if f"{prov.where}." in s]
        assert json.dumps(prov.caption_part)[1:-1] in mine


def test_only_rare_labels_keeps_panels_about_a_rare_label(
    make_napari_viewer, qtbot, tmp_path, papers, monkeypatch
):
    import numpy as np
    from qtpy.QtWidgets import QFileDialog

    from napari_fracto.dataset import Dataset
    from napari_fracto.findings import Finding

    with Dataset.create(tmp_path / "ds") as ds:  # ten reviewed images of 'fracture mirror': no longer rare
        for i in range(10):
            image_id = ds.add_image(np.full((8, 8), i, np.uint8), task="fracture")
            ds.save_review(image_id, "fracture", [Finding("fracture mirror")])
    w = _review(make_napari_viewer, qtbot, tmp_path)
    monkeypatch.setattr(QFileDialog, "getOpenFileNames", lambda *a, **k: ([str(papers["one_column"])], ""))
    w.papers.rare_check.setChecked(True)
    with qtbot.waitSignal(w.papers.finished, timeout=60_000) as blocker:
        w.papers.add_button.click()
    wheres = sorted(item_provenance(w.dataset)[i].where for i in blocker.args[0])
    # Fig. 4b is only about the mirror zone (no longer rare); 1a-1c mention pores, cleavage, intergranular
    assert wheres == ["alumina.pdf p. 1 Fig. 1a", "alumina.pdf p. 1 Fig. 1b", "alumina.pdf p. 1 Fig. 1c"]
