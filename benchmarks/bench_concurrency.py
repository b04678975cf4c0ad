"""Batch throughput against an OpenAI-compatible server with several requests in flight.

A server (vLLM, a hosted API) answers many requests at once, so a batch should keep several in flight.
This measures how much that buys, against the scripted fake server with a fixed per-request delay (the
stand-in for the model's time), so the figure isolates the client side: thread pool, image encoding,
HTTP, parsing. Two ways of driving it:

- `generate`: a ThreadPoolExecutor calling `OpenAIBackend.generate` directly;
- `batch`: `napari_fracto.batch.run_batch(..., concurrency=N)` over a folder of PNGs (the CLI's path:
  reading, prompt, request, parsing, JSONL writing).

    .venv/bin/python benchmarks/bench_concurrency.py --images 32 --delay 0.25 --concurrency 1 4 8

Prints seconds, images per second, speed-up over concurrency 1 (ideal: N), the most requests the
server saw in flight at once, and the client's own time per image at concurrency 1 (seconds per image
less the server's delay: reading, normalising, PNG encoding, HTTP, parsing).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from napari_fracto.backends.base import Turn, VLMRequest
from napari_fracto.backends.openai_backend import OpenAIBackend
from napari_fracto.testing.fake_openai_server import FakeOpenAIServer

ANSWER = json.dumps({"labels": [{"label": "dimples", "confidence": 0.8, "bbox_2d": [100, 100, 400, 300]}]})


def _images(n: int, size: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)) for _ in range(n)]


def run_generate(backend: OpenAIBackend, images: list[Image.Image], concurrency: int) -> float:
    requests = [VLMRequest([Turn("user", ["Which features?", im])], max_new_tokens=64) for im in images]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        replies = list(pool.map(backend.generate, requests))
    elapsed = time.perf_counter() - start
    assert all(r.text == ANSWER for r in replies)
    return elapsed


def run_batch_folder(backend: OpenAIBackend, folder: Path, n: int, concurrency: int) -> float:
    from napari_fracto.batch import run_batch

    start = time.perf_counter()
    summary = run_batch([folder], backend=backend, task="fracture", concurrency=concurrency)
    elapsed = time.perf_counter() - start
    if summary.failures or summary.analysed != n:
        raise SystemExit(f"batch failed: analysed {summary.analysed} of {n}; {summary.failures[:3]}")
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=24, help="images per run (default 24)")
    parser.add_argument("--delay", type=float, default=0.25, help="server seconds per request (default 0.25)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--mode", choices=["generate", "batch", "both"], default="both")
    args = parser.parse_args(argv)
    levels = sorted(set([1, *args.concurrency]))
    modes = ["generate", "batch"] if args.mode == "both" else [args.mode]
    images = _images(args.images, args.size)

    print(f"{args.images} images of {args.size}x{args.size}, server delay {args.delay:g} s per request")
    header = f"{'mode':<9} {'conc.':>5} {'seconds':>8} {'img/s':>7} {'speed-up':>9} {'in flight':>9}"
    print(f"{header} {'client':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i, image in enumerate(images):
            image.save(folder / f"image_{i:03d}.png")
        for mode in modes:
            base = None
            for level in levels:
                with FakeOpenAIServer(answer=ANSWER, delay=args.delay) as server:
                    backend = OpenAIBackend("fake-model", base_url=server.base_url, timeout=60)
                    if mode == "generate":
                        seconds = run_generate(backend, images, level)
                    else:
                        seconds = run_batch_folder(backend, folder, args.images, level)
                    backend.close()
                    in_flight = server.max_in_flight
                base = base or seconds
                client = f"{(seconds / args.images - args.delay) * 1000:>6.0f} ms" if level == 1 else ""
                print(
                    f"{mode:<9} {level:>5} {seconds:>8.2f} {args.images / seconds:>7.1f} "
                    f"{base / seconds:>8.2f}x {in_flight:>9} {client:>9}"
                )


if __name__ == "__main__":
    main()
