"""Two ranks under torchrun (gloo, CPU) on the tiny model: the multi-GPU path a user runs, end to end.

One run folder (rank 0 names and creates it, the other rank follows), a clean stop through the STOP file
(rank 0's decision, so both ranks stop at the same step and neither hangs), a resume, one adapter and one
registry entry, and every rank exiting 0 (torchrun's exit code is 0 only then).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_training import make_dataset

pytest.importorskip("torch.distributed.run")

TIMEOUT_S = 240


def torchrun(*args: str, env: dict[str, str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "napari_fracto.training", "train", *args]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def events_until_done(proc: subprocess.Popen, on_event=None) -> tuple[list[dict], str]:
    events = []
    for line in proc.stdout:
        if line.startswith("{"):
            event = json.loads(line)
            events.append(event)
            if on_event:
                on_event(event)
    _, err = proc.communicate(timeout=TIMEOUT_S)
    return events, err


@pytest.mark.slow
def test_torchrun_two_ranks_one_run_folder_stop_resume_and_one_adapter(tmp_path, tiny_vlm_dir):
    from napari_fracto.training.runfolder import RunFolder

    data_dir = tmp_path / "data"
    env = os.environ | {
        "NAPARI_FRACTO_DATA_DIR": str(data_dir),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    dataset = make_dataset(tmp_path / "ds")
    # No --out: rank 0 names the folder in the data dir and the other rank must use the same one.
    proc = torchrun(dataset, "--model", str(tiny_vlm_dir), "--device", "cpu", "--max-steps", "30",
                    "--batch-size", "2", "--grad-accum", "1", "--max-image-tokens", "16", "--no-rotate",
                    "--eval-max-new-tokens", "8", "--name", "ddp-tiny", env=env)  # fmt: skip

    run_dirs = []

    def stop_after_two_steps(event):  # what the Train widget's Stop button does
        if event["event"] == "data":
            run_dirs.append(Path(event["run_dir"]))
        if event["event"] == "log" and event["step"] >= 2:
            RunFolder(run_dirs[0]).stop_file.touch()

    try:
        stopped_events, err = events_until_done(proc, stop_after_two_steps)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    runs = list((data_dir / "runs").iterdir())
    assert len(runs) == 1  # not one folder per rank
    run = RunFolder(runs[0])
    assert run_dirs == [run.root]
    stopped = [e for e in stopped_events if e["event"] == "stopped"]
    assert len(stopped) == 1  # only rank 0 reports
    assert 2 <= stopped[0]["step"] < 30
    assert run.status()["state"] == "stopped"
    assert run.last_checkpoint() is not None
    assert run.last_checkpoint().name == f"checkpoint-{stopped[0]['step']}"
    assert not run.adapter.exists()
    assert "is not empty" not in err

    proc = torchrun("--resume", str(run.root), env=env)
    try:
        resumed, err = events_until_done(proc)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    start = next(e for e in resumed if e["event"] == "start")
    assert start["step"] == stopped[0]["step"]
    assert [e["step"] for e in resumed if e["event"] == "log"][-1] == 30
    assert run.status()["state"] == "finished"
    assert (run.adapter / "adapter_model.safetensors").is_file()
    assert len(list((data_dir / "runs").iterdir())) == 1
    registry = json.loads((data_dir / "adapters.json").read_text())["adapters"]
    assert list(registry) == ["ddp-tiny"]
    assert registry["ddp-tiny"]["path"] == str(run.adapter)
    assert [e["event"] for e in resumed].count("done") == 1
