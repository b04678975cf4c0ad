"""LoRA / QLoRA fine-tuning of Qwen3-VL on the corrections dataset with transformers' Trainer and peft.

Runs in its own process (GPU memory is only returned when a process ends) and talks through JSON lines on
stdout, one event per line: start, log (step, epoch, loss, learning rate, ETA), eval, epoch, stopped,
evaluation, done, error. A stop request (SIGINT, SIGTERM, or a `STOP` file in the run folder, which
the widget uses because it works on every OS) saves a checkpoint at the end of the current step;
`resume(run_dir)` continues from the newest checkpoint. The same entry point runs under `accelerate launch`
and `torchrun` (DDP, FSDP, DeepSpeed): only rank 0 prints, creates the run folder, chooses the preset, writes
files and evaluates; the others follow what it decided (`distributed.py`).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_fracto.errors import UserError
from napari_fracto.request import DEFAULT_IMAGE_TOKENS
from napari_fracto.training import distributed
from napari_fracto.training.config import (
    PRESETS,
    TrainConfig,
    choose_preset,
    free_gpu_memory_gb,
    memory_table,
    model_size,
    quantization_for,
)
from napari_fracto.training.distributed import is_main_process
from napari_fracto.training.runfolder import RunFolder, library_versions, model_card, new_run_dir

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 130
LM_LINEAR = r"model\.language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
VISION_LINEAR = r"model\.visual\..*\.(qkv|proj|linear_fc1|linear_fc2)"
Emit = Callable[[dict[str, Any]], None]


class TrainingError(UserError, RuntimeError):
    """Training cannot start or go on; the message says what to do."""


def stdout_emit(event: dict[str, Any]) -> None:
    """One JSON object per line on stdout, flushed at once (the widget reads it live)."""
    if is_main_process():
        sys.stdout.write(json.dumps(event, default=str) + "\n")
        sys.stdout.flush()


def check_device(device: str, method: str) -> str:
    """'cuda' or 'cpu'. Without CUDA only an explicit `cpu` is accepted (tests and tiny models)."""
    import torch

    cuda = torch.cuda.is_available()
    if device == "cpu":
        if method == "qlora":
            raise TrainingError("QLoRA (4-bit) needs a CUDA GPU; use --method lora with --device cpu")
        return "cpu"
    if not cuda:
        raise TrainingError(
            "No CUDA GPU found: fine-tuning a real Qwen3-VL on the CPU would take days. Run on a machine "
            "with an NVIDIA GPU, or pass --device cpu (only sensible for tests and tiny models)."
        )
    return "cuda"


class StopRequest:
    """Set by SIGINT/SIGTERM or by a STOP file; the callback turns it into save-and-stop at a step end."""

    def __init__(self, stop_file: Path | None = None) -> None:
        self.stop_file = stop_file
        self._event = threading.Event()
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self._event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self._event.set()

    def set(self) -> None:
        self._event.set()

    @property
    def requested(self) -> bool:
        if not self._event.is_set() and self.stop_file is not None and self.stop_file.exists():
            self._event.set()
        return self._event.is_set()


def _progress_callback(emit: Emit, run: RunFolder, stop: StopRequest) -> Any:
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        """JSON-lines progress, per-epoch metrics, and the stop request."""

        def __init__(self) -> None:
            self.t0 = 0.0
            self.step0 = 0
            self.epoch_losses: list[float] = []
            self.epochs: list[dict[str, Any]] = list(run.read_json("epochs.json", []) or [])
            self.stopped_at: int | None = None

        def _eta(self, state: Any) -> float | None:
            done = state.global_step - self.step0
            if done <= 0 or not state.max_steps:
                return None
            return round((time.perf_counter() - self.t0) / done * (state.max_steps - state.global_step), 1)

        def _send(self, event: dict[str, Any], state: Any) -> None:
            if state.is_world_process_zero:
                run.append_metric(event)
                emit(event)

        def on_train_begin(self, args, state, control, **kwargs):
            self.t0, self.step0 = time.perf_counter(), state.global_step
            self._send(
                {
                    "event": "start",
                    "step": state.global_step,
                    "total_steps": state.max_steps,
                    "epochs": args.num_train_epochs,
                },
                state,
            )

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = dict(logs or {})
            base = {
                "step": state.global_step,
                "epoch": round(state.epoch or 0.0, 4),
                "total_steps": state.max_steps,
            }
            if "eval_loss" in logs:
                metrics = {k: v for k, v in logs.items() if k.startswith("eval_")}
                self._send({"event": "eval", **base, **metrics}, state)
            if "loss" in logs:
                self.epoch_losses.append(float(logs["loss"]))
                event = {
                    "event": "log",
                    **base,
                    "loss": float(logs["loss"]),
                    "learning_rate": logs.get("learning_rate"),
                    "grad_norm": logs.get("grad_norm"),
                    "eta_s": self._eta(state),
                }
                self._send(event, state)
            return self._check_stop(state, control)

        def _check_stop(self, state, control):
            # Every rank calls this at the same points (step end, log); rank 0's answer is everyone's.
            if distributed.agree(stop.requested):
                control.should_save = True
                control.should_training_stop = True
                self.stopped_at = state.global_step
            return control

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if self.epochs and metrics and "eval_loss" in metrics:
                self.epochs[-1]["eval_loss"] = float(metrics["eval_loss"])
                if state.is_world_process_zero:
                    run.write_json("epochs.json", self.epochs)

        def on_epoch_end(self, args, state, control, **kwargs):
            loss = sum(self.epoch_losses) / len(self.epoch_losses) if self.epoch_losses else None
            self.epoch_losses = []
            record = {"epoch": round(state.epoch or 0.0, 4), "step": state.global_step, "loss": loss}
            self.epochs.append(record)
            if state.is_world_process_zero:
                run.write_json("epochs.json", self.epochs)
            self._send({"event": "epoch", **record}, state)

        def on_step_end(self, args, state, control, **kwargs):
            return self._check_stop(state, control)

    return ProgressCallback()


@dataclass
class TrainOutcome:
    run_dir: Path
    state: str  # finished / stopped
    step: int
    adapter: Path | None = None
    name: str | None = None
    evaluation: dict[str, Any] | None = None


def lora_config(config: TrainConfig) -> Any:
    from peft import LoraConfig

    target = LM_LINEAR if not config.train_vision else f"({LM_LINEAR})|({VISION_LINEAR})"
    return LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=target,
        bias="none",
        task_type="CAUSAL_LM",
    )


def compute_dtype(device: str) -> Any:
    """bf16 where the GPU runs it natively (compute capability >= 8), fp16 on older GPUs, fp32 on the CPU."""
    import torch

    from napari_fracto.backends.devices import native_bf16

    if device != "cuda":
        return torch.float32
    return torch.bfloat16 if native_bf16(f"cuda:{distributed.local_rank()}") else torch.float16


def load_kwargs(config: TrainConfig, device: str, dtype: Any, sharded: str | None) -> dict[str, Any]:
    """from_pretrained arguments: each rank's own GPU for DDP; no device_map under FSDP/DeepSpeed, whose
    sharded initialisation places the weights (a device_map loads the whole model per rank, or raises)."""
    kwargs: dict[str, Any] = {"dtype": dtype}
    if device == "cuda" and sharded is None:
        kwargs["device_map"] = {"": distributed.local_rank()}
    if config.method == "qlora":
        if sharded is not None:
            raise TrainingError(
                f"QLoRA under {sharded} is not supported by this recipe; launch plain DDP (torchrun) for "
                "QLoRA, or use --method lora with FSDP/DeepSpeed."
            )
        from napari_fracto.backends.devices import four_bit_config

        kwargs["quantization_config"] = four_bit_config(dtype)
    return kwargs


def load_model(config: TrainConfig, device: str, sharded: str | None = None) -> tuple[Any, Any]:
    """Base model (bf16 on GPU, 4-bit for QLoRA with the vision tower and lm_head kept) and processor.

    Under FSDP/DeepSpeed build the TrainingArguments first (`sharded` comes from them)."""
    from transformers import AutoModelForImageTextToText

    from napari_fracto.backends.qwen_processor import load_processor, set_image_token_budget

    kwargs = load_kwargs(config, device, compute_dtype(device), sharded)
    try:
        model = AutoModelForImageTextToText.from_pretrained(config.base_model, **kwargs)
        processor = load_processor(config.base_model)
    except OSError as exc:
        raise TrainingError(
            f"cannot load the base model {config.base_model!r}: {str(exc).splitlines()[0]}. Give a local "
            "model directory or a Hub id that is in the Hugging Face cache."
        ) from exc
    set_image_token_budget(processor, config.max_image_tokens or DEFAULT_IMAGE_TOKENS)  # run() sets the asked
    return model, processor


def prepare_model(model: Any, config: TrainConfig) -> Any:
    """LoRA adapters on the language model's linear layers; everything else frozen (vision too by default)."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    if config.method == "qlora":
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=config.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    model = get_peft_model(model, lora_config(config))
    model.config.use_cache = False
    return model


def training_arguments(config: TrainConfig, run: RunFolder, device: str, has_eval: bool) -> Any:
    from transformers import TrainingArguments

    bf16 = fp16 = False
    if device == "cuda":
        import torch

        bf16 = compute_dtype(device) == torch.bfloat16
        fp16 = not bf16
    return TrainingArguments(
        output_dir=str(run.checkpoints),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a fraction of the total steps
        lr_scheduler_type="cosine",
        logging_steps=config.logging_steps,
        logging_first_step=True,
        eval_strategy="epoch" if (has_eval and config.eval_each_epoch) else "no",
        save_strategy="epoch",
        save_total_limit=2,
        bf16=bf16,
        fp16=fp16,
        use_cpu=device == "cpu",
        activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=device == "cuda",
        report_to="none",
        disable_tqdm=True,
        seed=config.seed,
        ddp_find_unused_parameters=False,
    )


def _resolve_preset(config: TrainConfig, emit: Emit, device: str) -> TrainConfig:
    """Apply the preset ('auto' picks by free GPU memory) and print the memory table before training.

    Decided once on rank 0 (from the smallest free memory over all ranks' own GPUs) and broadcast. A base
    model the user gave (a local folder above all) is kept: 'auto' then picks among that size's presets.
    """
    free = distributed.gather_min(free_gpu_memory_gb(distributed.local_rank()) if device == "cuda" else None)
    note = ""
    if is_main_process():
        keep_model = "base_model" in config.model_fields_set
        size = model_size(config.base_model) if keep_model else None
        name = config.preset
        if name == "auto":
            if keep_model and size is None:
                name, note = None, f"preset auto: the size of {config.base_model} is unknown; settings kept"
            else:
                name = choose_preset(free, size=size).name
        if name and name != "auto":
            config = config.with_preset(PRESETS[name], keep_model=keep_model)
    config = distributed.broadcast(config)
    table = memory_table(free, config.preset)
    if is_main_process():
        print(table + (f"\n{note}" if note else ""), file=sys.stderr, flush=True)
    emit({"event": "memory", "free_gb": free, "preset": config.preset, "table": table})
    return config


def run_training(
    config: TrainConfig,
    *,
    emit: Emit = stdout_emit,
    resume_dir: Path | None = None,
    stop: StopRequest | None = None,
) -> TrainOutcome:
    """Train (or resume), save the adapter, evaluate base vs adapter on the test split, register it."""
    from transformers import PrinterCallback, Trainer, set_seed

    from napari_fracto.dataset import Dataset
    from napari_fracto.training import data as data_mod
    from napari_fracto.training.collate import VLMCollator

    device = check_device(config.device, config.method)
    distributed.init(device)
    if resume_dir is None:
        config = _resolve_preset(config, emit, device)
    ds = distributed.main_first(lambda: Dataset.open(config.dataset))  # rank 0 migrates an old schema
    try:
        task = data_mod.resolve_task(ds, config.task)
        fingerprint = data_mod.dataset_fingerprint(ds, task)
        if resume_dir is not None:
            run = RunFolder(Path(resume_dir))
            saved = run.read_json("dataset.json", {})
            if saved.get("sha256") and saved["sha256"] != fingerprint["sha256"]:
                raise TrainingError(
                    f"the dataset changed since this run started (reviews or splits differ); resuming would "
                    f"mix data. Start a new run instead of --resume {run.root}"
                )
            checkpoint = run.last_checkpoint()
            if checkpoint is None:
                raise TrainingError(f"{run.root} holds no checkpoint to resume from; start a new run")
        else:
            name = config.name or f"{Path(config.base_model).name}-{task}"

            def create_run_folder() -> str:  # rank 0 only; the others get its path
                root = Path(config.output_dir).expanduser() if config.output_dir else new_run_dir(name)
                if root.is_dir() and any(root.iterdir()):
                    raise TrainingError(f"{root} is not empty; choose a new output folder or --resume it")
                return str(RunFolder(root).create().root)

            root = distributed.main_first(create_run_folder, others=False)
            run = RunFolder(Path(distributed.broadcast(root)))
            config = config.model_copy(update={"task": task, "output_dir": str(run.root)})
            checkpoint = None
        stop = stop or StopRequest(run.stop_file)
        stop.stop_file = run.stop_file
        set_seed(config.seed)

        def write_run_files() -> None:  # rank 0 only, before any rank reads them
            if run.stop_file.exists():
                run.stop_file.unlink()
            if resume_dir is not None:
                return
            from napari_fracto.prompts import PROMPT_VERSION
            from napari_fracto.vocabulary import load_vocabulary

            config.save(run.root)
            run.write_json("dataset.json", fingerprint)
            run.write_json(
                "versions.json",
                {
                    "vocabulary": task,
                    "vocabulary_version": load_vocabulary(task).version,
                    "prompt_version": PROMPT_VERSION,
                    **library_versions(),
                },
            )

        distributed.main_first(write_run_files, others=False)
        cache = run.root / "cache"

        def examples() -> tuple[list[Any], list[Any]]:  # rank 0 fills the cache, the others reuse it
            train_examples = data_mod.build_examples(
                ds, task, "train", rotate=config.rotate, oversample=config.oversample,
                max_repeat=config.max_repeat, cache_dir=cache, max_image_tokens=config.max_image_tokens,
            )  # fmt: skip
            try:
                val_examples = data_mod.build_examples(
                    ds, task, "val", cache_dir=cache, max_image_tokens=config.max_image_tokens
                )
            except data_mod.TrainingDataError:
                val_examples = []
            return train_examples, val_examples

        train_examples, val_examples = distributed.main_first(examples)
        asked = [ex.request for ex in train_examples]
        budget = max(r.max_image_tokens for r in asked)  # the processor never shrinks what was asked
        emit({"event": "data", "train_examples": len(train_examples), "val_examples": len(val_examples),
              "run_dir": str(run.root), "task": task})  # fmt: skip

        # The arguments first: under DeepSpeed ZeRO-3 / FSDP they set up the sharded loading.
        args = training_arguments(config, run, device, bool(val_examples))
        model, processor = load_model(config, device, distributed.sharding(args))
        from napari_fracto.backends.qwen_processor import set_image_token_budget

        set_image_token_budget(processor, budget)
        model = prepare_model(model, config)
        trainable, total = model.get_nb_trainable_parameters()
        emit({"event": "model", "trainable_params": trainable, "total_params": total, "device": device})
        callback = _progress_callback(emit, run, stop)
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=data_mod.ExampleImages(ds, train_examples, config.complex_part),
            eval_dataset=data_mod.ExampleImages(ds, val_examples, config.complex_part)
            if val_examples
            else None,
            data_collator=VLMCollator(processor),
            callbacks=[callback],
        )
        trainer.remove_callback(PrinterCallback)  # stdout carries JSON lines only
        if is_main_process():
            run.set_status("running", pid=os.getpid())
        stop.install()
        try:
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        finally:
            stop.uninstall()
        step = trainer.state.global_step
        if callback.stopped_at is not None and step < trainer.state.max_steps:
            saved = run.last_checkpoint()
            if is_main_process():
                run.set_status("stopped", step=step, checkpoint=str(saved) if saved else None)
            emit({"event": "stopped", "step": step, "checkpoint": str(saved) if saved else None,
                  "resume": f"napari-fracto train --resume {run.root}"})  # fmt: skip
            return TrainOutcome(run.root, "stopped", step)

        trainer.save_model(str(run.adapter))  # every rank: FSDP/DeepSpeed gather the shards; rank 0 writes
        if not is_main_process():
            return TrainOutcome(run.root, "finished", step)
        emit({"event": "saved", "adapter": str(run.adapter), "step": step})
        del trainer, model
        gc.collect()
        _empty_cuda()
        return _finish(config, run, ds, task, fingerprint, device, emit, step, asked)
    finally:
        ds.close()


def _empty_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _finish(
    config: TrainConfig,
    run: RunFolder,
    ds: Any,
    task: str,
    fingerprint: dict[str, Any],
    device: str,
    emit: Emit,
    step: int,
    asked: list[Any],
) -> TrainOutcome:
    """Evaluate, register the adapter with the request settings its training chats asked, write the card."""
    from napari_fracto.adapters import training_request_settings
    from napari_fracto.training.final_eval import evaluate_adapter
    from napari_fracto.training.registry import AdapterEntry, register_adapter, unique_name

    request_settings = training_request_settings(asked)
    evaluation: dict[str, Any] = {"note": "final evaluation switched off (--no-final-eval)", "results": {}}
    if config.final_eval:
        emit({"event": "evaluating", "split": "test"})

        def progress(done: int, total: int, what: str) -> None:
            emit({"event": "eval_progress", "done": done, "total": total, "what": what})

        evaluation = evaluate_adapter(
            ds, task, base_model=config.base_model, adapter=run.adapter, out_dir=run.eval_dir, device=device,
            max_image_tokens=request_settings["max_image_tokens"], max_new_tokens=config.eval_max_new_tokens,
            quantization=quantization_for(config.method), progress=progress,
        )  # fmt: skip
    run.write_json("evaluation.json", evaluation)
    emit({"event": "evaluation", **evaluation})
    versions = run.read_json("versions.json", {})
    name = config.name or unique_name(run.root.name)
    entry = register_adapter(
        AdapterEntry(
            name=name,
            path=str(run.adapter),
            base_model=config.base_model,
            task=task,
            run_dir=str(run.root),
            method=config.method,
            vocabulary_version=str(versions.get("vocabulary_version", "")),
            prompt_version=str(versions.get("prompt_version", "")),
            evaluation=evaluation.get("results", {}),
            request_settings=request_settings,
        )
    )
    card = model_card(
        name=entry.name,
        config=config.model_dump(),
        dataset=fingerprint,
        versions=versions,
        epochs=run.read_json("epochs.json", []) or [],
        evaluation=evaluation,
    )
    (run.root / "README.md").write_text(card, encoding="utf-8")
    run.set_status("finished", step=step, adapter=str(run.adapter), name=entry.name)
    emit(
        {
            "event": "done",
            "run_dir": str(run.root),
            "adapter": str(run.adapter),
            "name": entry.name,
            "step": step,
        }
    )
    return TrainOutcome(run.root, "finished", step, run.adapter, entry.name, evaluation)


def resume(run_dir: Path, *, emit: Emit = stdout_emit, stop: StopRequest | None = None) -> TrainOutcome:
    """Continue a stopped run from its newest checkpoint with its saved configuration."""
    run = RunFolder(Path(run_dir).expanduser())
    config = TrainConfig.load(run.root)
    if run.status().get("state") == "finished":
        raise TrainingError(f"{run.root} already finished; start a new run to train more")
    return run_training(config, emit=emit, resume_dir=run.root, stop=stop)
