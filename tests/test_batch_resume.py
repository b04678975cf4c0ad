"""Resumable, streaming batches (issue 11): `--resume` skips exactly what the results file holds, asked the
same way; a kill mid-write never leaves a line that stops the next run; progress shows rate and time left."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_fracto.batch import run_batch
from napari_fracto.cli import main
from napari_fracto.results_log import ResultsLog, repair_tail
from napari_fracto.testing.fake_openai_server import FakeOpenAIServer
from napari_fracto.testing.scripted import ScriptedBackend

ANSWER = '{"labels": [{"label": "equiaxed dimples", "confidence": 0.8, "bbox_2d": [0, 0, 500, 500]}]}'


def _folder(root: Path, n: int) -> Path:
    root.mkdir(exist_ok=True)
    rng = np.random.default_rng(n)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (24, 32), dtype=np.uint8)).save(root / f"im{i:02d}.png")
    return root


def _sources(path: Path) -> list[str]:
    return [json.loads(line)["source"] for line in path.read_text(encoding="utf-8").splitlines()]


def test_resume_skips_exactly_what_the_file_holds(tmp_path):
    folder = _folder(tmp_path / "in", 6)
    out = tmp_path / "results.jsonl"
    first = ScriptedBackend(ANSWER)
    run_batch(sorted(folder.glob("*.png"))[:4], backend=first, task="fracture", out_jsonl=out)
    assert len(first.requests) == 4

    again = ScriptedBackend(ANSWER)
    summary = run_batch([folder], backend=again, task="fracture", out_jsonl=out, resume=True)
    assert (summary.analysed, summary.skipped) == (2, 4)
    assert len(again.requests) == 2
    sources = _sources(out)
    assert sorted(sources) == sorted(str(p) for p in folder.glob("*.png"))  # each image exactly once

    done = ScriptedBackend(ANSWER)
    assert run_batch([folder], backend=done, task="fracture", out_jsonl=out, resume=True).skipped == 6
    assert done.requests == []


@pytest.mark.parametrize(
    ("change", "value"),
    [("tiles", 2), ("max_new_tokens", 99), ("advice", True), ("model", "another-model")],
)
def test_a_request_asked_differently_is_not_skipped(tmp_path, change, value):
    folder = _folder(tmp_path / "in", 3)
    out = tmp_path / "results.jsonl"
    run_batch([folder], backend=ScriptedBackend(ANSWER), task="fracture", out_jsonl=out)
    backend = ScriptedBackend(ANSWER, model=value if change == "model" else "script")
    options = {} if change == "model" else {change: value}
    summary = run_batch([folder], backend=backend, task="fracture", out_jsonl=out, resume=True, **options)
    assert (summary.analysed, summary.skipped) == (3, 0)
    assert len(_sources(out)) == 6  # appended, nothing lost


def test_a_torn_last_line_is_cut_off_with_a_message_and_its_image_asked_again(tmp_path):
    folder = _folder(tmp_path / "in", 4)
    out = tmp_path / "results.jsonl"
    run_batch([folder], backend=ScriptedBackend(ANSWER), task="fracture", out_jsonl=out)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])  # killed while writing the 4th
    notices: list[str] = []
    backend = ScriptedBackend(ANSWER)
    summary = run_batch(
        [folder], backend=backend, task="fracture", out_jsonl=out, resume=True, on_notice=notices.append
    )
    assert (summary.analysed, summary.skipped) == (1, 3)
    assert any("half-written last line" in n for n in notices)
    assert sorted(_sources(out)) == sorted(str(p) for p in folder.glob("*.png"))  # every line parses


def test_appending_without_resume_also_repairs_a_torn_tail(tmp_path):
    out = tmp_path / "results.jsonl"
    out.write_text('{"source": "a"}\n{"source": "b", "lab')
    with ResultsLog(out):
        pass
    assert out.read_text() == '{"source": "a"}\n'
    assert repair_tail(out) == 0  # a whole file is left alone


def test_unreadable_lines_in_the_middle_are_reported_and_never_stop_the_run(tmp_path):
    folder = _folder(tmp_path / "in", 3)
    out = tmp_path / "results.jsonl"
    run_batch([folder], backend=ScriptedBackend(ANSWER), task="fracture", out_jsonl=out)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text(lines[0] + "not json at all\n" + '{"source": 1}\n' + "".join(lines[1:]))
    notices: list[str] = []
    summary = run_batch(
        [folder], backend=ScriptedBackend(ANSWER), task="fracture", out_jsonl=out, resume=True,
        on_notice=notices.append,
    )  # fmt: skip
    assert (summary.analysed, summary.skipped) == (0, 3)
    assert any("2 line(s) are not readable" in n for n in notices)


def test_streaming_keeps_no_results_in_memory_and_writes_the_csv_as_it_goes(tmp_path):
    folder = _folder(tmp_path / "in", 5)
    seen = []
    summary = run_batch(
        [folder], backend=ScriptedBackend(ANSWER), task="fracture", out_jsonl=tmp_path / "r.jsonl",
        out_csv=tmp_path / "r.csv", keep_results=False, on_result=seen.append, concurrency=3,
    )  # fmt: skip
    assert summary.results == []
    assert summary.analysed == len(seen) == 5
    rows = (tmp_path / "r.csv").read_text().splitlines()
    assert len(rows) == 6
    assert rows[1].split(",")[1] == "equiaxed dimples"


def test_resume_without_an_output_file_is_refused(tmp_path, capsys):
    folder = _folder(tmp_path / "in", 1)
    assert main(["analyze", str(folder), "--task", "fracture", "--resume", "--backend", "openai",
                 "--model", "m", "--base-url", "http://127.0.0.1:9/v1"]) == 2  # fmt: skip
    assert "--resume needs --out" in capsys.readouterr().err


def _analyze_args(folder: Path, out: Path, server: FakeOpenAIServer) -> list[str]:
    return ["analyze", str(folder), "--task", "fracture", "--out", str(out), "--backend", "openai",
            "--model", "fake-model", "--base-url", server.base_url]  # fmt: skip


def test_a_killed_cli_batch_resumes_where_it_stopped(tmp_path, capsys):
    folder = _folder(tmp_path / "in", 12)
    out = tmp_path / "results.jsonl"
    with FakeOpenAIServer(answer=ANSWER, delay=0.15) as server:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            [sys.executable, "-m", "napari_fracto.cli", *_analyze_args(folder, out, server)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 3):
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        whole = [line for line in out.read_text().split("\n")[:-1] if line]  # a torn tail has no newline
        assert 3 <= len(whole) < 12  # killed part-way
        asked_before = len(server.requests)
        assert main([*_analyze_args(folder, out, server), "--resume"]) == 0
        asked_after = len(server.requests) - asked_before
    sources = _sources(out)
    assert sorted(sources) == sorted(str(p) for p in folder.glob("*.png"))  # each image exactly once
    assert asked_after == 12 - len(whole)  # only what was missing was asked
    assert "already in" in capsys.readouterr().err


def test_progress_shows_rate_and_time_left(tmp_path, capsys):
    folder = _folder(tmp_path / "in", 4)
    with FakeOpenAIServer(answer=ANSWER, delay=0.05) as server:
        assert main(_analyze_args(folder, tmp_path / "r.jsonl", server)) == 0
    err = capsys.readouterr().err
    assert re.search(r"4/4 \[\d\d:\d\d<\d\d:\d\d, +\d+(\.\d+)?(file/s|s/file)\]", err), err[-400:]
