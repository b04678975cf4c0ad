"""Reports as a reader gets them: the HTML in a real headless Chromium, the PDFs through poppler.

Needs Debian's `chromium` and `poppler-utils` (in .ci/run); each test skips, saying which, when absent.
Screenshots land in tests/_artifacts/ and, with NAPARI_FRACTO_UPDATE_DOCS=1, in docs/images/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_fracto.analysis import analyze_array
from napari_fracto.dataset import Dataset, Decision
from napari_fracto.findings import AnalysisContext, Box, Finding
from napari_fracto.overlay import label_colour
from napari_fracto.report import make_report
from napari_fracto.report.pdf import find_chromium
from napari_fracto.testing.scripted import ScriptedBackend
from napari_fracto.vocabulary import load_vocabulary

ARTIFACTS = Path(__file__).parent / "_artifacts"
DOCS_IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
FRACTURE = load_vocabulary("fracture")
LABELS = FRACTURE.names()


@pytest.fixture(scope="module")
def chromium() -> str:
    found = find_chromium()
    if found is None:
        pytest.skip("no Chromium/Chrome binary (Debian: apt-get install chromium) to render the HTML")
    return found


@pytest.fixture(scope="module")
def poppler() -> None:
    if not (shutil.which("pdftoppm") and shutil.which("pdftotext") and shutil.which("pdfinfo")):
        pytest.skip("poppler-utils (pdftoppm, pdftotext, pdfinfo) not installed to read the PDF back")


def _browser(chromium: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        chromium,
        "--headless",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
    ]
    if os.geteuid() == 0:
        command.insert(1, "--no-sandbox")
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _dom(chromium: str, page: Path, tmp_path: Path) -> str:
    done = _browser(chromium, tmp_path, "--dump-dom", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _screenshot(chromium: str, page: Path, tmp_path: Path, name: str, size: str = "1100,1500") -> np.ndarray:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    _browser(chromium, tmp_path, f"--window-size={size}", f"--screenshot={shot}", page.as_uri())
    assert shot.is_file(), f"Chromium wrote no screenshot of {page.name}"
    if os.environ.get("NAPARI_FRACTO_UPDATE_DOCS") == "1":  # refresh the docs' pictures on purpose only
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_IMAGES / name)
    return np.asarray(Image.open(shot).convert("RGB")).astype(int)


def _has_colour(rgb: np.ndarray, colour: str, tolerance: int = 60, at_least: int = 20) -> bool:
    target = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb - target).sum(axis=-1) < tolerance).sum()) >= at_least


def _pdf_pages(pdf: Path) -> int:
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    return int(next(line.split()[-1] for line in info.splitlines() if line.startswith("Pages:")))


def _pdf_text(pdf: Path, page: int | None = None) -> str:
    pages = ["-f", str(page), "-l", str(page)] if page else []
    done = subprocess.run(["pdftotext", *pages, str(pdf), "-"], capture_output=True, text=True, check=True)
    return " ".join(done.stdout.split())


def _pdf_pngs(pdf: Path, tmp_path: Path) -> list[np.ndarray]:
    prefix = tmp_path / pdf.stem
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf), str(prefix)], check=True, timeout=120)
    return [
        np.asarray(Image.open(p).convert("RGB")).astype(int)
        for p in sorted(tmp_path.glob(f"{pdf.stem}-*.png"))
    ]


def _answer(*labels, advice=()) -> str:
    items = [{"label": lab, "confidence": c, **({"bbox_2d": b} if b else {})} for lab, c, b in labels]
    return json.dumps({"labels": items, "advice": list(advice)})


def _sem_batch(shared_data: Path, tmp_path: Path) -> Path:
    """The shared SEM fractographs through the real pipeline with scripted answers, as a JSONL."""
    from napari_fracto.batch import load_analysis_images

    answers = [
        _answer((LABELS[0], 0.86, [80, 120, 520, 610]), (LABELS[3], 0.55, [560, 400, 930, 880])),
        _answer((LABELS[1], 0.72, [300, 200, 700, 650])),
        _answer((LABELS[0], 0.64, [100, 100, 450, 480]), (LABELS[5], 0.41, None)),
        "The image shows a fracture surface.",  # not the asked format: a failure with its reason
    ]
    context = AnalysisContext(material="alumina", sample_type="bend bar", magnification="2000x")
    lines = []
    for i, path in enumerate(sorted((shared_data / "fractography" / "ceramic-sem").glob("*.jpg"))[:6]):
        ((source, array),) = load_analysis_images(path)
        backend = ScriptedBackend(answers[i % len(answers)], model="Qwen/Qwen3-VL-8B-Instruct")
        result = analyze_array(array, task="fracture", backend=backend, source=source, context=context)
        lines.append(json.dumps(result.to_record()))
    out = tmp_path / "sem.jsonl"
    out.write_text("\n".join(lines) + "\n")
    return out


def test_batch_report_in_chromium_shows_images_labels_and_charts(chromium, shared_data, tmp_path):
    jsonl = _sem_batch(shared_data, tmp_path)
    made = make_report(jsonl, tmp_path / "batch.html")
    dom = _dom(chromium, made.pages[0], tmp_path)
    assert dom.count('<img src="data:image/jpeg') == 2 * 6  # a thumbnail and a picture per image
    assert dom.count('<img src="data:image/png') == 2  # label frequencies and confidences
    assert "<script" not in dom
    for text in (
        LABELS[0],
        LABELS[1],
        "Failures (",
        "answer unreadable",
        "alumina",
        "Qwen/Qwen3-VL-8B-Instruct",
    ):
        assert text in dom
    shot = _screenshot(chromium, made.pages[0], tmp_path, "report-batch.png")
    # the browser drew the embedded images: the label colours of bars and boxes are on screen
    assert _has_colour(shot, label_colour(LABELS[0], FRACTURE))
    assert _has_colour(shot, label_colour(LABELS[1], FRACTURE))
    # on a phone the page reflows to one column: the picture of the first image still shows its box colour
    phone = _screenshot(chromium, made.pages[0], tmp_path, "report-batch-phone.png", "390,2400")
    assert phone.shape[1] == 390
    assert _has_colour(phone, label_colour(LABELS[0], FRACTURE))


def test_image_report_pdf_from_chromium_reads_back_with_its_content(chromium, poppler, shared_data, tmp_path):
    from napari_fracto.cli import main
    from napari_fracto.testing.fake_openai_server import FakeOpenAIServer

    product = shared_data / "ptychography" / "ptychi-sim" / "g_raster_grid_product.h5"
    answer = _answer(
        ("Grid artifacts", 0.82, [150, 150, 850, 850]),
        ("Noisy artifacts", 0.35, None),
        advice=["Use position correction"],
    )
    jsonl = tmp_path / "grid.jsonl"
    with FakeOpenAIServer(answer=answer) as server:
        assert (
            main(
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
                    str(jsonl),
                    "--remove-ramp",
                    "--crop-scanned",
                    "--recon-settings",
                    "LSQML, 500 iterations",
                ]
            )
            == 0
        )
    (advice,) = json.loads(jsonl.read_text())["advice"]  # the advice vocabulary's name for what was said
    made = make_report(jsonl, tmp_path / "grid.html", pdf=tmp_path / "grid.pdf", pdf_engine="chromium")
    assert made.pdf_engine == "chromium"
    shot = _screenshot(chromium, made.pages[0], tmp_path, "report-image.png", "1100,1300")
    assert _has_colour(shot, label_colour("Grid artifacts", load_vocabulary("ptychography")))

    pages = _pdf_pages(made.pdf)
    assert pages >= 1
    text = _pdf_text(made.pdf)
    assert advice in text
    for expected in (
        "2 artifacts flagged",
        "Grid artifacts",
        "Noisy artifacts",
        "grid peak",
        "LSQML, 500 iterations",
        "Provenance",
        "phase ramp removed",
        "crop rows",
    ):
        assert expected in text, expected
    (first, *_rest) = _pdf_pngs(made.pdf, tmp_path)
    assert len(_rest) + 1 == pages
    assert _has_colour(first, label_colour("Grid artifacts", load_vocabulary("ptychography")), at_least=5)


def test_batch_pdfs_have_a_page_per_image_with_either_engine(chromium, poppler, shared_data, tmp_path):
    jsonl = _sem_batch(shared_data, tmp_path)
    names = [Path(json.loads(line)["source"]).name for line in jsonl.read_text().splitlines()]
    for engine in ("chromium", "matplotlib"):
        made = make_report(
            jsonl, tmp_path / f"{engine}.html", pdf=tmp_path / f"{engine}.pdf", pdf_engine=engine
        )
        pages = _pdf_pages(made.pdf)
        assert pages >= 1 + len(names), engine  # the summary, then one page (or more) per image
        assert len(_pdf_pngs(made.pdf, tmp_path)) == pages
        text = _pdf_text(made.pdf)
        assert (
            "Label frequencies" in text or engine == "matplotlib"
        )  # chart titles are pictures in matplotlib
        assert "Failures (" in text
        last_page = _pdf_text(made.pdf, pages)
        assert any(name in last_page for name in names[-2:]), engine  # images run to the end, in order
        for name in names:
            assert name in text, (engine, name)


def _eval_folder(shared_data: Path, tmp_path: Path) -> Path:
    from napari_fracto.batch import load_analysis_images
    from napari_fracto.evaluation.compare import make_config
    from napari_fracto.evaluation.report import write_reports
    from napari_fracto.evaluation.runner import evaluate

    ds = Dataset.create(tmp_path / "ds")
    truths = [[LABELS[0]], [LABELS[1]], [LABELS[0], LABELS[3]], [LABELS[2]]]
    for path, truth in zip(
        sorted((shared_data / "fractography" / "ceramic-sem").glob("*.jpg")), truths, strict=False
    ):
        ((_source, array),) = load_analysis_images(path)
        image_id = ds.add_image(array, task="fracture", name=path.name)
        boxes = [
            Finding(label, None, Box(100 + 200 * k, 150, 500 + 200 * k, 600)) for k, label in enumerate(truth)
        ]
        ds.save_review(image_id, "fracture", boxes, reviewer="ana", decisions=None)
        ds.set_split([image_id], "test")
    answers = {
        "base": _answer((LABELS[0], 0.9, None)),
        "tuned": _answer((LABELS[0], 0.9, None), (LABELS[1], 0.6, None)),
    }

    def factory(settings):
        return ScriptedBackend(answers[settings.model], model=settings.model)

    configs = [make_config({"model": name, "name": name}) for name in answers]
    out = tmp_path / "ds" / "evaluation"
    write_reports(evaluate(ds, configs, out, backend_factory=factory, resamples=200), out)
    ds.close()
    return out


def test_evaluation_report_in_chromium_and_pdf(chromium, poppler, shared_data, tmp_path):
    folder = _eval_folder(shared_data, tmp_path)
    made = make_report(folder, tmp_path / "eval.html", pdf=tmp_path / "eval.pdf")
    dom = _dom(chromium, made.pages[0], tmp_path)
    for text in (
        "Comparison",
        "micro-F1",
        "Per-label F1",
        "base: 3 image(s) wrong",
        "tuned: ",
        "missed:",
        "false positive:",
    ):
        assert text in dom, text
    assert dom.count('<figure class="error">') >= 5  # each model's errors, each with its image
    shot = _screenshot(chromium, made.pages[0], tmp_path, "report-evaluation.png", "1100,2200")
    assert _has_colour(shot, label_colour(LABELS[0], FRACTURE))  # the reviewer's boxes on the error images
    text = _pdf_text(made.pdf)
    assert "Per-label F1" in text
    assert "missed:" in text
    assert _pdf_pages(made.pdf) >= 2


def test_dataset_report_screenshot(chromium, shared_data, tmp_path):
    from napari_fracto.batch import load_analysis_images

    ds = Dataset.create(tmp_path / "ds")
    for i, path in enumerate(sorted((shared_data / "fractography" / "ceramic-sem").glob("*.jpg"))[:3]):
        ((source, array),) = load_analysis_images(path)
        image_id = ds.add_image(array, task="fracture", name=path.name)
        answer = _answer((LABELS[0], 0.8, [100, 100, 500, 500]), (LABELS[1], 0.45, [520, 480, 950, 900]))
        result = analyze_array(
            array,
            task="fracture",
            backend=ScriptedBackend(answer, model="Qwen/Qwen3-VL-2B-Instruct"),
            source=source,
        )
        corrected = [result.findings[0], Finding(LABELS[3], None, Box(600, 500, 1100, 1000))]
        ds.save_review(
            image_id,
            "fracture",
            corrected,
            prediction=result,
            reviewer="ana",
            decisions=[Decision.ACCEPTED, Decision.REJECTED],
            notes=f"river lines run to the origin ({i})",
        )
    ds.close()
    made = make_report(tmp_path / "ds", tmp_path / "ds.html")
    dom = _dom(chromium, made.pages[0], tmp_path)
    assert "river lines run to the origin (0)" in dom
    assert "rejected" in dom
    assert "images (after review)" in dom
    shot = _screenshot(chromium, made.pages[0], tmp_path, "report-dataset.png", "1100,1500")
    assert _has_colour(shot, label_colour(LABELS[3], FRACTURE))  # the reviewer's added label in the chart
