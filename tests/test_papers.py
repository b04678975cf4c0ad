"""From papers to a training set: figures, panels, captions, excerpts, provenance, dedup and bad files,
on papers the tests make themselves (PDFs in one and two columns, a JATS article) from real micrographs."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pypdfium2", reason="the papers extra (pypdfium2) is not installed")

from napari_fracto.dataset import Dataset, Status
from napari_fracto.papers import collect
from napari_fracto.papers.collect import candidates, import_papers, read_paper
from napari_fracto.papers.model import PaperError
from napari_fracto.papers.provenance import PAPER_KEY, item_provenance


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    from napari_fracto.testing.paper_corpus import make_corpus

    data = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fractography" / "ceramic-sem"
    sources = sorted(data.glob("*.jpg"))
    if not sources:
        pytest.skip(f"shared micrographs not found at {data}")
    files = make_corpus(tmp_path_factory.mktemp("papers"), sources)
    files["sources"] = sources  # type: ignore[assignment]
    return files


@pytest.fixture
def ds(tmp_path):
    with Dataset.create(tmp_path / "ds") as dataset:
        yield dataset


def _tiles(corpus):
    from napari_fracto.testing.paper_corpus import micrographs

    return micrographs(corpus["sources"])


def _similar(panel: np.ndarray, tile: np.ndarray) -> float:
    """Correlation of a panel with the micrograph it should be, at the tile's size."""
    from PIL import Image

    grey = panel if panel.ndim == 2 else panel[..., :3].mean(axis=2)
    small = np.asarray(Image.fromarray(grey.astype(np.uint8)).resize(tile.shape[::-1]), dtype=float)
    return float(np.corrcoef(small.ravel(), tile.astype(float).ravel())[0, 1])


def test_one_column_figure_is_split_into_its_three_panels_with_their_caption_parts(corpus):
    paper = read_paper(corpus["one_column"])
    assert (paper.doi, paper.licence, paper.pages) == ("10.5555/fracto.2024.0001", "CC BY 4.0", 2)
    panels = [c for c in candidates(paper) if c.figure.number == "1"]
    assert [c.panel for c in panels] == ["a", "b", "c"]
    width = panels[0].figure.image.shape[1]
    lefts = [c.bounds[0] for c in panels]
    assert lefts == sorted(lefts)
    for c, nxt in itertools.pairwise(panels):
        assert c.bounds[2] < nxt.bounds[0]  # the gutter between them is in neither panel
        assert 0.28 * width < c.bounds[2] - c.bounds[0] < 0.36 * width
    tiles = _tiles(corpus)
    for i, c in enumerate(
        panels
    ):  # each panel is the micrograph placed there (its letter aside), no neighbour
        assert [_similar(c.pixels, tile) > 0.8 for tile in tiles[0:3]] == [j == i for j in range(3)]
    assert [c.caption_part for c in panels] == [
        "Fracture origin at a pore",
        "cleavage facets with river patterns",
        "intergranular facets",
    ]


def test_plots_schematics_photographs_and_tables_are_left_out_with_reasons(corpus, ds):
    summary = import_papers(ds, [corpus["one_column"]], task="fracture")
    (report,) = summary.papers
    assert report.left_out == {"vector drawing": 1, "schematic": 1, "photograph": 1, "table": 1}
    text = report.describe()
    assert "Fig. 2: a vector drawing" in text
    assert "Fig. 3: schematic" in text
    assert "Fig. 4a: colour photograph" in text
    kept = sorted(p.where for p in item_provenance(ds).values())
    assert kept == [
        "alumina.pdf p. 1 Fig. 1a",
        "alumina.pdf p. 1 Fig. 1b",
        "alumina.pdf p. 1 Fig. 1c",
        "alumina.pdf p. 2 Fig. 4b",
    ]
    assert len(ds) == 4


def test_items_are_unreviewed_with_provenance_and_the_context_in_their_request(corpus, ds):
    import_papers(ds, [corpus["one_column"]], task="fracture")
    by_where = {p.where: (image_id, p) for image_id, p in item_provenance(ds).items()}
    image_id, prov = by_where["alumina.pdf p. 1 Fig. 1b"]
    assert (prov.file, prov.page, prov.figure, prov.panel) == ("alumina.pdf", 1, "1", "b")
    assert prov.doi == "10.5555/fracto.2024.0001"
    assert prov.licence == "CC BY 4.0"
    assert prov.caption.startswith("Fig. 1. Fracture surfaces of the alumina bars. (a) Fracture origin")
    assert prov.caption_part == "cleavage facets with river patterns"
    assert prov.excerpts[0].startswith(
        "Cleavage facets with river patterns cover the mirror region (Figure 1(b))"
    )
    assert all("Fig. 1a, where a pore" not in e for e in prov.excerpts)  # 1a's paragraph is not 1b's
    assert any(e.startswith("Figs. 1–3 summarise") for e in prov.excerpts)  # the range cites 1 too
    assert ds.image(image_id).width == round(prov.bounds[2] - prov.bounds[0])
    review = ds.latest_review(image_id)
    assert review.status is Status.UNREVIEWED
    assert not review.has_prediction
    notes = review.request.context.notes
    assert "Figure caption: Fig. 1. Fracture surfaces" in notes
    assert "This panel (b): cleavage facets with river patterns" in notes
    assert "(Figure 1(b))" in notes
    assert review.context == review.request.context


def test_two_columns_figure_of_two_pieces_gets_printed_letters_and_a_reprint_is_kept_once(corpus, ds):
    import_papers(ds, [corpus["one_column"]], task="fracture")
    summary = import_papers(ds, [corpus["two_columns"]], task="fracture")
    (report,) = summary.papers
    assert report.kept == 2
    assert report.left_out["duplicate"] == 1
    assert "Fig. 2: the same image as alumina.pdf p. 1 Fig. 1a, kept once" in report.describe()
    assert any("page 3 is a scanned image" in n for n in report.notes)
    provs = {p.where: p for p in item_provenance(ds).values() if p.file == "spinel.pdf"}
    a, b = provs["spinel.pdf p. 1 Fig. 1a"], provs["spinel.pdf p. 1 Fig. 1b"]
    assert a.caption_part == "Fatigue striations near the origin"
    assert b.caption_part == "dimples in the overload zone"
    assert a.excerpts[0].startswith("Striations are visible in Fig. 1a")  # left column
    assert b.excerpts[0].startswith("The overload region (Figure 1(b))")  # right column
    assert a.bounds[2] <= b.bounds[0]  # the two pieces, side by side
    assert a.figure_bounds is not None  # spans both columns
    assert a.figure_bounds[2] - a.figure_bounds[0] > 400


def test_bad_files_get_a_clear_message_each_and_the_batch_goes_on_with_nothing_of_them_written(
    corpus, ds, tmp_path
):
    empty = tmp_path / "notes.txt"
    empty.write_text("not a paper")
    files = [corpus["encrypted"], corpus["corrupt"], corpus["scanned"], empty, corpus["one_column"]]
    summary = import_papers(ds, files, task="fracture")
    why = {Path(f).name: m for f, m in summary.failed}
    assert "encrypted" in why["locked.pdf"]
    assert "unprotected copy" in why["locked.pdf"]
    assert "not a readable PDF" in why["broken.pdf"]
    assert "scanned image" in why["scan.pdf"]
    assert "OCR" in why["scan.pdf"]
    assert "not a paper this reads" in why["notes.txt"]
    assert [p.file for p in summary.papers] == ["alumina.pdf"]
    assert len(ds) == 4 == summary.kept
    assert {p.file for p in item_provenance(ds).values()} == {"alumina.pdf"}
    assert [k for k in ds.meta if k.startswith(PAPER_KEY)] == [
        PAPER_KEY + item_provenance(ds).popitem()[1].paper_sha256
    ]


def test_a_huge_pdf_is_refused_before_it_is_read(corpus, ds, monkeypatch):
    from napari_fracto.papers import pdf

    monkeypatch.setattr(pdf, "MAX_PAGES", 1)
    summary = import_papers(ds, [corpus["one_column"]], task="fracture")
    assert "2 pages is over the 1-page limit" in summary.failed[0][1]
    assert len(ds) == 0


def test_jats_article_with_its_figure_files(corpus, ds):
    summary = import_papers(ds, [corpus["jats"]], task="fracture")
    (report,) = summary.papers
    assert report.file == "magnesia/article.xml"
    assert report.kept == 2
    assert report.left_out == {"schematic": 1}
    provs = sorted(item_provenance(ds).values(), key=lambda p: p.panel)
    assert [(p.figure, p.panel, p.figure_file) for p in provs] == [
        ("1", "a", "fig1.png"),
        ("1", "b", "fig1.png"),
    ]
    assert provs[0].doi == "10.5555/fracto.jats.7"
    assert provs[0].licence == "https://creativecommons.org/licenses/by/4.0/"
    assert provs[1].caption_part == "cleavage steps on a grain"
    assert provs[1].excerpts == (
        "At higher magnification (Figure 1(b)) small cleavage steps cross some grains.",
    )
    tiles = _tiles(corpus)
    for prov, tile in zip(provs, tiles[6:8], strict=True):
        image_id = next(i for i, p in item_provenance(ds).items() if p == prov)
        assert _similar(ds.image_array(image_id), tile) > 0.95


def test_jats_figure_files_are_only_read_beside_the_article(tmp_path, ds):
    folder = tmp_path / "art"
    folder.mkdir()
    secret = tmp_path / "secret.png"
    from PIL import Image

    Image.fromarray(np.zeros((64, 64), np.uint8)).save(secret)
    (folder / "a.xml").write_text(
        '<article xmlns:xlink="http://www.w3.org/1999/xlink"><body><p>See Fig. 1.</p>'
        '<fig id="f1"><label>Figure 1</label><caption><p>x</p></caption>'
        '<graphic xlink:href="../secret.png"/></fig></body></article>'
    )
    paper = read_paper(folder / "a.xml")
    assert paper.figures == []
    assert "not beside the XML" in paper.left_out[0][1]
    (folder / "b.xml").write_text("<article><body><p>unfinished")
    with pytest.raises(PaperError, match="not well-formed XML"):
        read_paper(folder / "b.xml")


def test_importing_the_same_papers_again_adds_nothing(corpus, ds):
    first = import_papers(ds, [corpus["one_column"], corpus["jats"]], task="fracture")
    reviews = ds.review_count()
    again = import_papers(ds, [corpus["one_column"], corpus["jats"]], task="fracture")
    assert again.kept == 0
    assert sum(p.left_out["duplicate"] for p in again.papers) == first.kept
    assert ds.review_count() == reviews
    assert len(ds) == first.kept


def test_want_keeps_only_panels_that_mention_the_label_and_defaults_to_rare_labels(corpus, ds, tmp_path):
    summary = import_papers(
        ds, [corpus["one_column"], corpus["two_columns"]], task="fracture", want=["fatigue striations"]
    )
    assert [p.where for p in item_provenance(ds).values()] == ["spinel.pdf p. 1 Fig. 1a"]
    assert next(iter(item_provenance(ds).values())).wanted == ("fatigue striations",)
    # alumina's four micrographs, spinel's 1b and its reprint of alumina's 1a (not kept, so no duplicate)
    assert sum(p.left_out["not about a wanted label"] for p in summary.papers) == 6
    with pytest.raises(PaperError, match="not a fracture label"):
        import_papers(ds, [corpus["one_column"]], task="fracture", want=["unicorns"])
    with Dataset.create(tmp_path / "rare") as fresh:  # every label is rare in a new dataset
        import_papers(fresh, [corpus["one_column"]], task="fracture", want=[])
        wanted = {p.where: p.wanted for p in item_provenance(fresh).values()}
    assert "river patterns" in wanted["alumina.pdf p. 1 Fig. 1b"]
    assert "intergranular facets" in wanted["alumina.pdf p. 1 Fig. 1c"]
    assert wanted["alumina.pdf p. 2 Fig. 4b"] == ("fracture mirror",)


def test_cancel_stops_before_the_next_paper_and_writes_nothing_half(corpus, ds):
    import threading

    cancel = threading.Event()
    seen = []

    def progress(done, total, message):
        seen.append(message)
        if done == 1:
            cancel.set()

    summary = import_papers(
        ds, [corpus["one_column"], corpus["two_columns"]], task="fracture", progress=progress, cancel=cancel
    )
    assert summary.cancelled
    assert {p.file for p in item_provenance(ds).values()} <= {"alumina.pdf"}
    assert not any(p.file == "spinel.pdf" for p in item_provenance(ds).values())
    assert seen[0] == "reading alumina.pdf"


def test_missing_pdf_library_says_which_extra_to_install(corpus, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pypdfium2", None)
    with pytest.raises(PaperError, match=r"napari-fracto\[papers\]"):
        read_paper(corpus["one_column"])


def test_cli_import_then_info_per_paper_then_autolabel_sends_each_panels_context(corpus, tmp_path, capsys):
    from napari_fracto.cli import main
    from napari_fracto.testing.fake_openai_server import FakeOpenAIServer

    root = tmp_path / "cli-ds"
    code = main(
        [
            "dataset",
            "import-papers",
            str(root),
            str(corpus["one_column"]),
            str(corpus["encrypted"]),
            "--task",
            "fracture",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1  # one file was skipped
    assert "4 panel(s) added as unreviewed from 1 paper(s), 1 file(s) skipped" in out
    assert "skipped locked.pdf: the PDF is encrypted" in out
    assert main(["dataset", "info", str(root)]) == 0
    info = capsys.readouterr().out
    assert (
        "alumina.pdf: 4 panel(s) from 2 figure(s) (unreviewed 4); doi:10.5555/fracto.2024.0001; CC BY 4.0"
        in info
    )
    assert "    left out: 1 table, 1 vector drawing, 1 schematic, 1 photograph" in info

    def answer(body):  # the teacher answers from the panel's own line of the context it was sent
        panel = re.search(r"This panel \(\w\): ([^\\]*)", json.dumps(body["messages"]))
        said = panel.group(1) if panel else ""
        words = {
            "cleavage": "cleavage facets",
            "intergranular": "intergranular facets",
            "mirror": "fracture mirror",
        }
        labels = [name for word, name in words.items() if word in said]
        return json.dumps({"labels": [{"label": name, "confidence": 0.9} for name in labels]})

    with FakeOpenAIServer(answer=answer, models=("teacher",)) as server:
        code = main(
            [
                "dataset",
                "autolabel",
                str(root),
                "--task",
                "fracture",
                "--backend",
                "openai",
                "--model",
                "teacher",
                "--base-url",
                server.base_url,
            ]
        )
        sent = [json.dumps(r.body["messages"]) for r in server.chat_requests()]
    assert code == 0, capsys.readouterr().err
    assert len(sent) == 4
    assert all(len(r.image_urls()) == 1 for r in server.chat_requests())
    with Dataset.open(root) as ds:
        provenance = item_provenance(ds)
        for image_id, prov in provenance.items():
            review = ds.latest_review(image_id)
            assert review.status is Status.UNREVIEWED
            assert review.model == "teacher"
            assert review.request.context.notes == prov.context().notes
            (mine,) = [s for s in sent if f"This panel ({prov.panel}): {prov.caption_part}" in s]
            assert prov.caption in mine
            assert json.dumps(prov.excerpts[0])[1:-1] in mine
        labels = {provenance[i].where: ds.latest_review(i).labels for i in provenance}
    assert labels["alumina.pdf p. 1 Fig. 1b"] == ["cleavage facets"]
    assert labels["alumina.pdf p. 1 Fig. 1c"] == ["intergranular facets"]
    assert labels["alumina.pdf p. 2 Fig. 4b"] == ["fracture mirror"]
    assert labels["alumina.pdf p. 1 Fig. 1a"] == []
    assert (
        main(
            [
                "dataset",
                "autolabel",
                str(root),
                "--task",
                "fracture",
                "--backend",
                "openai",
                "--model",
                "teacher",
                "--base-url",
                "http://127.0.0.1:9",
            ]
        )
        == 0
    )  # nothing left awaiting an answer
    assert "0 prediction(s) stored" in capsys.readouterr().out


def test_paper_files_finds_pdfs_and_articles_in_folders(corpus):
    found = [p.name for p in collect.paper_files([corpus["one_column"].parent])]
    assert found == sorted(found) or set(found) >= {"alumina.pdf", "spinel.pdf", "article.xml"}
    assert {"alumina.pdf", "spinel.pdf", "article.xml", "locked.pdf"} <= set(found)


def test_a_panel_reviewed_without_a_model_answer_keeps_its_papers_context(corpus, ds):
    from napari_fracto.findings import Finding
    from napari_fracto.review import QueueEntry, ReviewQueue

    summary = import_papers(ds, [corpus["one_column"]], task="fracture")
    image_id = summary.papers[0].image_ids[1]  # Fig. 1b
    queue = ReviewQueue(ds, "fracture", [QueueEntry(image_id, "1b")], key="t", source="t")
    session = queue.session(0, labels=["cleavage facets", "river patterns"])
    session.add_label("river patterns")
    record = queue.save(0, session)
    assert record.status is Status.REVIEWED
    assert record.corrected == (Finding("river patterns"),)
    assert "This panel (b): cleavage facets with river patterns" in record.request.context.notes
    assert record.context == record.request.context
