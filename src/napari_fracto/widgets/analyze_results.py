"""A result on the canvas (one findings layer update) and in the panel.

A part of AnalyzeWidget (widgets/analyze.py), split out to keep each file small; it works on the
widget's own attributes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QTableWidgetItem,
)

from napari_fracto.findings import AnalysisResult
from napari_fracto.overlay import advice_text, as_sentence, canvas_text, label_definition
from napari_fracto.viewer_layers import (
    Plane,
    canvas_text_overlay,
)
from napari_fracto.widgets._common import (
    show_info,
    show_warning,
)

if TYPE_CHECKING:
    pass


class ResultsMixin:
    """A result on the canvas (one findings layer update) and in the panel."""

    # ---- results --------------------------------------------------------------------------------------
    def show_result(self, result: AnalysisResult, layer: Any, plane: Plane | None = None) -> Any:
        """Put `result` on the canvas (replacing this image's findings layer) and in the panel."""
        from napari_fracto.overlay import (
            findings_layer_name,
            findings_to_shapes,
            unknown_labels_text,
            update_findings_layer,
            verdict_text,
        )
        from napari_fracto.vocabulary import load_vocabulary

        vocab = load_vocabulary(result.task)
        verdict = verdict_text(result, vocab)
        shapes = None
        if layer in self.viewer.layers:
            spec = findings_to_shapes(
                result,
                vocab,
                image_name=layer.name,
                scale=tuple(layer.scale),
                translate=tuple(layer.translate),
                units=tuple(str(u) for u in layer.units),
                plane=plane.leading if plane is not None else (),
            )
            name = findings_layer_name(layer.name)
            if name in self.viewer.layers:
                shapes = self.viewer.layers[name]
                update_findings_layer(shapes, spec)  # one layer update, no remove + add
            else:
                shapes = self.viewer.add_shapes(spec.data or None, **spec.layer_kwargs())
            self._results[layer.name] = (result, plane)
            self._shown_for = layer.name
        else:
            show_info("The image layer was closed while it was analysed; results are shown here only.")
        self.error_panel.clear()
        self._show_panel(result, vocab, verdict)
        self.status_label.setText(f"Done in {result.seconds:.1f} s ({result.backend}: {result.model}).")
        self.last_result = result
        if not result.parse_ok:
            show_warning(verdict + " The raw answer is under 'Model answer' in the Analyze panel.")
        if result.unknown_labels:
            show_info(unknown_labels_text(result) + ". Add them to the vocabulary if they are real findings.")
        self.result_ready.emit(result)
        return shapes

    def _show_panel(self, result: AnalysisResult, vocab: Any = None, verdict: str | None = None) -> None:
        """The verdict on the canvas and the panel's table, advice, evidence and raw answer."""
        from napari_fracto.overlay import unknown_labels_text, verdict_text
        from napari_fracto.vocabulary import load_vocabulary

        vocab = vocab if vocab is not None else load_vocabulary(result.task)
        verdict = verdict if verdict is not None else verdict_text(result, vocab)
        overlay = canvas_text_overlay(self.viewer)
        overlay.text = canvas_text(result, verdict)
        overlay.box = True  # readable on bright and dark images alike
        overlay.visible = True
        self.verdict_label.setText(verdict)
        self._fill_table(result, vocab)
        self.unknown_label.setText(unknown_labels_text(result))
        self.advice_label.setText(advice_text(result))
        self._show_evidence(result)
        self._show_second_opinion(result)
        self.raw_text.setPlainText(result.raw_text)
        self._shown_for = self.image_combo.currentText() or self._shown_for

    def _show_second_opinion(self, result: AnalysisResult) -> None:
        """Where the two configurations agree, label by label, and the second's own answer."""
        second = result.evidence.get("second_opinion")
        self.second_result_section.setVisible(bool(second))
        if not second:
            self.second_label.setText("")
            return
        if second.get("error"):
            self.second_label.setText(f"{second.get('source', '')}: no answer ({second['error']})")
            return
        agreement = dict(second.get("agreement", {}))
        groups = {
            how: [label for label, h in agreement.items() if h == how] for how in ("both", "first only")
        }
        groups["second only"] = [label for label, h in agreement.items() if h == "second only"]
        lines = [f"{second.get('source', 'second opinion')}:"]
        for how, text in (
            ("both", "both name"),
            ("first only", "only this model"),
            ("second only", "only the second"),
        ):
            lines.append(f"{text}: {', '.join(groups[how]) or '—'}")
        lines.append(f"Its answer: {str(second.get('text', '')).strip()[:2000]}")
        self.second_label.setText("\n".join(lines))

    def _show_evidence(self, result: AnalysisResult) -> None:
        from napari_fracto.ptycho.prepare import evidence_lines

        disagreements = list(result.evidence.get("disagreements", ()))
        self.disagreement_label.setText(
            "\n".join(f"⚠ {as_sentence(d)}" for d in disagreements) if disagreements else ""
        )
        lines = evidence_lines(result.evidence)
        if result.preprocessing:
            lines.append(f"Sent to the model: {result.preprocessing}")
        settings = result.evidence.get("reconstruction_settings")
        if settings:
            lines.append(f"Reconstruction settings given: {settings}")
        self.evidence_label.setText("\n".join(lines))
        self.evidence_section.setVisible(bool(lines))

    def _fill_table(self, result: AnalysisResult, vocab: Any) -> None:
        table = self.results_table
        table.setRowCount(len(result.findings))
        for row, finding in enumerate(result.findings):
            definition = label_definition(vocab, finding.label)
            conf = "" if finding.confidence is None else f"{finding.confidence:.2f}"
            for col, text in enumerate((finding.label, conf, "yes" if finding.box else "no")):
                item = QTableWidgetItem(text)
                item.setToolTip(definition)
                table.setItem(row, col, item)
