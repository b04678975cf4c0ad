"""The state the four dock widgets share in one viewer: dataset, task, model, adapter, last training run.

One loop (Analyze -> Review -> Split/Train -> Evaluate -> Analyze) needs one answer to "which dataset,
which task, which model, which adapter": each widget reads these fields and writes them when the user
changes them, so choosing the dataset in Review fills Train and Evaluate, and a finished training run
selects its adapter in Analyze. Pure (psygnal ships with napari; no Qt), so it is testable on its own.
"""

from __future__ import annotations

import weakref
from typing import Any

from psygnal import EventedModel

BASE_MODEL = ""  # adapter value meaning "the base model, no adapter"


class LoopState(EventedModel):
    """What the widgets of one viewer agree on; each field change emits `state.events.<field>`."""

    dataset: str = ""  # folder of the corrections dataset
    task: str = ""
    kind: str = "transformers"  # backend kind: transformers or openai
    model: str = ""  # Hub id, local folder or served model name
    device: str = "auto"
    adapter: str = BASE_MODEL  # adapter folder (or served LoRA name); "" = the base model
    last_run: str = ""  # run folder of the last training run started from this viewer
    last_adapter_name: str = ""  # registered name of the adapter that run produced ("" while none)
    sent_to_review: tuple[str, ...] = ()  # image ids Analyze last sent to the dataset (Review queues them)


_STATES: weakref.WeakKeyDictionary[Any, LoopState] = weakref.WeakKeyDictionary()
_NO_VIEWER = LoopState()


def loop_state(viewer: Any) -> LoopState:
    """The one LoopState of `viewer` (made on first use, gone with the viewer)."""
    if viewer is None:
        return _NO_VIEWER
    state = _STATES.get(viewer)
    if state is None:
        state = _STATES[viewer] = LoopState()
    return state


__all__ = ["BASE_MODEL", "LoopState", "loop_state"]
