"""Batches for the Trainer: chat template + images through the Qwen3-VL processor, loss on the answer only.

Labels are -100 everywhere except the assistant's answer tokens and the `<|im_end|>` that closes them (so
the model learns to stop). Everything the processor returns is kept, `mm_token_type_ids` included (Qwen3-VL's
forward requires it whenever images are passed). Nothing is truncated: cutting image tokens breaks the
forward, so length is controlled with the image-token budget instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

IGNORE_INDEX = -100
ASSISTANT_HEADER = "<|im_start|>assistant\n"
END_OF_TURN = "<|im_end|>"


def _find(seq: list[int], pattern: list[int], start: int) -> int:
    n = len(pattern)
    for i in range(start, len(seq) - n + 1):
        if seq[i : i + n] == pattern:
            return i
    return -1


def assistant_mask(input_ids: Sequence[int], header_ids: Sequence[int], end_id: int) -> list[bool]:
    """True for the tokens of every assistant answer (after its header, up to and including `<|im_end|>`)."""
    seq, header = list(input_ids), list(header_ids)
    mask = [False] * len(seq)
    pos = 0
    while True:
        start = _find(seq, header, pos)
        if start < 0:
            return mask
        i = start + len(header)
        while i < len(seq):
            mask[i] = True
            if seq[i] == end_id:
                break
            i += 1
        pos = i + 1


class VLMCollator:
    """Turns examples {"messages", "image"} into a padded batch with assistant-only labels."""

    def __init__(self, processor: Any) -> None:
        tokenizer = processor.tokenizer
        self.processor = processor
        self.header_ids = tokenizer.encode(ASSISTANT_HEADER, add_special_tokens=False)
        self.end_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
        if not self.header_ids or self.end_id is None or self.end_id == tokenizer.unk_token_id:
            raise ValueError(
                "The tokenizer lacks Qwen's chat tokens (<|im_start|>, <|im_end|>); train a Qwen3-VL model"
            )

    def texts(self, examples: Sequence[dict[str, Any]]) -> list[str]:
        return [
            self.processor.apply_chat_template(ex["messages"], tokenize=False, add_generation_prompt=False)
            for ex in examples
        ]

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        # every image of every chat, in the order the chat template shows them (examples, then the query)
        images = [
            img for ex in examples for img in (ex.get("images") or [ex.get("image")]) if img is not None
        ]
        batch = self.processor(
            text=self.texts(examples), images=images or None, padding=True, return_tensors="pt"
        )
        labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
        for row, ids in enumerate(batch["input_ids"].tolist()):
            keep = torch.tensor(assistant_mask(ids, self.header_ids, self.end_id))
            if "attention_mask" in batch:
                keep &= batch["attention_mask"][row].bool()
            labels[row][keep] = batch["input_ids"][row][keep]
        if bool((labels == IGNORE_INDEX).all()):
            raise ValueError("no answer tokens in the batch: every example needs an assistant turn")
        batch["labels"] = labels
        return dict(batch)
