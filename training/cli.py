"""`napari-fracto train` and `napari-fracto export-adapter` (also `python -m napari_fracto.training ...`).

`add_parser(subparsers)` only builds argparse parsers (cheap); torch, transformers and peft load once a
sub-command runs. Exit codes: 0 done, 1 failed, 2 bad input, 130 stopped with a checkpoint (resumable).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    """Register `train` and `export-adapter` on the `napari-fracto` command line."""
    _add_train_parser(subparsers)
    _add_export_parser(subparsers)


def _add_train_parser(subparsers) -> None:
    from napari_fracto.training.config import PRESETS

    p = subparsers.add_parser(
        "train",
        help="LoRA fine-tune the VLM on a corrections dataset (JSON-lines progress on stdout)",
        description="Fine-tune Qwen3-VL with LoRA/QLoRA on the reviewed images of a corrections dataset. "
        "Progress goes to stdout as JSON lines; Ctrl-C saves a checkpoint; --resume RUN_DIR continues.",
    )
    p.add_argument("dataset", nargs="?", type=Path, help="corrections dataset folder")
    p.add_argument(
        "--resume", type=Path, metavar="RUN_DIR", help="continue a stopped run from its checkpoint"
    )
    p.add_argument("--task", help="task to train (default: the dataset's only task)")
    p.add_argument("--model", dest="base_model", help="base model: Hub id or local directory")
    p.add_argument(
        "--preset", choices=["auto", *PRESETS], help="base/method/batch preset; auto: by free GPU memory"
    )
    p.add_argument(
        "--list-presets", action="store_true", help="print the presets with estimated memory and exit"
    )
    p.add_argument("--method", choices=["lora", "qlora"])
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], help="cpu only for tests and tiny models")
    p.add_argument(
        "--out", dest="output_dir", type=Path, help="run folder (default: in the platform data dir)"
    )
    p.add_argument("--name", help="name the adapter is registered under (Analyze lists it)")
    p.add_argument("--epochs", type=float)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--lr", dest="learning_rate", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--lora-rank", type=int)
    p.add_argument("--lora-alpha", type=int)
    p.add_argument("--max-image-tokens", type=int, help="image-token budget per image (32x32 px a token)")
    p.add_argument("--train-vision", action="store_true", default=None, help="also LoRA on the vision tower")
    p.add_argument(
        "--no-rotate", dest="rotate", action="store_false", default=None, help="no rotation copies"
    )
    p.add_argument("--no-oversample", dest="oversample", action="store_false", default=None)
    p.add_argument(
        "--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false", default=None
    )
    p.add_argument("--no-final-eval", dest="final_eval", action="store_false", default=None)
    p.add_argument("--eval-max-new-tokens", type=int)
    p.add_argument("--seed", type=int)
    p.set_defaults(handler=run_train)


def _add_export_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export-adapter",
        help="vLLM-ready LoRA adapter (language model only) or merged weights; prints the serve command",
    )
    p.add_argument("source", help="run folder, adapter folder, or a registered adapter name")
    p.add_argument("--out", type=Path, help="output folder (default: <run>/export-vllm or <run>/merged)")
    p.add_argument("--merge", action="store_true", help="merge the adapter into the base weights instead")
    p.add_argument("--base-model", help="override the base model recorded in the adapter")
    p.add_argument("--name", help="LoRA name to serve under (default: the registered or folder name)")
    p.set_defaults(handler=run_export)


_TRAIN_KEYS = (
    "task", "base_model", "preset", "method", "device", "output_dir", "name", "epochs", "max_steps",
    "learning_rate", "batch_size", "grad_accum", "lora_rank", "lora_alpha", "max_image_tokens",
    "train_vision", "rotate", "oversample", "gradient_checkpointing", "final_eval", "eval_max_new_tokens",
    "seed",
)  # fmt: skip


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def run_train(args: argparse.Namespace) -> int:
    from napari_fracto.training.config import ConfigError, free_gpu_memory_gb, make_config, memory_table

    if args.list_presets:
        print(memory_table(free_gpu_memory_gb()))
        return 0
    from napari_fracto.dataset import DatasetError
    from napari_fracto.training import distributed
    from napari_fracto.training.data import TrainingDataError
    from napari_fracto.training.train import (
        EXIT_FAILED,
        EXIT_OK,
        EXIT_STOPPED,
        TrainingError,
        resume,
        run_training,
        stdout_emit,
    )

    try:
        if args.resume:
            if args.dataset:
                return _error("give either a dataset (new run) or --resume RUN_DIR, not both")
            outcome = resume(args.resume)
        else:
            if args.dataset is None:
                return _error("give the corrections dataset folder, or --resume RUN_DIR")
            values = {k: getattr(args, k) for k in _TRAIN_KEYS}
            values["output_dir"] = str(values["output_dir"]) if values["output_dir"] else None
            config = make_config(dataset=str(args.dataset.expanduser()), **values)
            outcome = run_training(config)
    except (ConfigError, DatasetError, TrainingDataError, TrainingError) as exc:
        stdout_emit({"event": "error", "message": str(exc)})
        return _error(str(exc))
    except distributed.RankZeroFailed as exc:  # rank 0 has reported it; this rank just stops
        print(f"error: rank 0 failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        stdout_emit({"event": "error", "message": "interrupted before a checkpoint could be saved"})
        return EXIT_STOPPED
    except Exception as exc:  # keep the traceback on stderr, a readable line for the widget on stdout
        import traceback

        traceback.print_exc()
        stdout_emit({"event": "error", "message": f"{type(exc).__name__}: {exc}"})
        return EXIT_FAILED
    finally:
        distributed.shutdown()
    if not distributed.is_main_process():
        return EXIT_OK
    if outcome.state == "stopped":
        resume_hint = f"napari-fracto train --resume {outcome.run_dir}"
        print(f"stopped at step {outcome.step}; continue with: {resume_hint}", file=sys.stderr)
        # torchrun / accelerate treat a non-zero exit as a crashed worker (and may restart the group);
        # the "stopped" event and status.json say it stopped.
        return EXIT_OK if distributed.launched() else EXIT_STOPPED  # so the other ranks exit 0 too
    print(f"adapter {outcome.name!r} saved in {outcome.adapter}", file=sys.stderr)
    return EXIT_OK


def run_export(args: argparse.Namespace) -> int:
    from napari_fracto.training.export import (
        ExportError,
        export_for_vllm,
        merge_adapter,
        resolve_adapter,
        run_limits,
    )

    try:
        source = resolve_adapter(args.source)
        if args.merge:
            out = merge_adapter(source, out=args.out, base_model=args.base_model)
            print(f"merged model written to {out}")
            limits = run_limits(source).flags()
            print(f"serve it: vllm serve {out} --served-model-name {args.name or source.name} {limits}")
        else:
            result = export_for_vllm(source, out=args.out, base_model=args.base_model, name=args.name)
            print(f"vLLM adapter written to {result.path}")
            print(f"serve it:\n  {result.command}")
            for note in result.notes:
                print(f"note ({result.dropped} tensors): {note}", file=sys.stderr)
    except ExportError as exc:
        return _error(str(exc))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m napari_fracto.training")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_parser(subparsers)
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    return int(args.handler(args))
