"""Parse-failure rate of the local backend with and without grammar-constrained decoding (issue 17).

The tiny random Qwen3-VL (napari_fracto.testing.tiny_vlm) answers noise: unconstrained, no answer parses.
Under the answer's JSON schema (xgrammar, the `constrained` extra) every answer is valid JSON with labels
from the vocabulary. Its tokenizer spends about one token a character, so the token limit is generous.

    .venv/bin/python benchmarks/bench_constrained.py [--images 10] [--max-new-tokens 2048]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from napari_fracto import parsing, prompts
from napari_fracto.backends.transformers_backend import TransformersBackend
from napari_fracto.testing.tiny_vlm import build_tiny_vlm
from napari_fracto.vocabulary import load_vocabulary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=2048)
    args = parser.parse_args()
    vocab = load_vocabulary("fracture")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_vlm(Path(tmp) / "tiny")
        for constrained in (False, True):
            backend = TransformersBackend(
                str(model_dir), max_image_tokens=64, device="cpu", constrained=constrained
            )
            parsed = valid = 0
            start = time.perf_counter()
            for i in range(args.images):
                pixels = np.random.default_rng(i).integers(0, 255, (96, 96, 3), dtype=np.uint8)
                request = prompts.build_request(
                    vocab, Image.fromarray(pixels), max_new_tokens=args.max_new_tokens
                )
                request.json_schema = prompts.response_schema(vocab)
                reply = backend.generate(request)
                result = parsing.parse_response(reply.text, vocab)
                parsed += result.ok and not any("cut off" in p or "free text" in p for p in result.problems)
                try:
                    json.loads(reply.text)
                    valid += 1
                except ValueError:
                    pass
            seconds = time.perf_counter() - start
            print(
                f"constrained={constrained} (active: {reply.extra.get('constrained')}): answers parsed "
                f"{parsed}/{args.images}, valid JSON {valid}/{args.images}, "
                f"{seconds / args.images:.1f} s each"
            )
            backend.close()


if __name__ == "__main__":
    main()
