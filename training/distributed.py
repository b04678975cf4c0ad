"""The few collectives a run needs under `torchrun` / `accelerate launch`, and nothing without them.

Only rank 0 creates the run folder, writes the configuration, chooses the preset and fills the data cache;
the other ranks wait at a barrier and then use what rank 0 decided (`broadcast`). An error on rank 0 is
sent to every rank (`main_first`), so all of them stop with the same message instead of one hanging in
a collective. Stop decisions are rank 0's too (`agree`): ranks that stopped at different steps would
hang in the gradient all-reduce. Single-process runs never touch torch.distributed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def launched() -> bool:
    """True under torchrun / accelerate launch (an elastic agent treats a non-zero exit as a failure)."""
    return world_size() > 1 or "TORCHELASTIC_RUN_ID" in os.environ


def _active() -> bool:
    if world_size() <= 1:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def init(device: str) -> None:
    """Join the process group (gloo on the CPU, nccl on CUDA) before the first collective; idempotent.

    accelerate (inside Trainer) reuses an existing group, so this does not start a second one.
    """
    if world_size() <= 1:
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if device == "cuda":
        torch.cuda.set_device(local_rank())
        dist.init_process_group(backend="nccl", device_id=torch.device("cuda", local_rank()))
    else:
        dist.init_process_group(backend="gloo")


def shutdown() -> None:
    if _active():
        import torch.distributed as dist

        dist.destroy_process_group()


def barrier() -> None:
    if _active():
        import torch.distributed as dist

        dist.barrier()


def broadcast(value: T) -> T:
    """Rank 0's `value` on every rank (any picklable object); the value itself when single-process."""
    if not _active():
        return value
    import torch.distributed as dist

    box = [value if is_main_process() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree(flag: bool) -> bool:
    """Rank 0's decision (e.g. stop now) on every rank; call at the same point on all ranks."""
    return bool(broadcast(bool(flag)))


def gather_min(value: float | None) -> float | None:
    """The smallest value over all ranks (None if any rank has none), e.g. free memory per GPU."""
    if not _active():
        return value
    import torch.distributed as dist

    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return None if any(v is None for v in values) else min(values)


class RankZeroFailed(RuntimeError):
    """Raised on the other ranks when rank 0 failed in a `main_first` step (the message is rank 0's)."""


def main_first(fn: Callable[[], T], *, others: bool = True) -> T | None:
    """Run `fn` on rank 0, then (after it succeeded) on the other ranks if `others`.

    When `fn` raises on rank 0, its message is sent to every rank: rank 0 re-raises its own exception and
    the others raise `RankZeroFailed`, so no rank waits forever in a collective.
    """
    if not _active():
        return fn()
    if is_main_process():
        try:
            result = fn()
        except BaseException as exc:
            broadcast((type(exc).__name__, str(exc)))
            raise
        broadcast(None)
        return result
    failure = broadcast(None)
    if failure is not None:
        raise RankZeroFailed(failure[1])
    return fn() if others else None


def sharding(args: Any) -> str | None:
    """'deepspeed' or 'fsdp' when the TrainingArguments (or accelerate's launch environment) shard the
    model, else None. Under either, the model must be loaded without a device_map."""
    from transformers.utils import strtobool

    if getattr(args, "deepspeed", None) or getattr(args, "deepspeed_plugin", None) is not None:
        return "deepspeed"
    if strtobool(os.environ.get("ACCELERATE_USE_DEEPSPEED", "false")):
        return "deepspeed"
    if getattr(args, "fsdp", None) or strtobool(os.environ.get("ACCELERATE_USE_FSDP", "false")):
        return "fsdp"
    return None
