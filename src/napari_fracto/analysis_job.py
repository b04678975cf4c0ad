"""One Analyze run as a plain object: built on the UI thread, run in a worker, read back on the UI thread.

No Qt and no model import at module level, so the run is testable (and reusable) without a widget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable

    from napari_fracto.backends.base import Backend
    from napari_fracto.findings import AnalysisContext, AnalysisResult
    from napari_fracto.ptycho.display import DisplayOptions
    from napari_fracto.ptycho.prepare import ScanGeometry
    from napari_fracto.settings import BackendSettings


@dataclass(frozen=True)
class ExamplesChoice:
    """The Examples row: `shots` solved examples from `dataset`'s reviewed train images, by `method`."""

    dataset: str
    shots: int
    method: str = "similar"
    cache: Any = None  # an icl.FeatureCache kept by the widget, so features are computed once per image


@dataclass
class AnalysisJob:
    """One run; lives in the worker thread until it returns, then its fields are read on the UI thread."""

    array: Any
    task: str
    settings: BackendSettings
    api_key: str | None
    backend: Backend | None
    make_backend: Callable[[BackendSettings, str | None], Backend]
    context: AnalysisContext
    tiles: int
    advice: bool
    source: str
    cancel: threading.Event
    progress: Callable[[int, int], None]
    amplitude: Any = None  # the amplitude layer's plane of a ptychography object: analysed as complex
    display: DisplayOptions | None = None
    geometry: ScanGeometry | None = None
    recon_settings: str = ""
    examples: ExamplesChoice | None = None  # in-context examples from a corrections dataset
    second_opinion: str = ""  # a configuration file (TOML/JSON) asked beside the backend, its host confirmed
    built_backend: bool = False  # this job made its backend (rather than reusing the widget's)
    analysed: Any = None  # the array the model was asked about (complex for a phase + amplitude pair)

    def run(self) -> AnalysisResult:
        from napari_fracto.icl import example_chooser

        array = np.asarray(self.array)  # lazy (dask, zarr) planes load here, off the UI thread
        if self.amplitude is not None:  # phase + amplitude layers are one complex object again
            array = np.asarray(self.amplitude) * np.exp(1j * array.astype(np.float64))
        self.analysed = array  # what Send to review stores, so the stored request reproduces the input
        ex = self.examples
        # before the model loads: a dataset without reviewed train images fails fast
        chooser = (
            example_chooser(
                ex.dataset,
                self.task,
                ex.shots,
                ex.method,
                self.context,
                advice=self.advice,
                max_image_tokens=self.settings.max_image_tokens,
                cache=ex.cache,
            )
            if ex is not None
            else None
        )
        try:
            return self._analyze(array, chooser or ())
        finally:
            if chooser is not None:
                chooser.close()

    def _analyze(self, array: np.ndarray, examples: Any) -> AnalysisResult:

        if self.backend is None:
            self.backend = self.make_backend(self.settings, self.api_key)
            self.built_backend = True
        backend = self.backend
        if self.second_opinion:  # both asked at once (one Cancel stops both); consent asked beforehand
            from napari_fracto.second_opinion import paired_backend

            backend = paired_backend(self.backend, self.second_opinion, lambda _settings: True)
        try:
            return self._ask(array, examples, backend)
        finally:
            if backend is not self.backend:
                backend.close_second()

    def _ask(self, array: np.ndarray, examples: Any, backend: Backend) -> AnalysisResult:
        from napari_fracto.analysis import analyze_array
        from napari_fracto.sem_context import sem_options

        return analyze_array(
            array,
            task=self.task,
            backend=backend,
            max_image_tokens=self.settings.max_image_tokens,
            max_new_tokens=self.settings.max_new_tokens,
            tiles=self.tiles,
            source=self.source,
            advice=self.advice,
            display=self.display,
            geometry=self.geometry,
            recon_settings=self.recon_settings,
            examples=examples,
            cancel=self.cancel,
            progress=self.progress,
            **sem_options(self.source, array, self.context, display=self.display),
        )
