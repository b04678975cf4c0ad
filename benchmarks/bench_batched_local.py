"""Batched vs one-at-a-time generation on the local transformers backend.

A GPU answering one image at a time sits mostly idle; `--batch-size N` generates N together. This runs
the same requests (images of mixed sizes, greedy, fixed answer length) one at a time and in batches, on
the random tiny Qwen3-VL by default (CPU, seconds) or on any model directory (`--model`, e.g. a
random-weight Qwen3-VL-2B built from its published config on a GPU), and checks the answers are equal.

    .venv/bin/python benchmarks/bench_batched_local.py --requests 16 --batch 1 4 8
    .venv/bin/python benchmarks/bench_batched_local.py --model DIR --device cuda --tokens 128

Prints seconds, requests per second and the speed-up over one at a time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from napari_fracto.backends.base import Turn, VLMRequest
from napari_fracto.backends.transformers_backend import TransformersBackend


def _requests(n: int, tokens: int) -> list[VLMRequest]:
    rng = np.random.default_rng(0)
    sizes = [(256, 256), (320, 200), (160, 300), (224, 224)]
    out = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        image = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        prompt = "Which fracture features do you see?" + " Answer in JSON." * (i % 3)
        out.append(VLMRequest([Turn("user", [image, prompt])], max_new_tokens=tokens))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory (default: build the tiny random Qwen3-VL)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32, help="answer length (the tiny model never stops)")
    parser.add_argument("--image-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from napari_fracto.testing.tiny_vlm import build_tiny_vlm

            model = str(build_tiny_vlm(Path(tmp) / "tiny"))
        backend = TransformersBackend(
            model, device=args.device, max_image_tokens=args.image_tokens, constrained=False
        )
        backend.load()
        backend.generate_batch(_requests(2, 4))  # warm-up
        print(f"{args.requests} requests, {args.tokens} new tokens each, model {Path(model).name}")
        print(f"{'batch':>5} {'seconds':>8} {'req/s':>7} {'speed-up':>9}")
        base, reference = None, None
        for size in sorted(set([1, *args.batch])):
            requests = _requests(args.requests, args.tokens)
            start = time.perf_counter()
            replies = []
            for i in range(0, len(requests), size):
                chunk = requests[i : i + size]
                if size == 1:
                    replies += [backend.generate(r) for r in chunk]
                else:
                    replies += backend.generate_batch(chunk)
            seconds = time.perf_counter() - start
            texts = [r.text for r in replies]
            reference = reference or texts
            same = "same answers" if texts == reference else "ANSWERS DIFFER"
            base = base or seconds
            rate = len(requests) / seconds
            print(f"{size:>5} {seconds:>8.2f} {rate:>7.2f} {base / seconds:>8.2f}x  {same}")
        backend.close()


if __name__ == "__main__":
    main()
