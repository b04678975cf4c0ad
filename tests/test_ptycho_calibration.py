"""The Pty-chi calibration set: what it covers, and the verdicts on a subset regenerated here.

The regeneration needs the Pty-chi environment (NAPARI_FRACTO_PTYCHI_PYTHON, as CI builds it; see
scripts/make_ptycho_samples.py) and skips without it. Five cases, about half a minute on one core.
"""

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from napari_fracto.ptycho import measure_evidence

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _generator():
    spec = importlib.util.spec_from_file_location(
        "make_ptycho_calibration", SCRIPTS / "make_ptycho_calibration.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
    return module


def test_the_set_has_five_varied_cases_per_cause():
    cases = _generator().CASES
    per_cause = Counter(name.rsplit("_", 1)[0] for name in cases)
    assert set(per_cause) >= {
        "clean",
        "grid",
        "position",
        "overlap",
        "lowdose",
        "modose",
        "probe",
        "underconv",
        "thick",
        "ramp",
    }
    assert min(per_cause.values()) >= 5
    assert len({c.probe_px for c in cases.values()}) >= 4
    assert any(c.field_px[0] != c.field_px[1] for c in cases.values())  # non-square buffers
    assert {c.scan for c in cases.values()} == {"spiral", "jittered", "raster"}
    assert len({(c.amplitude_image, c.phase_image) for c in cases.values()}) >= 5
    assert all(c.scan == "raster" for name, c in cases.items() if name.startswith("grid_"))


def _ptychi_python() -> str | None:
    candidate = os.environ.get("NAPARI_FRACTO_PTYCHI_PYTHON", str(SCRIPTS.parent / ".venv-ptychi/bin/python"))
    if not Path(candidate).exists():
        return None
    probe = subprocess.run([candidate, "-c", "import ptychi"], capture_output=True, timeout=120)
    return candidate if probe.returncode == 0 else None


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    python = _ptychi_python()
    if python is None:
        pytest.skip(
            "no Pty-chi environment: set NAPARI_FRACTO_PTYCHI_PYTHON (see scripts/make_ptycho_samples.py)"
        )
    out = tmp_path_factory.mktemp("calibration")
    names = ["clean_1", "grid_1", "ramp_2", "thick_1", "underconv_2"]
    done = subprocess.run(
        [python, str(SCRIPTS / "make_ptycho_calibration.py"), "--out", str(out), "--cases", *names],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())["cases"]
    cases = {}
    for name in names:
        with np.load(out / manifest[name]["file"]) as z:
            positions = np.column_stack([z["ycoords"], z["xcoords"]])
            cases[name] = (z["objectGuess"], positions, z["probeGuess"].shape, manifest[name])
    return cases


def _verdicts(case):
    obj, positions, probe_shape, _ = case
    return (
        measure_evidence(obj, positions_px=positions, probe_shape=probe_shape),
        measure_evidence(obj),  # the raw buffer, as a .npy would come: no positions, unlit rim included
    )


@pytest.mark.slow
def test_clean_weak_phase_non_square_case_gets_no_flag(subset):
    with_positions, raw = _verdicts(subset["clean_1"])
    assert subset["clean_1"][0].shape == (112, 152)
    assert subset["clean_1"][3]["params"]["phase_max"] == 0.7  # a weak phase object
    assert with_positions.flags() == set()
    assert raw.flags() == set()
    assert with_positions.scan_step_px == pytest.approx(7.0, rel=0.02)  # a spiral's step, not 4 % low


@pytest.mark.slow
def test_raster_grid_is_flagged_at_its_step(subset):
    with_positions, _ = _verdicts(subset["grid_1"])
    assert with_positions.scan_step_px == pytest.approx(8.0, abs=0.01)
    assert "Grid artifacts" in with_positions.flags()


@pytest.mark.slow
def test_ramp_thick_and_under_converged_cases_get_their_flags(subset):
    for name, label in (
        ("ramp_2", "Phase ramp"),
        ("thick_1", "Singularity artifacts"),
        ("underconv_2", "Low contrast"),
    ):
        with_positions, raw = _verdicts(subset[name])
        assert label in with_positions.flags(), name
        assert label in raw.flags(), name
