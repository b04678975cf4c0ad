"""Batched generation for the local backend: several chat requests generated together on one model.

A GPU answering one image at a time sits mostly idle; a batch fills it. Prompts are padded on the left
(so every row's next token sits in the last column) and each row stops at its own end: its end-of-text
token, its own `max_new_tokens` or its own cancel event. Greedy rows answer exactly what they answer alone
(the tests check it token for token). One request is a batch of one, so there is one implementation.

`BatchCollector` turns concurrent `generate` calls (the batch CLI's thread pool, autolabel, evaluation)
into batches without the callers knowing: the first caller waits briefly for as many others as were seen
before, then runs them all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from napari_fracto.backends.base import BackendError, CancelledError, VLMReply, VLMRequest

Outcome = VLMReply | BaseException


def generate_rows(
    model: Any, processor: Any, requests: Sequence[VLMRequest], *, constrained: bool, oom_hint: str
) -> list[Outcome]:
    """Generate `requests` together; a reply or an exception (cancelled, malformed) for each, in order.

    Greedy rows and sampled rows are generated in separate passes (one pass samples or it does not), and
    so are sampled rows of different temperatures.
    """
    from napari_fracto.backends.transformers_backend import to_chat_messages

    outcomes: list[Outcome | None] = [None] * len(requests)
    groups: dict[float, list[int]] = {}
    prepared: dict[int, tuple[list[dict], list[Any]]] = {}
    for i, request in enumerate(requests):
        if request.cancel is not None and request.cancel.is_set():
            outcomes[i] = CancelledError("Cancelled before the model started.")
            continue
        try:
            prepared[i] = to_chat_messages(request)
        except BackendError as exc:
            outcomes[i] = exc
            continue
        groups.setdefault(max(float(request.temperature or 0.0), 0.0), []).append(i)
    for temperature, rows in groups.items():
        replies = _generate_group(
            model,
            processor,
            [requests[i] for i in rows],
            [prepared[i] for i in rows],
            temperature=temperature,
            constrained=constrained,
            oom_hint=oom_hint,
        )
        for i, reply in zip(rows, replies, strict=True):
            outcomes[i] = reply
    return [o if o is not None else BackendError("no answer was generated") for o in outcomes]


def _generate_group(
    model: Any,
    processor: Any,
    requests: list[VLMRequest],
    prepared: list[tuple[list[dict], list[Any]]],
    *,
    temperature: float,
    constrained: bool,
    oom_hint: str,
) -> list[Outcome]:
    import torch
    from transformers import LogitsProcessorList, StoppingCriteriaList

    from napari_fracto.backends.transformers_backend import _free_accelerator_memory, _is_out_of_memory

    start = time.perf_counter()
    tokenizer = processor.tokenizer
    template = processor.apply_chat_template
    texts = [template(m, add_generation_prompt=True, tokenize=False) for m, _ in prepared]
    images = [image for _, row_images in prepared for image in row_images]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # every row's next token in the last column
    try:
        inputs = processor(text=texts, images=images or None, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = side
    inputs = inputs.to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    width = int(inputs["input_ids"].shape[1])
    prompt_tokens = [int(n) for n in inputs["attention_mask"].sum(dim=1)]
    image_token_id = getattr(model.config, "image_token_id", None)
    image_tokens = (
        [int(n) for n in (inputs["input_ids"] == image_token_id).sum(dim=1)]
        if image_token_id is not None
        else [0] * len(requests)
    )
    limits = [max(1, int(r.max_new_tokens)) for r in requests]
    stop = RowStop(limits, [r.cancel for r in requests], width)
    pad_id = tokenizer.pad_token_id
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
    gen_kwargs: dict[str, Any] = {
        "max_new_tokens": max(limits),
        "stopping_criteria": StoppingCriteriaList([stop]),
        "pad_token_id": pad_id if pad_id is not None else min(eos_ids, default=0),
    }
    if temperature > 0:
        gen_kwargs.update(do_sample=True, temperature=temperature)
    else:
        gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    schema_rows = None
    if constrained and any(r.json_schema for r in requests):
        from napari_fracto.backends.constrained import rows_logits_processor

        vocab_size = int(model.get_output_embeddings().weight.shape[0])
        schema_rows = rows_logits_processor(
            tokenizer, vocab_size, [r.json_schema for r in requests], stop.finished
        )
        if schema_rows is not None:
            gen_kwargs["logits_processor"] = LogitsProcessorList([schema_rows])
    try:
        with torch.inference_mode():
            output = model.generate(**inputs, **gen_kwargs)
    except Exception as exc:
        if _is_out_of_memory(exc):
            _free_accelerator_memory()
            raise BackendError(
                f"Out of memory generating {len(requests)} request(s) ({max(prompt_tokens)} prompt tokens "
                f"in the longest, {max(image_tokens)} of them image tokens). {oom_hint}"
            ) from exc
        raise
    seconds = time.perf_counter() - start
    replies: list[Outcome] = []
    for row, request in enumerate(requests):
        if request.cancel is not None and request.cancel.is_set():
            replies.append(CancelledError("Generation was cancelled."))
            continue
        ids = own_tokens(output[row, width:].tolist(), limits[row], eos_ids)
        finished = bool(ids) and ids[-1] in eos_ids
        replies.append(
            VLMReply(
                text=tokenizer.decode(ids, skip_special_tokens=True).strip(),
                seconds=seconds,
                prompt_tokens=prompt_tokens[row],
                completion_tokens=len(ids),
                extra={
                    "image_tokens": image_tokens[row],
                    "finish_reason": "stop" if finished else "length",
                    "device": str(model.device),
                    "dtype": str(model.dtype).removeprefix("torch."),
                    "processor": type(processor).__name__,
                    "constrained": bool(schema_rows is not None and request.json_schema),
                    "batch_size": len(requests),
                },
            )
        )
    return replies


def own_tokens(ids: list[int], limit: int, eos_ids: set[int]) -> list[int]:
    """A row's own answer: up to its token limit and its first end-of-text token (what follows is padding)."""
    ids = ids[:limit]
    for i, token in enumerate(ids):
        if token in eos_ids:
            return ids[: i + 1]
    return ids


class RowStop:
    """Stopping criterion: a row is done at its own token limit or when its own cancel event is set.

    `finished` is shared with the constrained-decoding processor, which must leave finished rows alone.
    """

    def __init__(self, limits: list[int], cancels: list[threading.Event | None], prompt_width: int) -> None:
        self.limits = limits
        self.cancels = cancels
        self.prompt_width = prompt_width
        self.finished = [False] * len(limits)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        generated = int(input_ids.shape[1]) - self.prompt_width
        for i, (limit, cancel) in enumerate(zip(self.limits, self.cancels, strict=True)):
            if generated >= limit or (cancel is not None and cancel.is_set()):
                self.finished[i] = True
        return torch.tensor(self.finished, dtype=torch.bool, device=input_ids.device)


@dataclass
class _Pending:
    request: VLMRequest
    outcome: Outcome | None = None


class BatchCollector:
    """Concurrent calls to `submit` gathered into batches of at most `size`, run by `run` one at a time.

    Whoever finds no batch running leads the next one: it waits (at most `linger_s` after the latest
    arrival) until as many requests are queued as the largest batch seen so far, so a lone caller never
    waits and a thread pool settles into full batches.
    """

    def __init__(
        self, run: Callable[[list[VLMRequest]], list[Outcome]], size: int, linger_s: float = 0.1
    ) -> None:
        if int(size) < 1:
            raise BackendError(f"batch size must be at least 1, got {size}")
        self.size = int(size)
        self.linger_s = float(linger_s)
        self._run = run
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._busy = False
        self._expected = 1
        self._arrived = time.monotonic()

    def submit(self, request: VLMRequest) -> VLMReply:
        item = _Pending(request)
        with self._cond:
            self._queue.append(item)
            self._arrived = time.monotonic()
            self._expected = min(self.size, max(self._expected, len(self._queue)))
            self._cond.notify_all()
            while item.outcome is None:
                if self._busy:
                    self._cond.wait()
                    continue
                self._lead()
        if isinstance(item.outcome, BaseException):
            raise item.outcome
        return item.outcome

    def _lead(self) -> None:
        """Run one batch (called holding the lock; released while the model runs)."""
        self._busy = True
        try:
            while len(self._queue) < self._expected:
                left = self._arrived + self.linger_s - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch, self._queue = self._queue[: self.size], self._queue[self.size :]
            self._cond.release()
            try:
                outcomes: list[Outcome] = self._run([p.request for p in batch])
            except BaseException as exc:  # the whole batch failed (out of memory, a bug): all callers see it
                outcomes = [exc] * len(batch)
            finally:
                self._cond.acquire()
            for pending, outcome in zip(batch, outcomes, strict=True):
                pending.outcome = outcome
        finally:
            self._busy = False
            self._cond.notify_all()
