"""Samples/s and peak GPU memory of LoRA and QLoRA fine-tuning on real-size Qwen3-VL-2B/4B architectures.

    python benchmarks/bench_training_gpu.py [--sizes 2B 4B] [--methods lora qlora] [--steps 10]

Random weights built from the published configs (nothing is downloaded; speed and memory do not depend on
the weights), loaded and trained through the real `napari_fracto.training` path. One JSON line per
(size, method) with the measured figures beside the preset table's estimate. Needs a CUDA GPU (QLoRA also
bitsandbytes); figures and how they compare with ms-swift, LLaMA-Factory and unsloth: docs/training.md.
"""

from __future__ import annotations

import sys

from napari_fracto.training.bench import main

if __name__ == "__main__":
    sys.exit(main())
