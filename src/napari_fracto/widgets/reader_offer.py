"""The one-line offer in Analyze: make napari-fracto napari's reader for SEM TIFFs (yes / no thanks)."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget


class ReaderOffer(QWidget):
    """Hidden until a microscope TIFF arrives from another reader; a yes changes napari's settings."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.label = QLabel(
            "This TIFF was opened by another reader, which drops the SEM scale. Make napari-fracto "
            "napari's reader for .tif/.tiff? (napari then stops asking; change it in Preferences > Plugins)"
        )
        self.label.setWordWrap(True)
        buttons = QHBoxLayout()
        self.yes_button = QPushButton("Use napari-fracto for TIFF")
        self.no_button = QPushButton("No, thanks")
        buttons.addWidget(self.yes_button)
        buttons.addWidget(self.no_button)
        layout.addWidget(self.label)
        layout.addLayout(buttons)
        self.yes_button.clicked.connect(self._yes)
        self.no_button.clicked.connect(self._no)
        self.setVisible(False)

    def update_for(self, layer: Any) -> None:
        from napari_fracto.reader_preference import should_offer

        self.setVisible(layer is not None and should_offer(layer))

    def _yes(self) -> None:
        from napari.utils.notifications import show_info

        from napari_fracto.reader_preference import make_preferred

        changed = make_preferred()
        self.setVisible(False)
        show_info(f"napari-fracto is now napari's reader for {', '.join(changed) or 'TIFF'}.")

    def _no(self) -> None:
        from napari_fracto.reader_preference import decline

        decline()
        self.setVisible(False)
