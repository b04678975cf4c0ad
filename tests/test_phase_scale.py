"""Integer phase images (a 16-bit phase TIFF) are counts, not radians: with the value-to-radian scale the
user gives, the display options and the evidence measure radians, and the scale travels in the record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_fracto.analysis import analyze_array
from napari_fracto.cli import build_parser, request_options
from napari_fracto.ptycho.display import DisplayOptions
from napari_fracto.request import AnalysisRequest, RequestError
from napari_fracto.testing.scripted import ScriptedBackend

SCALE = 2 * np.pi / 65536  # a uint16 image holding -pi..pi


def _counts_with_ramp(size: int = 96) -> np.ndarray:
    """A weak object on a strong phase ramp (8 rad across), stored as uint16 counts of -pi..pi, wrapped."""
    rng = np.random.default_rng(0)
    _, xx = np.indices((size, size))
    phase = 8.0 * xx / size + 0.3 * rng.standard_normal((size, size))
    wrapped = np.angle(np.exp(1j * phase))
    return np.round((wrapped + np.pi) / SCALE).clip(0, 65535).astype(np.uint16)


def _answer() -> ScriptedBackend:
    return ScriptedBackend(json.dumps({"labels": [{"label": "Phase ramp"}]}))


def test_without_a_scale_integer_phase_gets_no_evidence_and_says_why():
    result = analyze_array(_counts_with_ramp(), task="ptychography", backend=_answer())
    assert "value-to-radian scale" in result.evidence["unavailable"]


def test_with_the_scale_the_evidence_is_in_radians_and_the_record_keeps_the_scale():
    result = analyze_array(
        _counts_with_ramp(),
        task="ptychography",
        backend=_answer(),
        display=DisplayOptions(ramp=False, unwrap=True),
        phase_scale=SCALE,
    )
    assert "unavailable" not in result.evidence
    assert result.request.phase_scale == pytest.approx(SCALE)
    assert AnalysisRequest.from_dict(result.request.to_dict()) == result.request
    # counts taken as radians would make every pixel a residue; radians give a clean unwrapped field
    assert result.evidence["residue_fraction"] < 0.01


def test_the_cli_flag_becomes_the_request_option_and_refuses_nonsense():
    parser = build_parser()
    args = parser.parse_args(["analyze", "x.tif", "--task", "ptychography", "--phase-scale", "9.5874e-05"])
    assert request_options(args)["phase_scale"] == pytest.approx(9.5874e-05)
    bad = parser.parse_args(["analyze", "x.tif", "--task", "ptychography", "--phase-scale", "0"])
    with pytest.raises(ValueError, match="positive"):
        request_options(bad)
    with pytest.raises(RequestError, match="phase_scale"):
        AnalysisRequest(task="ptychography", phase_scale=-1.0)
