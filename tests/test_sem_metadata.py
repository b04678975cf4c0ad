"""SEM instrument metadata as context, and the data bar left out of what the model is shown."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_fracto.batch import run_batch
from napari_fracto.databar import bar_rows
from napari_fracto.findings import AnalysisContext, Box
from napari_fracto.imaging import apply_palette
from napari_fracto.io.readers import read_file
from napari_fracto.io.sem_metadata import read_instrument
from napari_fracto.prompts import context_text
from napari_fracto.sem_context import sem_options
from napari_fracto.testing.scripted import ScriptedBackend

SEM = Path(__file__).resolve().parents[2] / "shared" / "data" / "sem-tiff"
ZEISS_1K = SEM / "test_tiff_Zeiss_SEM_1k.tif"
FEI_8 = SEM / "FEI-Helios-Ebeam-8bits.tif"
needs_shared = pytest.mark.skipif(not ZEISS_1K.is_file(), reason="../shared/data/sem-tiff is not here")
WHOLE_IMAGE_BOX = '{"labels": [{"label": "equiaxed dimples", "bbox_2d": [0, 0, 1000, 1000]}]}'


def micrograph_with_bar(height=300, width=400, bar=30, seed=0) -> np.ndarray:
    """A textured 'fracture surface' with an instrument bar: black, white text blocks and a ruler."""
    rng = np.random.default_rng(seed)
    image = rng.integers(40, 220, (height, width)).astype(np.uint8)
    image[height - bar :] = 0
    for x in range(10, width - 40, 60):  # "text"
        image[height - bar + 8 : height - bar + 18, x : x + 30 : 2] = 255
    image[height - 6, 20:120] = 255  # the scale bar's ruler
    return image


def tescan_tiff(path: Path, image: np.ndarray) -> Path:
    text = (
        "[MAIN]\r\nDevice=VEGA3 TESCAN\r\nMagnification=2000\r\nPixelSizeX=1.25e-07\r\n"
        "PixelSizeY=1.25e-07\r\n[SEM]\r\nHV=20000\r\nWD=0.0101\r\nDetector=SE\r\nStageTilt=15\r\n"
    )
    tifffile.imwrite(path, image, extratags=[(50431, "B", len(text), text.encode(), True)])
    return path


@needs_shared
def test_zeiss_metadata_reaches_the_reader_the_context_and_the_prompt():
    inst = read_instrument(ZEISS_1K)
    assert (inst.vendor, inst.instrument, inst.detector) == ("Zeiss", "Merlin-61-08", "HE-SE2")
    assert (inst.pixel_size_um, inst.magnification, inst.kv, inst.tilt_deg) == (2.615, 105, 25.0, 70.0)
    assert inst.wd_mm == pytest.approx(14.808)
    data, kwargs, _ = read_file(ZEISS_1K)[0]
    assert kwargs["metadata"]["instrument"]["magnification"] == 105
    options = sem_options(str(ZEISS_1K), data, AnalysisContext(material="Al 7075"))
    assert options["crop"].r1 == 768 - 77  # the Zeiss bar (scale bar, EHT, WD, Mag, logo) is cut off
    ctx = options["context"]
    assert ctx.material == "Al 7075"
    assert ctx.magnification == "105 X; 2.615 µm/pixel; field of view 2.678 mm × 1.807 mm"
    assert "25 kV" in ctx.instrument
    assert "HE-SE2 detector" in ctx.instrument
    text = context_text(ctx)
    assert "field of view 2.678 mm" in text
    assert "Instrument: Zeiss Merlin-61-08" in text


@needs_shared
def test_what_the_user_typed_wins_over_the_file():
    data = read_file(ZEISS_1K)[0][0]
    ctx = sem_options(str(ZEISS_1K), data, AnalysisContext(magnification="about 100x"))["context"]
    assert ctx.magnification == "about 100x"
    assert ctx.instrument  # still filled: the user left it empty


@needs_shared
def test_fei_helios_metadata_and_its_stated_data_bar():
    inst = read_instrument(FEI_8)
    assert inst.vendor == "FEI/Thermo"
    assert inst.pixel_size_um == pytest.approx(3.3724)
    assert inst.kv == 5.0
    assert inst.wd_mm == pytest.approx(4.03466)
    assert inst.detector == "ETD SE"
    assert inst.bar_rows == 29
    data = read_file(FEI_8)[0][0]
    assert sem_options(str(FEI_8), data, None)["crop"].r1 == 471 - 29
    assert read_instrument(SEM / "FEI-Helios-navcam-with-no-IRBeam-bad-floats.tif").kv is None  # no crash


@needs_shared
def test_zeiss_palette_tiff_is_shown_in_its_colours(tmp_path):
    indices = np.arange(64, dtype=np.uint8).reshape(8, 8)
    palette = np.zeros((3, 256), np.uint16)
    palette[0] = np.arange(256)[::-1] * 257  # red runs backwards: not the raw indices
    path = tmp_path / "indexed.tif"
    tifffile.imwrite(path, indices, photometric="palette", colormap=palette)
    data, kwargs, _ = read_file(path)[0]
    assert kwargs["rgb"] is True
    assert data[0, 0].tolist() == [255, 0, 0]
    assert data[7, 7].tolist() == [255 - 63, 0, 0]
    grey = apply_palette(indices, np.tile(np.arange(256) * 257, (3, 1)))
    assert grey.dtype == np.uint8
    assert grey.ndim == 2


def test_tescan_tag_gives_the_scale_and_the_context(tmp_path):
    path = tescan_tiff(tmp_path / "tescan.tif", micrograph_with_bar())
    inst = read_instrument(path)
    assert (inst.vendor, inst.instrument, inst.detector) == ("Tescan", "VEGA3 TESCAN", "SE")
    assert (inst.magnification, inst.kv, inst.tilt_deg) == (2000, 20.0, 15.0)
    assert inst.pixel_size_um == pytest.approx(0.125)
    assert inst.wd_mm == pytest.approx(10.1)
    _, kwargs, _ = read_file(path)[0]
    assert kwargs["scale"] == pytest.approx((0.125, 0.125))
    assert kwargs["units"] == ("µm", "µm")


def test_jeol_and_hitachi_sidecars_beside_a_png(tmp_path):
    Image.fromarray(micrograph_with_bar()).save(tmp_path / "jeol.png")
    (tmp_path / "jeol.txt").write_text(
        "$CM_FORMAT JEOL/SEM\n$CM_INSTRUMENT JSM-7001F\n$CM_MAG 500\n$CM_ACCEL_VOLT 15.00\n"
        "$CM_SIGNAL SEI\n$SM_MICRON_BAR 50\n$SM_MICRON_MARKER 125\n$SM_WD 10\n"
    )
    jeol = read_instrument(tmp_path / "jeol.png")
    assert (jeol.vendor, jeol.instrument, jeol.detector, jeol.magnification) == (
        "JEOL",
        "JSM-7001F",
        "SEI",
        500,
    )
    assert jeol.pixel_size_um == pytest.approx(0.4)
    assert (jeol.kv, jeol.wd_mm) == (15.0, 10.0)
    _, kwargs, _ = read_file(tmp_path / "jeol.png")[0]
    assert kwargs["scale"] == pytest.approx((0.4, 0.4))
    assert kwargs["units"] == ("µm", "µm")
    Image.fromarray(micrograph_with_bar()).save(tmp_path / "hitachi.bmp")
    (tmp_path / "hitachi.txt").write_text(
        "[SemImageFile]\r\nInstructName=SU3500\r\nMagnification=1000\r\n"
        "AcceleratingVoltage=15000 Volt\r\nWorkingDistance=8100 um\r\nPixelSize=99.2188\r\n"
        "SignalName=SE(U)\r\n"
    )
    hitachi = read_instrument(tmp_path / "hitachi.bmp")
    assert (hitachi.vendor, hitachi.instrument, hitachi.detector) == ("Hitachi", "SU3500", "SE(U)")
    assert (hitachi.magnification, hitachi.kv) == (1000, 15.0)
    assert hitachi.wd_mm == pytest.approx(8.1)
    assert hitachi.pixel_size_um == pytest.approx(0.0992188)


def test_malformed_or_unrelated_sidecars_add_nothing(tmp_path):
    Image.fromarray(micrograph_with_bar()).save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("Figure 3: cleavage of a Ti alloy")
    assert read_instrument(tmp_path / "a.png") is None
    (tmp_path / "a.txt").write_text("$CM_MAG lots\n$SM_MICRON_MARKER 0\n$SM_MICRON_BAR 50\n")
    assert read_instrument(tmp_path / "a.png") is None


def test_bar_detection_leaves_ordinary_images_alone():
    rng = np.random.default_rng(1)
    assert bar_rows(rng.integers(0, 255, (300, 400), dtype=np.uint8)) == 0
    assert bar_rows(np.zeros((300, 400), np.uint8)) == 0  # blank: no boundary, no bar
    assert bar_rows(rng.random((300, 400)).astype(np.float32)) == 0  # float phase maps: never
    assert bar_rows(micrograph_with_bar()) == 30
    assert bar_rows(np.stack([micrograph_with_bar()] * 3, axis=-1)) == 30  # RGB


def test_the_model_never_sees_the_bar_and_boxes_stay_in_image_pixels(tmp_path):
    path = tescan_tiff(tmp_path / "tescan.tif", micrograph_with_bar())
    backend = ScriptedBackend(WHOLE_IMAGE_BOX)
    out = tmp_path / "out.jsonl"
    summary = run_batch([path], backend=backend, task="fracture", out_jsonl=out)
    assert summary.failures == []
    sent = next(p for t in backend.requests[0].turns for p in t.parts if isinstance(p, Image.Image))
    assert sent.width / sent.height == pytest.approx(400 / 270, rel=0.05)
    result = summary.results[0]
    assert result.findings[0].box == Box(0, 0, 400, 270)  # the whole surface, not the bar
    record = json.loads(out.read_text().splitlines()[0])
    request = record["request"]
    assert request["crop"] == {"r0": 0, "r1": 270, "c0": 0, "c1": 400}
    assert "field of view 50 × 33.75 µm" in request["context"]["magnification"]
    assert "20 kV" in request["context"]["instrument"]
    prompt = " ".join(p for t in backend.requests[0].turns for p in t.parts if isinstance(p, str))
    assert "field of view 50 × 33.75 µm" in prompt
    assert "data bar left out" in record["preprocessing"]


def test_a_bar_without_a_pixel_size_says_its_scale_was_not_read(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, micrograph_with_bar())
    summary = run_batch([path], backend=ScriptedBackend(WHOLE_IMAGE_BOX), task="fracture")
    text = summary.results[0].preprocessing
    assert "data bar left out" in text
    assert "scale is not read" in text
