"""`napari-fracto analyze` over real files: every readable file gets a record, bad ones are skipped."""

from __future__ import annotations

import csv
import io
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_fracto.cli import main
from napari_fracto.testing.fake_openai_server import FakeOpenAIServer

ANSWER = json.dumps(
    {"labels": [{"label": "intergranular facets", "confidence": 0.9, "bbox_2d": [0, 0, 500, 500]}]}
)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tiny_local_model_writes_a_record_for_every_shared_image(tiny_vlm_dir, shared_data, tmp_path, capsys):
    fracto = shared_data / "fractography" / "ceramic-sem"
    ptycho = shared_data / "ptychography"
    inputs = [
        fracto,
        ptycho / "ptychi-sim" / "g_raster_grid_product.h5",
        ptycho / "ptychi-sim" / "a_baseline_object.npy",
        ptycho / "real" / "Run1084_recon3_postPC.npz",
    ]
    out = tmp_path / "results.jsonl"
    code = main(
        ["analyze", *map(str, inputs), "--task", "fracture", "--model", str(tiny_vlm_dir),
         "--device", "cpu", "--max-new-tokens", "8", "--max-image-tokens", "64",
         "--out", str(out), "--csv", str(tmp_path / "r.csv")]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    records = _records(out)
    sources = {r["source"] for r in records}
    for jpg in fracto.glob("*.jpg"):
        assert str(jpg) in sources
    assert any("g_raster_grid_product.h5" in s for s in sources)
    assert any("Run1084" in s for s in sources)
    for record in records:
        assert record["backend"] == "transformers"
        assert record["model"] == str(tiny_vlm_dir)
        assert record["prompt_version"]
        assert record["seconds"] > 0
        assert isinstance(record["raw_text"], str)
    with open(tmp_path / "r.csv") as fh:
        assert next(csv.reader(fh))[:2] == ["source", "label"]


def test_server_backend_keeps_several_requests_in_flight(tmp_path):
    for i in range(6):
        tifffile.imwrite(
            tmp_path / f"img{i}.tif", (np.arange(64 * 64).reshape(64, 64) * (i + 1)).astype(np.uint16)
        )
    out = tmp_path / "out.jsonl"
    with FakeOpenAIServer(answer=ANSWER, delay=0.3) as server:
        code = main(
            ["analyze", str(tmp_path), "--task", "fracture", "--backend", "openai",
             "--base-url", server.base_url, "--model", server.script.models[0],
             "--concurrency", "3", "--out", str(out)]
        )  # fmt: skip
        assert server.max_in_flight > 1
    assert code == 0
    records = _records(out)
    assert len(records) == 6
    finding = records[0]["findings"][0]
    assert finding["label"] == "intergranular facets"
    assert finding["box"] == [0.0, 0.0, 32.0, 32.0]  # grid 0-500 of a 64 px image, in pixels


def test_a_bad_file_is_reported_and_skipped_not_the_end_of_the_batch(tmp_path, capsys):
    (tmp_path / "broken.tif").write_bytes(b"this is not a tiff")
    tifffile.imwrite(
        tmp_path / "good.tif", np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    )
    out = tmp_path / "out.jsonl"
    with FakeOpenAIServer(answer=ANSWER) as server:
        code = main(
            ["analyze", str(tmp_path), "--task", "fracture", "--backend", "openai",
             "--base-url", server.base_url, "--model", server.script.models[0], "--out", str(out)]
        )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert "broken.tif" in err
    assert "1 image(s) analysed, 1 failed" in err
    assert [Path(r["source"]).name for r in _records(out)] == ["good.tif"]


def test_server_down_says_so_for_each_file(tmp_path, capsys):
    # a grey-level image: a two-level one (np.eye) is skipped as not a micrograph before any request
    tifffile.imwrite(tmp_path / "a.tif", (np.arange(64 * 64).reshape(64, 64) % 251).astype(np.uint8))
    url = f"http://127.0.0.1:{_free_port()}/v1"
    code = main(
        [
            "analyze",
            str(tmp_path),
            "--task",
            "fracture",
            "--backend",
            "openai",
            "--base-url",
            url,
            "--model",
            "m",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "a.tif" in err
    assert url.split("/v1")[0] in err


def test_remote_server_needs_consent_before_any_image_leaves(tmp_path, capsys, monkeypatch):
    tifffile.imwrite(tmp_path / "a.tif", np.eye(64, dtype=np.uint8))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)  # no terminal to ask
    code = main(
        ["analyze", str(tmp_path), "--task", "fracture", "--backend", "openai",
         "--base-url", "https://api.example.invalid/v1", "--model", "gpt"]
    )  # fmt: skip
    assert code == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_unknown_task_is_a_clear_error(tmp_path, capsys):
    assert main(["analyze", str(tmp_path), "--task", "histology"]) == 2
    err = capsys.readouterr().err
    assert "histology" in err
    assert "fracture" in err


@pytest.mark.slow
def test_console_entry_point_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "napari_fracto", "analyze", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--concurrency" in result.stdout


def test_in_context_examples_come_from_the_dataset_and_never_the_query_itself(tmp_path):
    from napari_fracto.dataset import Dataset
    from napari_fracto.findings import Finding

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:64, 0:64]
    query = (127 + 120 * np.sin(xx / 3.0) * np.cos(yy / 5.0)).astype(np.uint8)  # smooth: texture unlike noise
    others = [rng.integers(0, 255, (64, 64), dtype=np.uint8) for _ in range(3)]
    dataset = Dataset.create(tmp_path / "ds")
    ids = [dataset.add_image(a, task="fracture") for a in [query, *others]]
    for image_id in ids:
        dataset.save_review(image_id, "fracture", [Finding("cleavage facets")])
    dataset.set_split(ids, "train")
    dataset.close()
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "query.tif", np.rot90(query))  # a rotated copy of a training image
    with FakeOpenAIServer(answer=ANSWER) as server:
        code = main(
            ["analyze", str(folder), "--task", "fracture", "--backend", "openai",
             "--base-url", server.base_url, "--model", server.script.models[0],
             "--examples-from", str(tmp_path / "ds"), "--shots", "2"]
        )  # fmt: skip
        (request,) = server.chat_requests()
    assert code == 0
    roles = [m["role"] for m in request.body["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    sent = request.images()
    assert len(sent) == 3
    # The examples are other training images, never the stored original of the (rotated) query.
    examples = [np.asarray(Image.open(io.BytesIO(b)).convert("L").resize((64, 64))) for b in sent[:2]]
    stored = [query, *others]
    for pixels in examples:
        distances = [np.abs(pixels.astype(int) - a.astype(int)).mean() for a in stored]
        assert int(np.argmin(distances)) != 0
        assert min(distances) < 5  # it is one of the stored training images


# --- ptychography: display flags, evidence, reconstruction settings -------------------------------


def _padded_grid_npz(path: Path, pad: int = 40) -> Path:
    """The shipped raster-grid sample with unlit borders, as a PtychoPINN-style .npz with positions."""
    from importlib.resources import files

    with np.load(files("napari_fracto") / "sample_files" / "g_raster_grid.npz") as npz:
        np.savez(
            path,
            objectGuess=np.pad(npz["objectGuess"], pad, constant_values=1.0 + 0j),
            probeGuess=npz["probeGuess"],
            xcoords=npz["xcoords"] + pad,
            ycoords=npz["ycoords"] + pad,
        )
    return path


def _user_texts(request) -> list[str]:
    """The text parts of the request's last user message (the query)."""
    message = [m for m in request.body["messages"] if m["role"] == "user"][-1]
    return [part["text"] for part in message["content"] if part.get("type") == "text"]


def test_ptychography_flags_crop_remove_the_ramp_and_record_evidence(tmp_path, capsys):
    product = _padded_grid_npz(tmp_path / "grid.npz")
    (tmp_path / "recon.txt").write_text("LSQML, 40 epochs, raster scan, no position correction\n")
    out = tmp_path / "out.jsonl"
    answer = json.dumps(
        {
            "labels": [{"label": "No obvious artifacts", "bbox_2d": [0, 0, 1000, 1000]}],
            "advice": ["No changes needed"],
        }
    )
    with FakeOpenAIServer(answer=answer) as server:
        code = main(
            ["analyze", str(product), "--task", "ptychography", "--backend", "openai",
             "--base-url", server.base_url, "--model", server.script.models[0], "--out", str(out),
             "--remove-ramp", "--crop-scanned", "--advice", "--recon-settings", f"@{tmp_path / 'recon.txt'}"]
        )  # fmt: skip
        (request,) = [r for r in server.requests if r.path.endswith("/chat/completions")]
    assert code == 0, capsys.readouterr().err
    (record,) = _records(out)
    assert record["source"] == str(product)  # the file itself: a review opens the whole object from it
    assert record["image_shape"] == [224, 224]
    assert record["preprocessing"].startswith("cropped to the scanned region; phase ramp removed")
    assert "cropped to rows 39:185, columns 39:185" in record["preprocessing"]
    # the box covers the crop the model saw, on the pixels of the file
    assert record["findings"][0]["box"] == [39.0, 39.0, 185.0, 185.0]
    assert Image.open(io.BytesIO(request.images()[0])).size == (160, 160)  # 146 px crop, not 224 px
    assert record["evidence"]["flags"] == ["Grid artifacts"]
    assert record["evidence"]["scan_step_px"] == pytest.approx(8.0)  # from the positions in the file
    assert record["evidence"]["disagreements"][0].endswith("but the model did not flag Grid artifacts")
    assert (
        record["evidence"]["reconstruction_settings"]
        == "LSQML, 40 epochs, raster scan, no position correction"
    )
    assert any("Reconstruction settings:\nLSQML, 40 epochs" in t for t in _user_texts(request))
    assert record["advice"] == ["No changes needed"]


def test_crop_without_scan_positions_analyses_whole_and_says_so(tmp_path, capsys):
    obj = np.exp(1j * np.random.default_rng(0).random((64, 64))).astype(np.complex64)
    np.save(tmp_path / "object.npy", obj)  # a bare complex object: no probe, no positions
    out = tmp_path / "out.jsonl"
    with FakeOpenAIServer(answer=ANSWER) as server:
        code = main(
            ["analyze", str(tmp_path / "object.npy"), "--task", "ptychography", "--backend", "openai",
             "--base-url", server.base_url, "--model", server.script.models[0], "--out", str(out),
             "--crop-scanned", "--no-evidence"]
        )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    records = _records(out)
    assert records
    for record in records:
        assert "not cropped: the file has no scan positions or probe" in record["preprocessing"]
        assert record["evidence"] == {}
    assert "not cropped, their files hold no scan positions" in err


def test_missing_recon_settings_file_is_a_clear_error(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((32, 32), dtype=np.float32))
    code = main(
        ["analyze", str(tmp_path / "a.tif"), "--task", "ptychography", "--backend", "openai",
         "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--recon-settings", "@nowhere.txt"]
    )  # fmt: skip
    assert code == 2
    assert "--recon-settings @nowhere.txt: no such file" in capsys.readouterr().err
