"""The Analyze dock widget: one image layer through one vision-language model, findings as an overlay.

The model runs in a napari thread worker (napari stays responsive); layers are only touched in the slot
that receives the result, on the UI thread. The backend is cached between runs while its settings are
unchanged, because loading a local model takes a while.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QMessageBox,
    QWidget,
)

from napari_fracto.analysis_job import AnalysisJob
from napari_fracto.findings import AnalysisContext, AnalysisResult
from napari_fracto.loop_state import loop_state
from napari_fracto.training.registry import AdapterChoice
from napari_fracto.viewer_layers import (
    Plane,
    displayed_plane,
    ptycho_parts,
)
from napari_fracto.widgets._binding import bind_text
from napari_fracto.widgets._common import (
    Outcome,
    ProgressRelay,
    confirm_remote_host,
    fit_width,
    run_catching,
    show_error,
    show_info,
)
from napari_fracto.widgets.analyze_adapters import AdaptersMixin
from napari_fracto.widgets.analyze_form import FormMixin
from napari_fracto.widgets.analyze_layers import LayersMixin
from napari_fracto.widgets.analyze_results import ResultsMixin
from napari_fracto.widgets.download_watch import DownloadWatch

if TYPE_CHECKING:
    from collections.abc import Callable

    import napari

    from napari_fracto.backends.base import Backend
    from napari_fracto.settings import BackendSettings

logger = logging.getLogger(__name__)


def _ask_user(message: str) -> bool:
    """The default remote-host confirmation: a modal question, 'No' as the default answer."""
    answer = QMessageBox.question(
        None,
        "Send the image to a remote server?",
        message,
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


def _default_make_backend(settings: BackendSettings, api_key: str | None) -> Backend:
    from napari_fracto.backends.factory import make_backend

    return make_backend(settings, api_key=api_key)


class AnalyzeWidget(FormMixin, AdaptersMixin, LayersMixin, ResultsMixin, QWidget):
    """Dock widget: pick an image, describe the sample, choose a model, press Analyze.

    Test and embedding hooks: `make_backend(settings, api_key)` builds the backend and
    `confirm_remote(message) -> bool` asks before an image leaves the machine.
    """

    result_ready = Signal(object)  # the AnalysisResult, after the overlay is applied
    run_finished = Signal()  # back to idle, whatever happened

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.make_backend: Callable[[BackendSettings, str | None], Backend] = _default_make_backend
        self.confirm_remote: Callable[[str], bool] = _ask_user
        self.last_result: AnalysisResult | None = None
        self.state = loop_state(napari_viewer)
        self._results: dict[str, tuple[AnalysisResult, Plane | None]] = {}  # image layer -> last result
        self._shown_for: str | None = None  # the image whose verdict is on the canvas
        self._backend: Backend | None = None
        self._backend_key: str | None = None
        self._job: AnalysisJob | None = None
        self._worker: Any = None
        self._relay = ProgressRelay(self)
        self._relay.progress.connect(self._on_progress)
        self._download: DownloadWatch | None = None
        # read by handlers that fire while the form is built (a combo's first item, the task's default)
        self._form_built = False
        self._adapter_choices: list[AdapterChoice] = []
        self._settings: BackendSettings | None = None
        self._in_display_update = False
        # display previews: computed in workers, the last few kept; a newer toggle makes older ones stale
        self._previews: OrderedDict[Any, Any] = OrderedDict()
        self._preview_generation = 0
        self._preview_workers: set[Any] = set()

        self._build_ui()
        self._form_built = True
        self._load_settings()
        self._refresh_layers()
        self.viewer.layers.events.inserted.connect(self._on_layer_inserted)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self.viewer.layers.selection.events.active.connect(self._on_active_layer)
        for layer in self.viewer.layers:
            layer.events.name.connect(self._refresh_layers)
        self._bind_state()
        fit_width(self)
        self._set_busy(False)

    def _bind_state(self) -> None:
        """Task, backend, model, device, examples dataset and adapter are the viewer's shared choices."""
        bind_text(self.task_combo, self.state, "task")
        bind_text(self.kind_combo, self.state, "kind")
        bind_text(self.model_edit, self.state, "model")
        bind_text(self.device_combo, self.state, "device")
        bind_text(self.examples_edit, self.state, "dataset")
        if self.state.adapter:
            self.set_adapter_path(self.state.adapter)
        else:
            self.state.adapter = self.adapter_path()
        self.state.events.adapter.connect(self._on_shared_adapter)
        self.state.events.model.connect(self.refresh_adapters)

    # ---- settings -------------------------------------------------------------------------------------
    def _load_settings(self) -> None:
        from napari_fracto.settings import load_settings, settings_path

        # first use: open the model settings, there is something to choose
        self.model_section.set_expanded(not settings_path().exists())
        self._settings = load_settings()
        s = self._settings
        self.kind_combo.setCurrentText(s.kind)
        self.model_edit.setText(s.model)
        self.base_url_edit.setText(s.base_url)
        self.refresh_adapters()
        self.set_adapter_path(s.adapter)
        self.device_combo.setCurrentText(s.device)
        self.tokens_spin.setValue(s.max_image_tokens)
        self._on_kind_changed(s.kind)
        self._on_task_changed(self.task_combo.currentText())

    def current_settings(self) -> BackendSettings:
        """The settings the form describes (fields the form does not show keep their saved values)."""
        return self._settings.model_copy(
            update={
                "kind": self.kind_combo.currentText(),
                "model": self.model_edit.text().strip(),
                "base_url": self.base_url_edit.text().strip(),
                "adapter": self.adapter_path(),
                "device": self.device_combo.currentText(),
                "max_image_tokens": self.tokens_spin.value(),
            }
        )

    def context(self) -> AnalysisContext:
        return AnalysisContext(
            material=self.material_edit.text().strip(),
            sample_type=self.sample_type_edit.text().strip(),
            magnification=self.magnification_edit.text().strip(),
            notes=self.notes_edit.text().strip(),
            instrument=self.instrument_edit.text().strip(),
        )

    # ---- running --------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._job is not None

    def _set_busy(self, busy: bool) -> None:
        self.analyze_button.setEnabled(not busy and self.image_combo.count() > 0)
        self.cancel_button.setEnabled(busy)
        if busy:
            self.progress_bar.setRange(0, 0)  # indeterminate until the first tile is done
        else:
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(0)

    def analyze(self) -> None:
        """Start analysing the selected image (the plane on screen for a stack); returns at once."""
        if self.busy:
            return
        layer = self._selected_layer()
        if layer is None:
            show_error("Open an image first, then pick it in the Analyze panel's 'Image' list.")
            return
        try:
            plane = displayed_plane(layer, self.viewer)
            settings = self._validated_settings()
        except ValueError as exc:
            show_error(str(exc))
            return
        if not settings.model:
            self.model_section.set_expanded(True)
            show_error("Enter a model: a Hugging Face id, a local model folder, or the served model name.")
            return
        examples = self.examples_choice()
        if examples is not None and not examples.dataset:
            self.examples_section.set_expanded(True)
            show_error(
                f"{examples.shots} in-context example(s) need a corrections dataset: pick its folder under "
                "'Examples', or set Shots to 0."
            )
            return
        from napari_fracto.settings import save_settings

        try:
            save_settings(settings)
        except OSError as exc:
            logger.warning("Could not save the backend settings: %s", exc)
        self._settings = settings
        if settings.kind == "openai" and not self._remote_confirmed(settings):
            show_info("Not sent: the remote server was not confirmed.")
            return
        second = self.second_opinion_edit.text().strip()
        if second and not self._second_opinion_allowed(second):
            return

        api_key = self.api_key_edit.text().strip() or None
        key = settings.model_dump_json() + "\0" + (api_key or "")
        if key != self._backend_key:
            self._close_backend()
            self._backend_key = key
        parts = ptycho_parts(self.viewer, layer) if not plane.leading else None
        task = self.task_combo.currentText()
        job = AnalysisJob(
            array=plane.array,
            task=task,
            settings=settings,
            api_key=api_key,
            backend=self._backend,
            make_backend=self.make_backend,
            context=self.context(),
            tiles=self.tiles_spin.value(),
            advice=self.advice_check.isEnabled() and self.advice_check.isChecked(),
            source=plane.source,
            cancel=threading.Event(),
            progress=self._relay,
            amplitude=parts.amplitude.data if parts is not None and parts.amplitude is not None else None,
            display=self.display_options(),
            geometry=parts.geometry if parts is not None else None,
            recon_settings=self.recon_settings_edit.toPlainText().strip() if task == "ptychography" else "",
            examples=examples,
            second_opinion=second,
        )
        self._start(job, layer, plane)

    def _second_opinion_allowed(self, path: str) -> bool:
        """The second opinion's file reads, and its server (if any) may receive the image: asked here,
        on the Qt thread, before the worker starts."""
        from napari_fracto.errors import UserError
        from napari_fracto.second_opinion import load_second_opinion

        try:
            config = load_second_opinion(path)
        except (UserError, OSError, ValueError) as exc:
            self.second_section.set_expanded(True)
            self.error_panel.show_message(f"Second opinion: {exc}")
            return False
        if config.settings.kind == "openai" and not self._remote_confirmed(config.settings):
            show_info("Not sent: the second opinion's server was not confirmed.")
            return False
        return True

    def _validated_settings(self) -> BackendSettings:
        from pydantic import ValidationError

        from napari_fracto.adapters import choose_adapter

        try:
            # a registered adapter brings how its base loads (4-bit for QLoRA); the form keeps the budget
            return choose_adapter(self.current_settings(), keep_budget=True).settings
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"Check the model settings: {problems}") from None

    def _remote_confirmed(self, settings: BackendSettings) -> bool:
        return confirm_remote_host(settings.base_url, self.confirm_remote)

    def _start(self, job: AnalysisJob, layer: Any, plane: Plane) -> None:
        from napari.qt.threading import create_worker

        self._job = job
        self._set_busy(True)
        self.status_label.setText(f"Analysing {plane.source} …")
        if job.backend is None and job.settings.kind == "transformers":
            self._download = self._download or DownloadWatch(self.status_label, self)
            self._download.start(job.settings.model)  # shows size and progress when not cached yet
        worker = create_worker(run_catching, job.run, _start_thread=False)
        worker.returned.connect(lambda outcome: self._on_returned(job, outcome, layer, plane))
        worker.finished.connect(lambda: self._on_worker_finished(job))
        self._worker = worker
        worker.start()

    def cancel(self) -> None:
        """Stop the running analysis: the backend is told to stop, its answer (if any) is dropped."""
        job = self._job
        if job is None:
            return
        job.cancel.set()
        if self._worker is not None:
            self._worker.quit()
        self._job = None
        self._worker = None
        self._stop_download_watch()
        self.status_label.setText("Cancelled.")
        self._set_busy(False)
        self.run_finished.emit()

    def _stop_download_watch(self) -> None:
        if self._download is not None:
            self._download.stop()

    def _on_progress(self, done: int, total: int, _message: str = "") -> None:
        self._stop_download_watch()  # the model answers: it is loaded
        if self._job is not None and total > 0:
            self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(done)

    def _on_worker_finished(self, job: AnalysisJob) -> None:
        # Keep a freshly loaded model for the next run, even when this run was cancelled or failed.
        # Only a backend this job built is its to keep or close, and only once: the worker's `finished`
        # can arrive after the next run has already replaced (and closed) the cached one.
        if not job.built_backend:
            return
        job.built_backend = False
        if job.backend is not None and job.backend is not self._backend:
            if self._backend is None and self._backend_key == job.settings.model_dump_json() + "\0" + (
                job.api_key or ""
            ):
                self._backend = job.backend
            else:
                _close_quietly(job.backend)

    def _on_returned(self, job: AnalysisJob, outcome: Outcome, layer: Any, plane: Plane) -> None:
        if job is not self._job or job.cancel.is_set():
            return  # a cancelled run: its answer is no longer wanted
        self._job = None
        self._worker = None
        self._stop_download_watch()
        self._on_worker_finished(job)
        try:
            if outcome.cancelled:
                self.status_label.setText("Cancelled.")
            elif outcome.error:
                self.status_label.setText("Failed.")
                self.error_panel.show_outcome(outcome)
            else:
                analysed = replace(plane, array=job.analysed) if job.analysed is not None else plane
                self.show_result(outcome.value, layer, analysed)
        finally:
            self._set_busy(False)
            self.run_finished.emit()

    def report_job(self) -> Any:
        """The Report… button's job: the current image's last result and plane, or what is missing."""
        from napari_fracto.widgets.report_button import image_report_job

        name = self.image_combo.currentText()
        if name not in self._results:
            return "Analyze the current image first: the report shows its last result."
        result, plane = self._results[name]
        return image_report_job(result, plane.array if plane is not None else None, name)

    # ---- lifetime -------------------------------------------------------------------------------------
    def _close_backend(self) -> None:
        if self._backend is not None:
            _close_quietly(self._backend)
        self._backend = None

    def closeEvent(self, event: Any) -> None:
        self.cancel()
        self._close_backend()
        super().closeEvent(event)


def _close_quietly(backend: Backend) -> None:
    try:
        backend.close()
    except Exception:
        logger.exception("Closing the backend failed")
