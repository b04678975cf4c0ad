"""Reading a training process's JSON-lines progress into one status object (pure: no Qt, no torch).

The Train widget feeds every stdout line to `TrainStatus.feed`; progress bars, the loss plot and the
evaluation table are drawn from the status. Lines that are not JSON objects (stray library prints) are
ignored, so a noisy library cannot break the protocol.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


def parse_line(line: str) -> dict[str, Any] | None:
    """The event on one stdout line, or None when the line is not a JSON object with an "event"."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get("event"), str) else None


@dataclass
class TrainStatus:
    """Everything the widget shows about one run, updated event by event."""

    state: str = "idle"  # idle, starting, training, evaluating, finished, stopped, failed
    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    eta_s: float | None = None
    losses: list[tuple[int, float]] = field(default_factory=list)
    eval_losses: list[tuple[int, float]] = field(default_factory=list)
    eval_done: int = 0
    eval_total: int = 0
    run_dir: str = ""
    adapter: str = ""
    name: str = ""
    evaluation: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    memory_table: str = ""

    @property
    def running(self) -> bool:
        return self.state in ("starting", "training", "evaluating")

    @property
    def last_loss(self) -> float | None:
        return self.losses[-1][1] if self.losses else None

    def feed(self, line: str) -> dict[str, Any] | None:
        """Apply one stdout line; returns the event it held (None for non-protocol lines)."""
        event = parse_line(line)
        if event is not None:
            self.apply(event)
        return event

    def apply(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if "step" in event and isinstance(event["step"], int):
            self.step = event["step"]
        if isinstance(event.get("total_steps"), int) and event["total_steps"] > 0:
            self.total_steps = event["total_steps"]
        if isinstance(event.get("epoch"), int | float):
            self.epoch = float(event["epoch"])
        if kind == "memory":
            self.memory_table = str(event.get("table", ""))
        elif kind == "data":
            self.run_dir = str(event.get("run_dir", self.run_dir))
        elif kind == "start":
            self.state = "training"
        elif kind == "log" and isinstance(event.get("loss"), int | float):
            self.state = "training"
            self.losses.append((self.step, float(event["loss"])))
            self.eta_s = event.get("eta_s")
        elif kind == "eval" and isinstance(event.get("eval_loss"), int | float):
            self.eval_losses.append((self.step, float(event["eval_loss"])))
        elif kind == "evaluating":
            self.state = "evaluating"
            self.eta_s = None
        elif kind == "eval_progress":
            self.eval_done = int(event.get("done", 0))
            self.eval_total = int(event.get("total", 0))
        elif kind == "evaluation":
            self.evaluation = {k: v for k, v in event.items() if k != "event"}
        elif kind == "stopped":
            self.state = "stopped"
            self.message = f"Stopped at step {self.step}; checkpoint saved. Resume: {event.get('resume', '')}"
        elif kind == "done":
            self.state = "finished"
            self.adapter = str(event.get("adapter", ""))
            self.name = str(event.get("name", ""))
            self.run_dir = str(event.get("run_dir", self.run_dir))
            self.message = f"Adapter '{self.name}' is ready: choose it in Analyze."
        elif kind == "error":
            self.state = "failed"
            self.message = str(event.get("message", "training failed"))

    def comparison_rows(self) -> list[tuple[str, dict[str, Any]]]:
        """(model, scores) rows of the final evaluation: base first, then the adapter."""
        results = self.evaluation.get("results") or {}
        return [(key, results[key]) for key in ("base", "adapter") if key in results]

    def progress_text(self) -> str:
        if self.state == "evaluating":
            return f"evaluating on the test split: {self.eval_done}/{self.eval_total}"
        parts = [f"step {self.step}/{self.total_steps or '?'}", f"epoch {self.epoch:.2f}"]
        if self.last_loss is not None:
            parts.append(f"loss {self.last_loss:.4f}")
        if self.eta_s is not None:
            minutes, seconds = divmod(int(self.eta_s), 60)
            parts.append(f"ETA {minutes}:{seconds:02d}")
        return ", ".join(parts)
