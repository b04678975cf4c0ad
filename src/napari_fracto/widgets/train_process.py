"""The Train process: start, resume and stop `python -m napari_fracto.training train` in a QProcess, and
show what its JSON-lines output says (progress, loss plot, base-vs-adapter table).

A part of TrainWidget (widgets/train.py), split out to keep each file small; it works on the widget's
own attributes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from qtpy.QtCore import QProcess, QProcessEnvironment
from qtpy.QtWidgets import QTableWidgetItem

from napari_fracto.training.progress import TrainStatus

KILL_AFTER_MS = 15000


class TrainProcessMixin:
    """The training process of the Train widget and the display of its progress."""

    # -- start / resume --------------------------------------------------------------------------------

    def start(self) -> None:
        from napari_fracto.training.runfolder import new_run_dir

        if self.process is not None:
            return
        problem = self._check_inputs()
        if problem:
            self.error_panel.show_message(problem)
            self.progress_label.setText(problem)
            return
        name = self.name_edit.text().strip() or Path(self.model_combo.currentText().strip() or "adapter").name
        self.run_dir = new_run_dir(name)
        self._launch(self.command(self.run_dir))

    def resume(self) -> None:
        """Continue the stopped run (`train --resume RUN_DIR`), from its newest checkpoint."""
        if self.process is not None or self.run_dir is None:
            return
        self._launch(["-m", "napari_fracto.training", "train", "--resume", str(self.run_dir)])

    def _launch(self, args: list[str]) -> None:
        self.error_panel.clear()
        self.evaluation_label.setText("")
        self.resume_button.setEnabled(False)
        self.state.last_run = str(self.run_dir)
        self.status = TrainStatus(state="starting", run_dir=str(self.run_dir))
        self._stdout_buffer = ""
        self.stderr_tail = []
        self.results_table.setRowCount(0)
        self.loss_plot.set_data([], [])
        process = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        process.setProcessEnvironment(env)
        process.readyReadStandardOutput.connect(self._read_stdout)
        process.readyReadStandardError.connect(self._read_stderr)
        process.finished.connect(self._process_finished)
        process.errorOccurred.connect(self._process_error)
        self.process = process
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.stop_button.setText("Stop")
        self.progress_label.setText(f"starting… (run folder {self.run_dir})")
        process.start(sys.executable, args)

    def stop(self) -> None:
        """First press: ask for a clean stop (checkpoint saved). Second press: terminate the process."""
        if self.process is None:
            return
        if self.run_dir is not None and not (self.run_dir / "STOP").exists() and self.run_dir.is_dir():
            (self.run_dir / "STOP").write_text("stop requested from napari\n", encoding="utf-8")
            self.progress_label.setText("stopping after the current step (saving a checkpoint)…")
            self.stop_button.setText("Force stop")
        else:
            self.process.terminate()
            self.progress_label.setText("terminating…")
            self.stop_button.setEnabled(False)

    def shutdown(self) -> None:
        """End a running training process (closing the widget or napari); waits briefly, then kills."""
        process = self.process
        if process is None:
            return
        process.terminate()
        if not process.waitForFinished(KILL_AFTER_MS):
            process.kill()
            process.waitForFinished(3000)

    def _read_stdout(self) -> None:
        if self.process is None:
            return
        self._stdout_buffer += bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        *lines, self._stdout_buffer = self._stdout_buffer.split("\n")
        for line in lines:
            self.status.feed(line)
        self._refresh()

    def _read_stderr(self) -> None:
        if self.process is None:
            return
        text = bytes(self.process.readAllStandardError()).decode("utf-8", "replace")
        self.stderr_tail = (self.stderr_tail + text.splitlines())[-40:]

    def _process_error(self, error: Any) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self.status.state = "failed"
            self.status.message = (
                f"could not start {sys.executable}: {self.process.errorString() if self.process else ''}"
            )
            self._process_finished(-1, None)

    def _process_finished(self, exit_code: int, exit_status: Any) -> None:
        from napari_fracto.widgets._common import show_info

        if self.process is None:
            return
        self._read_stdout()
        self._read_stderr()
        if self._stdout_buffer:
            self.status.feed(self._stdout_buffer)
            self._stdout_buffer = ""
        process, self.process = self.process, None
        process.deleteLater()
        if self.status.state not in ("finished", "stopped", "failed"):
            if exit_code == 130:
                self.status.state = "stopped"
                self.status.message = "Stopped."
            else:
                self.status.state = "failed"
                detail = next((ln for ln in reversed(self.stderr_tail) if ln.strip()), "")
                self.status.message = f"Training ended unexpectedly (exit code {exit_code}). {detail}"
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self.resume_button.setEnabled(self.status.state == "stopped")
        self._refresh()
        if self.status.state == "failed":
            details = "\n".join(self.stderr_tail)
            self.error_panel.show_message(self.status.message, details)
        elif self.status.message:
            show_info(self.status.message)
        if self.status.state == "finished" and self.status.adapter:
            # the loop closes here: Analyze and Evaluate select the new adapter
            self.state.last_adapter_name = self.status.name
            self.state.adapter = self.status.adapter
        self.finished.emit(self.status.state)

    # -- display -------------------------------------------------------------------------------------

    def _refresh(self) -> None:
        s = self.status
        if s.state == "evaluating":
            self.progress_bar.setRange(0, max(s.eval_total, 1))
            self.progress_bar.setValue(s.eval_done)
        else:
            self.progress_bar.setRange(0, max(s.total_steps, 1))
            self.progress_bar.setValue(min(s.step, max(s.total_steps, 1)))
        text = s.progress_text() if s.running else (s.message or s.state)
        self.progress_label.setText(text)
        self.loss_plot.set_data(s.losses, s.eval_losses)
        rows = s.comparison_rows()
        self.results_table.setRowCount(len(rows))
        for r, (model, scores) in enumerate(rows):
            label = model if model == "base" else f"adapter {s.name}".strip()
            values = [label] + [
                _fmt(scores.get(k)) for k in ("micro_f1", "set_precision", "parse_failure_rate")
            ]
            for c, value in enumerate(values):
                self.results_table.setItem(r, c, QTableWidgetItem(value))
        self.evaluation_label.setText(evaluation_note(s))


def evaluation_note(status: TrainStatus) -> str:
    """Why the base-vs-adapter table is empty after a run ("" while running or when it has rows)."""
    if status.running or status.comparison_rows() or status.state not in ("finished", "failed"):
        return ""
    evaluation = status.evaluation or {}
    errors = evaluation.get("errors") or {}
    if errors:
        return "No evaluation: " + "; ".join(f"{k}: {v}" for k, v in errors.items())
    note = evaluation.get("note") or "no final evaluation was reported (see the run folder's log)"
    return f"No evaluation beside the base model: {note}"


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"
