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
        import xgrammar as xgr
        from xgrammar.contrib.hf import LogitsProcessor
    except ImportError:
        return None
    text = json.dumps(bounded_schema(schema), sort_keys=True)
    key = (id(tokenizer), text)
    with _LOCK:
        compiled = _CACHE.get(key)
        if compiled is None:
            info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
            compiled = xgr.GrammarCompiler(info).compile_json_schema(text, any_whitespace=False)
            _CACHE[key] = compiled
    return LogitsProcessor(compiled)  # holds per-generation state: one per request


__all__ = ["MAX_LABELS", "available", "bounded_schema", "schema_logits_processor"]
