"""`napari-fracto report`: what a reader of the HTML and PDF finds, from a JSONL, a dataset and an eval.

Results come from the real pipeline (`analyze_array` with a scripted backend, `napari-fracto analyze`
over HTTP, `evaluation.runner.evaluate`); pages are read back with an HTML parser. What a browser shows
is checked in test_report_browser.py.
"""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from PIL import Image

from napari_fracto.analysis import analyze_array
from napari_fracto.cli import main
from napari_fracto.dataset import Dataset, Decision
from napari_fracto.findings import AnalysisContext, Box, Finding
from napari_fracto.overlay import label_colour
from napari_fracto.report import make_report
from napari_fracto.report.redact import Redactor
from napari_fracto.testing.scripted import ScriptedBackend
from napari_fracto.vocabulary import load_vocabulary

FRACTURE = load_vocabulary("fracture")
LABELS = FRACTURE.names()
HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>"


class Page(HTMLParser):
    """The tags, attributes and visible text of a page, as a reader's browser gets them."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.chunks: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data):
        self.chunks.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.chunks).split())

    def images(self) -> list[Image.Image]:
        out = []
        for tag, attrs in self.tags:
            if tag == "img":
                assert attrs["src"].startswith("data:image/"), attrs["src"][:40]
                out.append(Image.open(io.BytesIO(base64.b64decode(attrs["src"].split(",", 1)[1]))))
        return out


def _texture(seed: int, shape=(120, 160)) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    smooth = gaussian_filter(np.random.default_rng(seed).random(shape), 3)
    return ((smooth - smooth.min()) / np.ptp(smooth) * 255).astype(np.uint8)


def _answer(*labels: tuple[str, float | None, list[int] | None], advice=()) -> str:
    items = []
    for label, confidence, box in labels:
        item = {"label": label}
        if confidence is not None:
            item["confidence"] = confidence
        if box is not None:
            item["bbox_2d"] = box
        items.append(item)
    return json.dumps({"labels": items, "advice": list(advice)})


def _write_jsonl(folder: Path, answers: list[str], *, task="fracture", context=None, model="m") -> Path:
    """PNG images in `folder` analysed by the real pipeline with scripted answers, one JSONL line each."""
    lines = []
    for i, answer in enumerate(answers):
        path = folder / f"img{i}.png"
        array = _texture(i)
        Image.fromarray(array).save(path)
        result = analyze_array(
            array,
            task=task,
            backend=ScriptedBackend(answer, model=model),
            source=str(path),
            context=context or AnalysisContext(),
        )
        lines.append(json.dumps(result.to_record()))
    out = folder / "results.jsonl"
    out.write_text("\n".join(lines) + "\n")
    return out


def _sections(page: Page) -> list[str]:
    return [attrs["id"] for tag, attrs in page.tags if tag == "section" and "image" in attrs.get("class", "")]


def test_one_image_report_shows_the_picture_with_boxes_labels_and_provenance(tmp_path):
    answer = _answer((LABELS[0], 0.87, [100, 100, 600, 700]), (LABELS[1], None, None))
    context = AnalysisContext(material="Ti-6Al-4V", sample_type="fatigue coupon", magnification="500x")
    jsonl = _write_jsonl(tmp_path, [answer], context=context, model="org/served-model")
    made = make_report(jsonl, tmp_path / "out" / "report.html")

    assert made.pages == [tmp_path / "out" / "report.html"]
    page = Page(made.pages[0].read_text())
    text = page.text
    assert f"Found: {LABELS[0]}, {LABELS[1]}" in text  # the verdict, in vocabulary order
    assert "0.87" in text
    assert "box" in text
    assert "whole image" in text
    for shown in ("Ti-6Al-4V", "fatigue coupon", "500x", "org/served-model", "scripted", "image as stored"):
        assert shown in text
    assert "prompt version" in text
    assert "vocabulary version" in text
    assert FRACTURE.version in text
    (picture,) = page.images()  # one image: no thumbnail grid, no summary
    assert picture.size == (480, 360)  # a small image is enlarged 3x so its boxes can be read
    # the box is drawn in napari's colour of the label, on the grid's 100..600 of the width
    colour = np.array([int(label_colour(LABELS[0], FRACTURE)[i : i + 2], 16) for i in (1, 3, 5)])
    rgb = np.asarray(picture.convert("RGB")).astype(int)
    left_edge = rgb[int(0.4 * 360) : int(0.6 * 360), 48]  # x = 0.1 * 480, away from the label text
    assert np.abs(left_edge - colour).sum(axis=1).min() < 60
    assert not any(tag == "script" for tag, _ in page.tags)


def test_hostile_model_output_is_text_never_markup(tmp_path):
    answer = _answer((HOSTILE, 0.5, [0, 0, 500, 500]), (LABELS[0], 0.9, None))
    jsonl = _write_jsonl(tmp_path, [answer + HOSTILE])
    html = make_report(jsonl, tmp_path / "r.html").pages[0].read_text()
    page = Page(html)
    assert not any(tag == "script" for tag, _ in page.tags)
    assert not any(k.startswith("on") for _, attrs in page.tags for k in attrs)
    assert [a["src"][:5] for t, a in page.tags if t == "img"] == ["data:"]  # no src=x image
    assert "<script>document.title" in page.text  # shown as the text it is (the raw answer)
    assert "default-src 'none'" in html  # and the page forbids scripts even if escaping failed


def test_shared_reports_show_file_names_not_local_paths_unless_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-this-is-not-for-reports-123456")
    answer = _answer((LABELS[0], 0.9, None))
    jsonl = _write_jsonl(tmp_path, [answer, answer])
    # a reviewer note-like string in the raw answer: a key pasted by mistake, and a home path
    record = json.loads(jsonl.read_text().splitlines()[0])
    record["raw_text"] += " sk-pastedkeyABCDEFGH12345 /home/someone/secret/plan.txt"
    jsonl.write_text(json.dumps(record) + "\n" + jsonl.read_text().splitlines()[1] + "\n")

    shared = make_report(jsonl, tmp_path / "shared.html").pages[0].read_text()
    assert str(tmp_path) not in shared
    assert "img0.png" in shared
    assert "img1.png" in shared
    assert "sk-pastedkey" not in shared
    assert "sk-this-is" not in shared
    assert "[hidden]" in shared
    assert "/home/someone" not in shared
    assert "plan.txt" in shared

    full = make_report(jsonl, tmp_path / "full.html", include_paths=True).pages[0].read_text()
    assert str(tmp_path / "img0.png") in full
    assert "sk-pastedkey" not in full  # keys never, even with paths


def test_batch_report_summarises_and_paginates(tmp_path):
    answers = [
        _answer((LABELS[0], 0.9, [0, 0, 400, 400]), (LABELS[1], 0.3, None)),
        _answer((LABELS[0], 0.6, None)),
        _answer((LABELS[0], 0.7, [500, 500, 900, 900])),
        "I cannot tell, sorry.",  # unreadable: a failure with its reason
        _answer((LABELS[2], 0.5, None)),
    ]
    jsonl = _write_jsonl(tmp_path, answers)
    (tmp_path / "img4.png").unlink()  # an image moved away after analysis
    with open(jsonl, "a") as fh:
        fh.write("{not json\n")
    made = make_report(jsonl, tmp_path / "batch.html", per_page=2)

    assert [p.name for p in made.pages] == ["batch.html", "batch-2.html", "batch-3.html"]
    first, second, third = (Page(p.read_text()) for p in made.pages)
    # the summary (over all images) is on the first page only
    assert "Label frequencies" in " ".join(a.get("alt", "") for _, a in first.tags)
    freq = first.text.split("images (model)")[1]
    assert freq.startswith(f" {LABELS[0]} 3 ")  # 3 images with the first label
    assert "Confidence per label" in " ".join(a.get("alt", "") for _, a in first.tags)
    assert "Summary" not in second.text
    failures = first.text.split("Failures (")[1]
    assert failures.startswith("3)")
    assert "answer unreadable" in failures
    assert "image not found" in failures
    assert "not JSON" in failures
    # each page has its own images: thumbnails plus details, linked between pages
    assert _sections(first) == ["image-0", "image-1"]
    assert _sections(second) == ["image-2", "image-3"]
    assert _sections(third) == ["image-4"]
    assert len(first.images()) == 2 + 2 * 2  # two charts, then thumbnail + detail per image
    assert {a["href"] for t, a in second.tags if t == "a" and a["href"].endswith(".html")} >= {"batch.html"}
    assert "image not shown" in third.text or "image not found" in third.text


def test_two_backends_on_one_image_are_a_disagreement(tmp_path):
    lines = []
    for i, answers in enumerate([{"model-a": LABELS[0], "model-b": LABELS[3]}, {"model-a": LABELS[0]}]):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(_texture(i)).save(path)
        for model, label in answers.items():
            backend = ScriptedBackend(_answer((label, 0.9, None)), model=model)
            result = analyze_array(_texture(i), task="fracture", backend=backend, source=str(path))
            lines.append(json.dumps(result.to_record()))
    jsonl = tmp_path / "both.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")
    page = Page(make_report(jsonl, tmp_path / "d.html").pages[0].read_text())
    assert _sections(page) == ["image-0", "image-1"]  # one section per image, the last answer shown
    rows = page.text.split("Disagreements (")[1]
    assert rows.startswith("1)")
    assert f"model-a said {LABELS[0]}; model-b said {LABELS[3]}" in rows


def test_ptychography_evidence_and_advice_are_in_the_report(tmp_path, shared_data, capsys):
    from napari_fracto.testing.fake_openai_server import FakeOpenAIServer

    product = shared_data / "ptychography" / "ptychi-sim" / "g_raster_grid_product.h5"
    answer = _answer(("Grid artifacts", 0.8, [200, 200, 800, 800]), advice=["Use position correction"])
    out = tmp_path / "p.jsonl"
    with FakeOpenAIServer(answer=answer) as server:
        code = main(
            [
                "analyze",
                str(product),
                "--task",
                "ptychography",
                "--backend",
                "openai",
                "--advice",
                "--base-url",
                server.base_url,
                "--model",
                server.script.models[0],
                "--out",
                str(out),
                "--remove-ramp",
                "--crop-scanned",
                "--recon-settings",
                "LSQML, 200 iterations",
            ]
        )
    assert code == 0, capsys.readouterr().err
    record = json.loads(out.read_text())
    page = Page(make_report(out, tmp_path / "p.html").pages[0].read_text())
    text = page.text
    assert "1 artifact flagged: Grid artifacts" in text
    assert "Suggested fixes" in text
    assert record["advice"][0] in text
    assert "Evidence" in text
    assert "grid peak" in text
    assert "phase ramp:" in text
    assert "cropped to the scanned region" in text
    assert "phase ramp removed" in text
    assert "LSQML, 200 iterations" in text
    assert "scan step" in text
    assert "probe" in text
    assert "advice asked yes" in text
    assert page.images(), "the reconstruction is shown"


def _reviewed_dataset(root: Path) -> Dataset:
    """Three images with model predictions; two reviewed (one rejected finding, one added label)."""
    ds = Dataset.create(root)
    for i in range(3):
        array = _texture(10 + i)
        image_id = ds.add_image(array, task="fracture", name=f"part{i}.png")
        answer = _answer((LABELS[0], 0.8, [100, 100, 500, 500]), (LABELS[1], 0.4, [500, 500, 900, 900]))
        result = analyze_array(array, task="fracture", backend=ScriptedBackend(answer), source=f"part{i}.png")
        ds.save_prediction(image_id, result)
        if i < 2:
            corrected = [result.findings[0], Finding(LABELS[4], None, Box(5, 5, 40, 40))]
            ds.save_review(
                image_id,
                "fracture",
                corrected,
                prediction=result,
                reviewer="ana",
                decisions=[Decision.ACCEPTED, Decision.REJECTED],
                notes=f"checked under the SEM {i}",
            )
            ds.set_split([image_id], "test" if i == 0 else "train")
    return ds


def test_dataset_report_shows_reviewer_decisions_and_counts_after_review(tmp_path):
    ds = _reviewed_dataset(tmp_path / "ds")
    ds.close()
    page = Page(make_report(tmp_path / "ds", tmp_path / "ds.html").pages[0].read_text())
    text = page.text
    assert _sections(page) == ["image-0", "image-1"]  # reviewed items only
    assert "checked under the SEM 0" in text
    assert "ana" in text
    assert "accepted" in text
    assert "rejected" in text
    assert f"added {LABELS[4]}" in text
    assert f"removed {LABELS[1]}" in text
    assert "images (after review)" in text
    assert "solid: the model's boxes; dashed: the reviewer's correction" in text
    assert "part0.png" in text
    assert str(tmp_path) not in page.text

    split = Page(make_report(tmp_path / "ds", tmp_path / "test.html", split="test").pages[0].read_text())
    assert _sections(split) == ["image-0"]
    assert "part0.png" in split.text
    assert "part1.png" not in split.text
    everything = Page(
        make_report(tmp_path / "ds", tmp_path / "all.html", all_reviews=True).pages[0].read_text()
    )
    assert len(_sections(everything)) == 3


def test_evaluation_report_has_the_table_chart_f1_and_errors_with_images(tmp_path):
    from napari_fracto.evaluation.compare import make_config
    from napari_fracto.evaluation.report import table_rows, write_reports
    from napari_fracto.evaluation.runner import evaluate

    ds = Dataset.create(tmp_path / "ds")
    truth = [[LABELS[0]], [LABELS[1]], [LABELS[0], LABELS[2]]]
    for i, labels in enumerate(truth):
        image_id = ds.add_image(_texture(i), task="fracture", name=f"test{i}.png")
        ds.save_review(
            image_id, "fracture", [Finding(x, None, Box(10, 10, 60, 60)) for x in labels], reviewer="t"
        )
        ds.set_split([image_id], "test")
    answer = _answer((LABELS[0], 0.9, None))  # right once, a false positive once, a miss once

    def factory(settings):
        return ScriptedBackend(answer, model=settings.model)

    configs = [
        make_config({"model": "base", "name": "base"}),
        make_config({"model": "tuned", "name": "tuned"}),
    ]
    run = evaluate(ds, configs, tmp_path / "ds" / "evaluation", backend_factory=factory, resamples=50)
    write_reports(run, tmp_path / "ds" / "evaluation")
    ds.close()

    made = make_report(tmp_path / "ds" / "evaluation", tmp_path / "eval.html")
    page = Page(made.pages[0].read_text())
    text = page.text
    expected = table_rows(run)
    assert expected[0]["micro-F1"] in text
    assert "[" in expected[0]["micro-F1"]
    assert "Per-label F1" in text
    alts = [a.get("alt", "") for t, a in page.tags if t == "img"]
    assert "Comparison chart" in alts
    assert "Per-label F1 chart" in alts
    assert "base: 2 image(s) wrong, 2 shown" in text
    assert "tuned: 2 image(s) wrong" in text
    assert f"false positive: {LABELS[0]}" in text
    assert f"missed: {LABELS[1]}" in text
    assert f"missed: {LABELS[2]}" in text
    assert sum(a.startswith("test") for a in alts) == 4  # each model's two errors, with their images
    assert str(tmp_path) not in made.pages[0].read_text()


def test_pdf_without_a_browser_is_drawn_by_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no chromium anywhere
    from napari_fracto.report.pdf import find_chromium

    assert find_chromium() is None
    jsonl = _write_jsonl(tmp_path, [_answer((LABELS[0], 0.9, [0, 0, 500, 500]))] * 3)
    made = make_report(jsonl, tmp_path / "r.html", pdf=tmp_path / "r.pdf")
    assert made.pdf_engine == "matplotlib"
    data = (tmp_path / "r.pdf").read_bytes()
    assert data.startswith(b"%PDF")
    from matplotlib.backends.backend_pdf import PdfPages  # noqa: F401  (the engine a user without Chromium has)

    assert data.count(b"/Type /Page\n") + data.count(b"/Type /Page ") + data.count(b"/Type/Page") >= 4


def test_cli_report_errors_are_one_clear_line(tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    assert main(["report", str(tmp_path / "folder"), "--out", str(tmp_path / "r.html")]) == 2
    assert "neither a corrections dataset nor an `eval` output folder" in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text("")
    assert main(["report", str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "r.html")]) == 2
    assert "holds no records" in capsys.readouterr().err
    ds = _reviewed_dataset(tmp_path / "ds")
    ds.close()
    assert main(["report", str(tmp_path / "ds"), "--out", str(tmp_path / "r.html"), "--split", "val"]) == 2
    assert "no reviewed images in the val split" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "ds"), "--out", str(tmp_path / "r.html")]) == 0
    assert "wrote" in capsys.readouterr().err


def test_redactor_keeps_model_ids_and_urls_but_not_local_paths():
    r = Redactor()
    assert r.text("Qwen/Qwen3-VL-2B-Instruct at http://127.0.0.1:8000/v1") == (
        "Qwen/Qwen3-VL-2B-Instruct at http://127.0.0.1:8000/v1"
    )
    assert r.text("cannot read /data/beamline/run 7/scan.h5: bad") == "cannot read scan.h5: bad"
    assert r.text(r"C:\Users\ana\images\x.tif missing") == "x.tif missing"
    assert r.name("/srv/models/my-lora") == "my-lora"
    assert r.name("/a/b/stack.tif [plane 3]") == "stack.tif [plane 3]"
    assert Redactor(include_paths=True).text("/a/b/c.png") == "/a/b/c.png"
