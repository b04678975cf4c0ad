"""Ptychography helpers: display options (phase ramp, unwrapping, cropping) and cheap quantitative evidence.

Pure numpy/scikit-image: importable without Qt or torch.
"""

from napari_fracto.ptycho.display import (
    DisplayedObject,
    DisplayOptions,
    crop_to_scanned,
    estimate_phase_ramp,
    remove_phase_ramp,
    scanned_region,
    unwrap_phase,
)
from napari_fracto.ptycho.evidence import (
    Evidence,
    EvidenceThresholds,
    compare_with_model,
    measure_evidence,
    scan_step_from_positions,
)

__all__ = [
    "DisplayOptions",
    "DisplayedObject",
    "Evidence",
    "EvidenceThresholds",
    "compare_with_model",
    "crop_to_scanned",
    "estimate_phase_ramp",
    "measure_evidence",
    "remove_phase_ramp",
    "scan_step_from_positions",
    "scanned_region",
    "unwrap_phase",
]
