"""Ptychography helpers: display options (phase ramp, unwrapping, cropping), cheap quantitative evidence,
and preparing an image for the model with both (`prepare`).

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
from napari_fracto.ptycho.prepare import (
    Prepared,
    ScanGeometry,
    evidence_lines,
    evidence_record,
    prepare_image,
)

__all__ = [
    "DisplayOptions",
    "DisplayedObject",
    "Evidence",
    "EvidenceThresholds",
    "Prepared",
    "ScanGeometry",
    "compare_with_model",
    "crop_to_scanned",
    "estimate_phase_ramp",
    "evidence_lines",
    "evidence_record",
    "measure_evidence",
    "prepare_image",
    "remove_phase_ramp",
    "scan_step_from_positions",
    "scanned_region",
    "unwrap_phase",
]
