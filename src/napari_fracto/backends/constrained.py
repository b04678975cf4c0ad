"""Grammar-constrained decoding for the local backend: the model can only write JSON the schema allows.

With the optional extra `napari-fracto[constrained]` (xgrammar), `schema_logits_processor` gives a
transformers logits processor that masks, at every step, the tokens that would leave the answer's JSON
schema, so even a weak or untrained model answers with valid, in-vocabulary labels. Without xgrammar
(or with `BackendSettings.constrained_decoding` off) generation is unconstrained, as before.

Compiled grammars are cached per (tokenizer, schema): compiling takes ~0.1-1 s, a request reuses it.
The array of labels is bounded (`MAX_LABELS`) so an untrained model cannot loop inside it until the token
limit; whitespace between tokens is not allowed for the same reason.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

MAX_LABELS = 16
_CACHE: dict[tuple[int, str], Any] = {}
_LOCK = threading.Lock()


def available() -> bool:
    """True when xgrammar can be imported (the `constrained` extra is installed)."""
    try:
        import xgrammar  # noqa: F401
    except ImportError:
        return False
    return True


def bounded_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of `schema` whose arrays without `maxItems` get MAX_LABELS (decoding must be able to end)."""
    bounded = copy.deepcopy(schema)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "array" and "maxItems" not in node:
                node["maxItems"] = MAX_LABELS
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(bounded)
    return bounded


def schema_logits_processor(tokenizer: Any, vocab_size: int, schema: dict[str, Any]) -> Any | None:
    """A fresh logits processor constraining one generation to `schema`; None without xgrammar."""
    try:
        from xgrammar.contrib.hf import LogitsProcessor
    except ImportError:
        return None
    return LogitsProcessor(_compiled(tokenizer, vocab_size, schema))  # per-generation state: one per request


def _compiled(tokenizer: Any, vocab_size: int, schema: dict[str, Any]) -> Any:
    import xgrammar as xgr

    text = json.dumps(bounded_schema(schema), sort_keys=True)
    key = (id(tokenizer), text)
    with _LOCK:
        compiled = _CACHE.get(key)
        if compiled is None:
            info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
            compiled = xgr.GrammarCompiler(info).compile_json_schema(text, any_whitespace=False)
            _CACHE[key] = compiled
    return compiled


def rows_logits_processor(
    tokenizer: Any, vocab_size: int, schemas: list[dict[str, Any] | None], finished: list[bool]
) -> Any | None:
    """One processor for a batch whose rows each have their own schema (None: unconstrained row).

    xgrammar's own processor asserts on every token of every row, but rows of a batch end at different
    steps (their own token limit, a cancel) and are then padded: rows flagged in `finished` (by the
    batch's stopping criterion) are left alone. None without xgrammar or when no row has a schema.
    """
    if not any(schemas):
        return None
    try:
        import xgrammar as xgr
        from transformers import LogitsProcessor
    except ImportError:
        return None
    matchers = [xgr.GrammarMatcher(_compiled(tokenizer, vocab_size, s)) if s else None for s in schemas]

    class _Rows(LogitsProcessor):
        def __init__(self) -> None:
            self.bitmask = xgr.allocate_token_bitmask(len(matchers), vocab_size)
            self.started = False

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            xgr.reset_token_bitmask(self.bitmask)  # rows without a live grammar: every token allowed
            for i, matcher in enumerate(matchers):
                if matcher is None or finished[i] or matcher.is_terminated():
                    continue
                if self.started and not matcher.accept_token(int(input_ids[i, -1])):
                    finished[i] = True  # cannot happen under the mask; never crash the other rows
                    continue
                if matcher.is_terminated():  # it just accepted its stop token: the row ends here
                    continue
                matcher.fill_next_token_bitmask(self.bitmask, i)
            self.started = True
            bitmask = self.bitmask.to(scores.device) if scores.device.type != "cpu" else self.bitmask
            xgr.apply_token_bitmask_inplace(scores, bitmask)
            return scores

    return _Rows()


__all__ = ["MAX_LABELS", "available", "bounded_schema", "rows_logits_processor", "schema_logits_processor"]
