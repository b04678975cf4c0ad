"""Throughput and peak GPU memory of the training recipe on real-size Qwen3-VL architectures.

Nothing can be downloaded where this runs, and speed and memory do not depend on the weights, so the model
is built from the published config values of Qwen3-VL-2B/4B/8B/32B-Instruct with random weights, saved, and
loaded through the same `train.load_model` / `prepare_model` / Trainer path a real run uses (QLoRA
included). The tokenizer is the offline tiny one; its token ids are mapped into the config.

    python -m napari_fracto.training.bench [--sizes 2B 8B] [--methods lora qlora] [--steps 10] \\
        [--inference 2B]

Prints one JSON line per (size, method): samples/s, tokens/s, peak GB beside the estimate for the same
tokens, and MFU = 6 x path parameters (decoder linear layers + head) x tokens/s / the GPU's dense bf16
peak (`BF16_PEAK`); with --inference also local-backend throughput, one image per request.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any


def real_size_config(size: str, tokenizer: Any) -> Any:
    """The Qwen3VLConfig of the published model `size` (`memory.ARCHITECTURES`), with `tokenizer`'s ids."""
    from napari_fracto.testing.tiny_vlm import qwen3vl_config
    from napari_fracto.training.memory import ARCHITECTURES

    arch = ARCHITECTURES[size]
    text = {
        "vocab_size": arch.vocab_size,
        "hidden_size": arch.hidden_size,
        "intermediate_size": arch.intermediate_size,
        "num_hidden_layers": arch.layers,
        "num_attention_heads": arch.heads,
        "num_key_value_heads": arch.kv_heads,
        "head_dim": arch.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": 262144,
        "rms_norm_eps": 1e-6,
        "attention_bias": False,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": arch.rope_theta,
            "mrope_interleaved": True,
            "mrope_section": list(arch.mrope_section),
        },
        "dtype": "bfloat16",
    }
    vision = {
        "depth": arch.vision_depth,
        "hidden_size": arch.vision_hidden,
        "intermediate_size": arch.vision_intermediate,
        "num_heads": arch.vision_heads,
        "patch_size": arch.patch_size,
        "spatial_merge_size": arch.spatial_merge_size,
        "temporal_patch_size": arch.temporal_patch_size,
        "num_position_embeddings": arch.position_embeddings,
        "deepstack_visual_indexes": list(arch.deepstack),
        "hidden_act": "gelu_pytorch_tanh",
        "in_channels": 3,
        "out_hidden_size": arch.hidden_size,
    }
    return qwen3vl_config(text, vision, tokenizer, tie_word_embeddings=arch.tie_word_embeddings)


def build_model_dir(size: str, out: Path) -> Path:
    """A model directory with random real-size weights (bf16) and the tiny tokenizer/processor files."""
    import shutil

    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    from napari_fracto.testing.tiny_vlm import build_tiny_vlm

    tiny = build_tiny_vlm(out / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    config = real_size_config(size, tokenizer)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    target = out / f"Qwen3-VL-{size}-random"
    model.save_pretrained(target, safe_serialization=True)
    del model
    for file in tiny.iterdir():
        if file.is_file() and not file.name.endswith(".safetensors") and file.name != "config.json":
            shutil.copy2(file, target / file.name)
    return target


def _examples(n: int, side: int, seed: int = 0) -> list[dict[str, Any]]:
    import numpy as np
    from PIL import Image

    from napari_fracto.findings import Box, Finding
    from napari_fracto.prompts import build_request, format_answer
    from napari_fracto.vocabulary import load_vocabulary

    vocab = load_vocabulary("fracture")
    request = build_request(vocab, None)
    answer = format_answer(
        [Finding("cleavage facets", 0.9, Box(100, 200, 600, 700)), Finding("river patterns")]
    )
    messages = [
        {
            "role": t.role,
            "content": [{"type": "image"} if p is None else {"type": "text", "text": p} for p in t.parts],
        }
        for t in request.turns
    ] + [{"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    rng = np.random.default_rng(seed)
    return [
        {"messages": messages, "image": Image.fromarray((rng.random((side, side, 3)) * 255).astype(np.uint8))}
        for _ in range(n)
    ]


def measure(
    model_dir: Path,
    method: str,
    *,
    steps: int = 10,
    warmup: int = 2,
    batch_size: int = 1,
    max_image_tokens: int = 768,
    image_side: int = 896,
) -> dict[str, Any]:
    """Samples/s (after warm-up) and peak GPU memory for `steps` LoRA/QLoRA optimiser steps."""
    import torch
    from transformers import Trainer, TrainerCallback

    from napari_fracto.training.collate import VLMCollator
    from napari_fracto.training.config import make_config
    from napari_fracto.training.runfolder import RunFolder
    from napari_fracto.training.train import load_model, prepare_model, training_arguments

    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = make_config(
        dataset="-",
        base_model=str(model_dir),
        method=method,
        device=device,
        batch_size=batch_size,
        grad_accum=1,
        max_steps=warmup + steps,
        max_image_tokens=max_image_tokens,
        warmup_ratio=0.0,
        eval_each_epoch=False,
    )
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model, processor = load_model(config, device)
    model = prepare_model(model, config)
    times: list[float] = []
    losses: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    with tempfile.TemporaryDirectory() as tmp:
        args = training_arguments(config, RunFolder(Path(tmp)), device, has_eval=False)
        args.save_strategy = "no"
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=_examples(batch_size * (warmup + steps), image_side),
            data_collator=VLMCollator(processor),
            callbacks=[Clock()],
        )
        sample = VLMCollator(processor)(_examples(1, image_side))
        trainer.train()
    timed = times[warmup - 1 :] if warmup > 0 else times
    seconds = timed[-1] - timed[0]
    peak = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else None
    trainable, total = model.get_nb_trainable_parameters()
    result = {
        "model": model_dir.name,
        "method": method,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "steps_timed": len(timed) - 1,
        "batch_size": batch_size,
        "tokens_per_sample": int(sample["input_ids"].shape[1]),
        "image_tokens": int((sample["input_ids"] == model.config.image_token_id).sum()),
        "samples_per_s": round(batch_size * (len(timed) - 1) / seconds, 3) if seconds > 0 else None,
        "peak_gb": round(peak, 2) if peak is not None else None,
        "trainable_params": trainable,
        "total_params": total,
        "final_loss": losses[-1] if losses else None,
    }
    del trainer, model
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


# Dense bf16 tensor-core peaks (FLOP/s, no sparsity) from the vendors' datasheets, for MFU.
BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12,
             "A10": 125e12, "4090": 165e12, "3090": 71e12}  # fmt: skip


def bf16_peak(device_name: str) -> float | None:
    return next((v for k, v in BF16_PEAK.items() if k in device_name), None)


def path_params(size: str) -> int:
    """Parameters every text/image token's matmuls pass through in the language model (decoder linear
    layers + the output head); the frozen vision tower's forward-only cost is left out."""
    from napari_fracto.training.memory import ARCHITECTURES

    arch = ARCHITECTURES[size]
    return arch.lm_linear_params + arch.embedding_params  # the head is a vocab x hidden matmul, tied or not


def add_derived(result: dict[str, Any], size: str, batch_size: int) -> dict[str, Any]:
    """tokens/s, MFU = 6 x path params x tokens/s / bf16 peak, and the estimate for the same tokens."""
    from napari_fracto.training.config import KNOWN_BASES, estimate_memory_gb

    tokens, images = result.get("tokens_per_sample"), result.get("image_tokens")
    if tokens and result.get("samples_per_s"):
        result["tokens_per_s"] = round(result["samples_per_s"] * tokens, 1)
        peak = bf16_peak(str(result.get("device", "")))
        if peak:
            result["mfu"] = float(f"{6 * path_params(size) * result['tokens_per_s'] / peak:.4g}")
    if tokens and images is not None:
        result["estimated_gb"] = round(
            estimate_memory_gb(KNOWN_BASES[size], result["method"], batch_size=batch_size,
                               max_image_tokens=images, text_tokens=tokens - images), 2
        )  # fmt: skip
    else:
        result["estimated_gb"] = round(estimate_memory_gb(KNOWN_BASES[size], result["method"]), 2)
    return result


def measure_inference(
    model_dir: Path,
    *,
    images: int = 8,
    max_new_tokens: int = 64,
    side: int = 896,
    max_image_tokens: int = 768,
) -> dict[str, Any]:
    """Local-backend throughput, one image per request (the backend has no batched generation yet)."""
    import torch

    from napari_fracto.backends.base import Turn, VLMRequest
    from napari_fracto.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend(str(model_dir), max_image_tokens=max_image_tokens)
    backend.load()
    requests = [
        VLMRequest([Turn("user", [ex["image"], "Which fracture features do you see? Answer in JSON."])],
                   max_new_tokens=max_new_tokens)
        for ex in _examples(images + 1, side, seed=1)
    ]  # fmt: skip
    backend.generate(requests[0])  # warm-up
    start = time.perf_counter()
    replies = [backend.generate(r) for r in requests[1:]]
    seconds = time.perf_counter() - start
    result = {
        "model": model_dir.name,
        "inference": "one at a time",
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "images": images,
        "images_per_s": round(images / seconds, 3),
        "generated_tokens_per_s": round(sum(r.completion_tokens for r in replies) / seconds, 1),
        "prompt_tokens": replies[0].prompt_tokens,
        "batched": "missing: the local backend has no batched generation",
    }
    backend.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=["2B", "8B"], choices=["2B", "4B", "8B", "32B"])
    parser.add_argument("--methods", nargs="+", default=["lora", "qlora"], choices=["lora", "qlora"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--dir", type=Path, help="where to write the random models (default: a temp folder)")
    parser.add_argument("--inference", nargs="*", default=[], metavar="SIZE",
                        help="also local inference throughput for these sizes (e.g. 2B)")  # fmt: skip
    args = parser.parse_args(argv)
    import shutil

    root = args.dir or Path(tempfile.mkdtemp(prefix="bench-train-"))
    for size in args.sizes:
        model_dir = build_model_dir(size, root / size)
        for method in args.methods:
            try:
                result = measure(model_dir, method, steps=args.steps, batch_size=args.batch_size)
            except Exception as exc:  # report and go on (e.g. no bitsandbytes for QLoRA)
                result = {"model": model_dir.name, "method": method, "error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(add_derived(result, size, args.batch_size)), flush=True)
        if size in args.inference:
            try:
                print(json.dumps(measure_inference(model_dir)), flush=True)
            except Exception as exc:
                print(json.dumps({"model": model_dir.name, "inference": "error", "error": str(exc)}))
        if args.dir is None:
            shutil.rmtree(root / size, ignore_errors=True)  # 8B is ~17 GB on disk
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
