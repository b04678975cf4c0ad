"""The review of one image: predicted findings with accept/reject/edited decisions, findings the reviewer
added, notes, and an undo/redo log of every edit.

napari's Shapes layer has no undo, so this module keeps its own: the state is an immutable tuple of rows
and every edit pushes the previous tuple, which makes undo/redo exact and cheap (a review has tens of
rows). Row ids are stable (never reused), so the Shapes layer can name its shapes by them.

Saved form (what `Dataset.save_review` receives): `corrected` lists the kept predicted findings in the
model's order, then the added findings in the order they were added; `decisions` has one entry per
predicted finding. `from_review` reads that convention back, so reopening a saved review shows it as
it was left. Corrected findings carry no confidence: they are the reviewer's answer, not the model's.

Reconstruction advice (ptychography) is reviewed the same way: each predicted suggestion is accepted or
rejected, missed ones are added from the advice vocabulary, and the kept ones are saved as `advice`.
Advice edits share the undo log with the findings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from napari_fracto.dataset.model import Decision
from napari_fracto.errors import UserError
from napari_fracto.findings import AnalysisResult, Box, Finding

if TYPE_CHECKING:
    from napari_fracto.dataset.model import ReviewRecord


class ReviewError(UserError, ValueError):
    """A review edit that cannot be made; the message says what to do instead."""


@dataclass(frozen=True)
class Row:
    """One line of the review: a predicted finding (`predicted` is its index) or one the reviewer added.

    `decision` is what the reviewer said explicitly (pending, accepted, rejected); `edited` is derived.
    """

    id: int
    label: str
    box: Box | None = None
    predicted: int | None = None
    decision: Decision = Decision.PENDING
    original: Finding | None = None  # the model's finding, for predicted rows

    @property
    def added(self) -> bool:
        return self.predicted is None

    @property
    def rejected(self) -> bool:
        return self.decision is Decision.REJECTED

    @property
    def edited(self) -> bool:
        """A kept predicted finding whose label or box the reviewer changed."""
        if self.original is None or self.rejected:
            return False
        return self.label != self.original.label or self.box != self.original.box

    @property
    def status(self) -> str:
        """What the list shows: added, accepted, rejected, edited or pending."""
        if self.added:
            return "added"
        if self.rejected:
            return Decision.REJECTED.value
        if self.edited:
            return Decision.EDITED.value
        return self.decision.value

    def finding(self) -> Finding:
        return Finding(label=self.label, confidence=None, box=self.box)


@dataclass(frozen=True)
class AdviceItem:
    """One reconstruction suggestion: predicted by the model (`predicted`) or added by the reviewer."""

    id: int
    text: str
    predicted: bool = False
    decision: Decision = Decision.PENDING

    @property
    def kept(self) -> bool:
        return self.decision is not Decision.REJECTED

    @property
    def status(self) -> str:
        """What the list shows: added, accepted, rejected or pending."""
        if not self.predicted:
            return "added"
        return self.decision.value


#: what one undo step restores: the findings and the advice
_State = tuple[tuple[Row, ...], tuple[AdviceItem, ...]]


def _check_box(box: Box, size: tuple[int, int] | None) -> Box:
    """Ordered, finite and (when the image size is known) clamped to the image."""
    x1, y1, x2, y2 = (float(v) for v in box.as_list())
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ReviewError(f"box {box.as_list()} has non-finite corners; draw it again")
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    if size is not None:
        height, width = size
        x1, x2 = (min(max(v, 0.0), float(width)) for v in (x1, x2))
        y1, y2 = (min(max(v, 0.0), float(height)) for v in (y1, y2))
    return Box(x1, y1, x2, y2)


class ReviewSession:
    """The editable review of one image. Every edit method is one undo step and returns quickly."""

    def __init__(
        self,
        task: str,
        prediction: AnalysisResult | None = None,
        *,
        labels: Sequence[str] = (),
        image_size: tuple[int, int] | None = None,
        image_id: str = "",
        notes: str = "",
        advice_labels: Sequence[str] = (),
    ) -> None:
        """`labels` is the task's vocabulary (empty: any label); `image_size` is (height, width);
        `advice_labels` the advice vocabulary (empty: any suggestion)."""
        self.task = task
        self.prediction = prediction
        self.labels = tuple(labels)
        self.advice_labels = tuple(advice_labels)
        self.image_size = image_size
        self.image_id = image_id
        self.notes = notes
        rows = []
        for i, f in enumerate(prediction.findings if prediction else ()):
            box = _check_box(f.box, image_size) if f.box is not None else None
            rows.append(Row(id=i, label=f.label, box=box, predicted=i, original=replace(f, box=box)))
        self._rows: tuple[Row, ...] = tuple(rows)
        self._next_id = len(rows)
        predicted_advice = prediction.advice if prediction else ()
        self._advice: tuple[AdviceItem, ...] = tuple(
            AdviceItem(id=i, text=str(text), predicted=True) for i, text in enumerate(predicted_advice)
        )
        self._next_advice_id = len(self._advice)
        self._undo: list[tuple[str, _State]] = []
        self._redo: list[tuple[str, _State]] = []
        self._saved: _State = self._state()
        self._saved_notes = notes

    # ---- building -------------------------------------------------------------------------------------
    @classmethod
    def from_review(
        cls,
        record: ReviewRecord,
        *,
        labels: Sequence[str] = (),
        image_size: tuple[int, int] | None = None,
        advice_labels: Sequence[str] = (),
    ) -> ReviewSession:
        """The session a saved review (or stored prediction) describes, ready to continue editing."""
        prediction = prediction_of(record)
        session = cls(
            record.task,
            prediction,
            labels=labels,
            image_size=image_size,
            image_id=record.image_id,
            notes=record.notes,
            advice_labels=advice_labels,
        )
        if record.status.value != "reviewed":
            return session  # a stored prediction or a skipped image: nothing decided yet
        corrected = list(record.corrected)
        decisions = list(record.decisions)
        rows = list(session._rows)
        kept = [i for i, d in enumerate(decisions) if d is not Decision.REJECTED]
        if len(decisions) == len(rows) and len(corrected) >= len(kept):
            for i, d in enumerate(decisions):
                rows[i] = replace(rows[i], decision=Decision.ACCEPTED if d is Decision.EDITED else d)
            for i, f in zip(kept, corrected, strict=False):
                box = _check_box(f.box, image_size) if f.box is not None else None
                rows[i] = replace(rows[i], label=f.label, box=box)
            extra = corrected[len(kept) :]
        else:  # not written by this module: show every corrected finding as the reviewer's own
            rows = [replace(r, decision=Decision.REJECTED) for r in rows]
            extra = corrected
        for f in extra:
            box = _check_box(f.box, image_size) if f.box is not None else None
            rows.append(Row(id=session._next_id, label=f.label, box=box))
            session._next_id += 1
        session._rows = tuple(rows)
        # advice: a predicted suggestion in the saved advice was kept, one missing was rejected,
        # the rest the reviewer added
        kept = list(record.advice)
        advice = []
        for item in session._advice:
            if item.text in kept:
                kept.remove(item.text)
                advice.append(replace(item, decision=Decision.ACCEPTED))
            else:
                advice.append(replace(item, decision=Decision.REJECTED))
        for text in kept:
            advice.append(AdviceItem(id=session._next_advice_id, text=text))
            session._next_advice_id += 1
        session._advice = tuple(advice)
        session._saved = session._state()
        return session

    # ---- reading --------------------------------------------------------------------------------------
    @property
    def rows(self) -> tuple[Row, ...]:
        return self._rows

    def row(self, row_id: int) -> Row:
        for r in self._rows:
            if r.id == row_id:
                return r
        raise ReviewError(f"no finding #{row_id} in this review; it may have been removed")

    def shown_boxes(self) -> list[Row]:
        """Rows drawn on the canvas: kept findings with a box (rejected ones leave the canvas)."""
        return [r for r in self._rows if r.box is not None and not r.rejected]

    @property
    def advice(self) -> tuple[AdviceItem, ...]:
        """The predicted and added reconstruction suggestions, rejected ones included (with their status)."""
        return self._advice

    def advice_item(self, advice_id: int) -> AdviceItem:
        for item in self._advice:
            if item.id == advice_id:
                return item
        raise ReviewError(f"no suggestion #{advice_id} in this review; it may have been removed")

    def kept_advice(self) -> list[str]:
        """The advice the model should have given: kept predicted suggestions, then added ones."""
        return [item.text for item in self._advice if item.kept]

    def corrected(self) -> list[Finding]:
        """The answer the model should have given: kept predicted findings, then added ones."""
        return [r.finding() for r in self._rows if not r.rejected]

    def decisions(self) -> list[Decision]:
        """One decision per predicted finding, in the model's order."""
        out = []
        for r in self._rows:
            if r.added:
                continue
            if r.rejected:
                out.append(Decision.REJECTED)
            elif r.edited:
                out.append(Decision.EDITED)
            else:
                out.append(r.decision)
        return out

    @property
    def pending(self) -> int:
        return sum(1 for r in self._rows if not r.added and r.status == Decision.PENDING.value)

    @property
    def dirty(self) -> bool:
        """True when there are edits since loading or the last `mark_saved`."""
        return self._state() != self._saved or self.notes != self._saved_notes

    def mark_saved(self) -> None:
        self._saved = self._state()
        self._saved_notes = self.notes

    def save_kwargs(self, reviewer: str | None = None) -> dict[str, Any]:
        """Keyword arguments for `Dataset.save_review(image_id, task, **kwargs)`."""
        return {
            "corrected": self.corrected(),
            "prediction": self.prediction,
            "decisions": self.decisions(),
            "advice": self.kept_advice(),
            "notes": self.notes,
            "reviewer": reviewer or None,
        }

    # ---- undo / redo ----------------------------------------------------------------------------------
    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self) -> str | None:
        """Take back the last edit; returns what was undone (for the status line) or None."""
        if not self._undo:
            return None
        what, state = self._undo.pop()
        self._redo.append((what, self._state()))
        self._rows, self._advice = state
        return what

    def redo(self) -> str | None:
        if not self._redo:
            return None
        what, state = self._redo.pop()
        self._undo.append((what, self._state()))
        self._rows, self._advice = state
        return what

    def _state(self) -> _State:
        return (self._rows, self._advice)

    def _commit(
        self, what: str, rows: Iterable[Row] | None = None, advice: Iterable[AdviceItem] | None = None
    ) -> bool:
        """Make one undo step of new rows and/or advice; False (no step) when nothing changes."""
        state = (
            self._rows if rows is None else tuple(rows),
            self._advice if advice is None else tuple(advice),
        )
        if state == self._state():
            return False
        self._undo.append((what, self._state()))
        self._redo.clear()
        self._rows, self._advice = state
        return True

    def _replace_row(self, what: str, row_id: int, **changes: Any) -> bool:
        self.row(row_id)  # a clear error for an unknown id
        return self._commit(what, (replace(r, **changes) if r.id == row_id else r for r in self._rows))

    # ---- edits ----------------------------------------------------------------------------------------
    def check_label(self, label: str) -> str:
        label = (label or "").strip()
        if not label:
            raise ReviewError("choose a label first")
        if self.labels and label not in self.labels:
            raise ReviewError(
                f"{label!r} is not a {self.task!r} label; choose one of: {', '.join(self.labels)}"
            )
        return label

    def accept(self, row_id: int) -> bool:
        return self._replace_row("accept", row_id, decision=Decision.ACCEPTED)

    def reject(self, row_id: int) -> bool:
        """Reject a predicted finding; an added finding is simply removed."""
        if self.row(row_id).added:
            return self.remove(row_id)
        return self._replace_row("reject", row_id, decision=Decision.REJECTED)

    def accept_all(self) -> bool:
        """Accept every predicted finding and suggestion still pending (rejections stay); one undo step."""
        rows = (
            replace(r, decision=Decision.ACCEPTED) if not r.added and r.decision is Decision.PENDING else r
            for r in self._rows
        )
        advice = (
            replace(a, decision=Decision.ACCEPTED) if a.predicted and a.decision is Decision.PENDING else a
            for a in self._advice
        )
        return self._commit("accept all", rows, advice)

    def relabel(self, row_id: int, label: str) -> bool:
        label = self.check_label(label)
        row = self.row(row_id)
        decision = Decision.ACCEPTED if row.rejected else row.decision  # relabelling keeps the finding
        return self._replace_row("relabel", row_id, label=label, decision=decision)

    def add_label(self, label: str) -> int:
        """Add an image-level label the model missed; returns its row id (the existing one if present)."""
        label = self.check_label(label)
        for r in self._rows:
            if r.label == label and r.box is None and not r.rejected:
                return r.id
        row_id = self._next_id
        self._next_id += 1
        self._commit("add label", (*self._rows, Row(id=row_id, label=label)))
        return row_id

    def add_box(self, label: str, box: Box) -> int:
        label = self.check_label(label)
        row_id = self._next_id
        self._next_id += 1
        self._commit(
            "add box", (*self._rows, Row(id=row_id, label=label, box=_check_box(box, self.image_size)))
        )
        return row_id

    def move_box(self, row_id: int, box: Box) -> bool:
        return self._replace_row("move box", row_id, box=_check_box(box, self.image_size))

    def remove(self, row_id: int) -> bool:
        """Delete a finding: an added one disappears, a predicted one is rejected."""
        row = self.row(row_id)
        if not row.added:
            return self._replace_row("delete", row_id, decision=Decision.REJECTED)
        return self._commit("delete", (r for r in self._rows if r.id != row_id))

    # ---- advice edits ---------------------------------------------------------------------------------
    def check_advice(self, text: str) -> str:
        text = (text or "").strip()
        if not text:
            raise ReviewError("choose a suggestion first")
        if self.advice_labels and text not in self.advice_labels:
            raise ReviewError(
                f"{text!r} is not a reconstruction suggestion; choose one of: {', '.join(self.advice_labels)}"
            )
        return text

    def _replace_advice(self, what: str, advice_id: int, **changes: Any) -> bool:
        self.advice_item(advice_id)  # a clear error for an unknown id
        return self._commit(
            what, advice=(replace(a, **changes) if a.id == advice_id else a for a in self._advice)
        )

    def accept_advice(self, advice_id: int) -> bool:
        if not self.advice_item(advice_id).predicted:
            return False  # the reviewer's own suggestion needs no acceptance
        return self._replace_advice("accept advice", advice_id, decision=Decision.ACCEPTED)

    def reject_advice(self, advice_id: int) -> bool:
        """Reject a predicted suggestion; an added one is simply removed."""
        if not self.advice_item(advice_id).predicted:
            return self._commit("remove advice", advice=(a for a in self._advice if a.id != advice_id))
        return self._replace_advice("reject advice", advice_id, decision=Decision.REJECTED)

    def add_advice(self, text: str) -> int:
        """Add a suggestion the model missed; returns its id (a rejected prediction of it is accepted)."""
        text = self.check_advice(text)
        for a in self._advice:
            if a.text == text:
                if not a.kept:
                    self._replace_advice("add advice", a.id, decision=Decision.ACCEPTED)
                return a.id
        advice_id = self._next_advice_id
        self._next_advice_id += 1
        self._commit("add advice", advice=(*self._advice, AdviceItem(id=advice_id, text=text)))
        return advice_id

    def apply_layer(self, boxes: Mapping[int, Box], new: Sequence[tuple[str, Box]] = ()) -> list[int]:
        """Bring the review in line with the Shapes layer in one undo step; returns the ids of `new`.

        `boxes` maps the row id of every shape still on the layer to its current box; shown rows that
        are missing were deleted there, rows whose box differs were moved or resized. `new` are shapes
        drawn since, with the label they got.
        """
        labels = [self.check_label(label) for label, _ in new]
        rows = []
        for r in self._rows:
            shown = r.box is not None and not r.rejected
            if shown and r.id not in boxes:
                if r.added:
                    continue
                r = replace(r, decision=Decision.REJECTED)
            elif shown:
                box = _check_box(boxes[r.id], self.image_size)
                if box != r.box:
                    r = replace(r, box=box)
            rows.append(r)
        ids = []
        for label, (_, box) in zip(labels, new, strict=True):
            rows.append(Row(id=self._next_id, label=label, box=_check_box(box, self.image_size)))
            ids.append(self._next_id)
            self._next_id += 1
        self._commit("edit boxes" if not new else "draw box", rows)
        return ids


def prediction_of(record: ReviewRecord) -> AnalysisResult | None:
    """The model output a stored review was made from, whole, or None for a review without a prediction."""
    return record.prediction()
