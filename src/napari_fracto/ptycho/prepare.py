"""A ptychography image made ready for the model: display options applied, evidence measured beside it.

The Analyze widget, the CLI and the batch share these, so an image is prepared the same way wherever it
is analysed. `ScanGeometry` is where the probe went, in pixels of the object array; it comes from a
product file (`from_product`) or from the scan-position Points layer napari shows (`from_world_points`).
Pure numpy: no Qt, no torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_fracto.ptycho.display import DisplayOptions

if TYPE_CHECKING:
    from napari_fracto.io.ptycho import PtychoProduct


@dataclass(frozen=True)
class ScanGeometry:
    """Probe centres as (row, column) object pixels, the probe's (h, w) in object pixels, the scan step."""

    positions_px: np.ndarray | None = None
    probe_shape: tuple[int, int] | None = None
    scan_step_px: float | None = None

    @property
    def can_crop(self) -> bool:
        return self.positions_px is not None and len(self.positions_px) > 0 and self.probe_shape is not None

    @classmethod
    def from_product(cls, product: PtychoProduct) -> ScanGeometry:
        """The geometry stored in a reconstruction file (positions in metres or pixels, probe size)."""
        from napari_fracto.io.ptycho import PtychoFormatError

        positions = None
        try:
            xy = product.positions_in_pixels()
        except PtychoFormatError:
            xy = None  # metres without a pixel size: cannot be placed on the object
        if xy is not None and len(xy):
            positions = np.ascontiguousarray(xy[:, ::-1])  # (x, y) -> (row, col)
        probe_shape = None
        if product.probe is not None and product.probe.size:
            ph, pw = product.probe.shape[-2:]
            if product.pixel_size_m and product.probe_pixel_size_m:
                (dx, dy), (pdx, pdy) = product.pixel_size_m, product.probe_pixel_size_m
                ph, pw = ph * pdy / dy, pw * pdx / dx
            probe_shape = (max(round(ph), 1), max(round(pw), 1))
        step = product.metadata.get("scan_step_px")
        return cls(positions, probe_shape, float(step) if isinstance(step, int | float) else None)

    @classmethod
    def from_world_points(
        cls,
        points_world: np.ndarray | None,
        image_scale: Iterable[float],
        image_translate: Iterable[float],
        probe_extent_world: tuple[float, float] | None = None,
        scan_step_px: float | None = None,
    ) -> ScanGeometry:
        """Geometry from napari: scan points and probe extent in world units, mapped onto the image's pixels.

        `points_world` are (row, col) world coordinates; a pixel's centre sits at its index, so the pixel
        coordinate is (world - translate) / scale on the image's last two axes.
        """
        scale = np.asarray(tuple(image_scale), dtype=np.float64)[-2:]
        translate = np.asarray(tuple(image_translate), dtype=np.float64)[-2:]
        positions = None
        if points_world is not None and len(points_world):
            pts = np.asarray(points_world, dtype=np.float64)[:, -2:]
            positions = (pts - translate) / scale
        probe_shape = None
        if probe_extent_world is not None:
            h, w = (np.asarray(probe_extent_world, dtype=np.float64) / scale).tolist()
            probe_shape = (max(round(h), 1), max(round(w), 1))
        return cls(positions, probe_shape, scan_step_px)


@dataclass
class Prepared:
    """The plane to send, its offset in the original array, and what was done in words."""

    image: np.ndarray  # the input untouched without options; else the real `part` as shown
    offset: tuple[int, int]  # (row, col) of the image's top-left pixel in the original array
    preprocessing: str
    evidence_input: np.ndarray  # the data as reconstructed (cropped, never ramp-removed), for the measures


def prepare_image(
    plane: np.ndarray,
    options: DisplayOptions | None,
    geometry: ScanGeometry | None = None,
    part: str = "phase",
    region: tuple[slice, slice] | None = None,
) -> Prepared:
    """Apply `options` (None: nothing) to a 2-D complex object or real phase image.

    With options the image is real: the phase as shown (unwrapped when asked, which a complex array
    could not carry) or, for `part="amplitude"`, the cropped amplitude. A real input is taken as phase.
    `region` is the scanned region already measured (a stored request's crop); else `geometry` finds it.
    Raises ValueError with a message naming the options when the image is not one plane of phase or
    object (RGB, say).
    """
    arr = np.asarray(plane)
    if options is None:
        return Prepared(arr, (0, 0), "", arr)
    if part not in ("phase", "amplitude"):
        raise ValueError(f"part must be 'phase' or 'amplitude', got {part!r}")
    if arr.ndim != 2:
        raise ValueError(
            f"The ptychography display options (remove ramp, unwrap, crop) need one 2-D phase or complex "
            f"object plane, got shape {arr.shape}; switch them off for this image."
        )
    if arr.dtype.kind in "iub" and (options.ramp or options.unwrap):
        raise ValueError(
            f"The image holds {arr.dtype} values, not phase in radians: removing a ramp or unwrapping would "
            "take the counts as radians. Save the phase as float radians (value x rad-per-count), or switch "
            "off Remove phase ramp and Unwrap phase for this image."
        )
    geometry = geometry or ScanGeometry()
    positions = geometry.positions_px if geometry.can_crop and region is None else None
    shown = options.apply(
        arr, positions, geometry.probe_shape if positions is not None else None, region=region
    )
    offset = (0, 0)
    if options.crop and shown.region is not None:
        offset = (int(shown.region[0].start), int(shown.region[1].start))
    image = shown.amplitude if part == "amplitude" and np.iscomplexobj(arr) else shown.phase
    # the evidence is measured on the data, cropped like the display but with its ramp and wraps intact:
    # a ramp the display removed must still be reported
    measured = arr[shown.region] if options.crop and shown.region is not None else arr
    done = options.describe()
    if part == "amplitude" and np.iscomplexobj(arr):
        done += " (amplitude sent)"
    if shown.notes:
        done += ". Done: " + "; ".join(shown.notes)  # the measured crop and ramp, for the reviewer
    return Prepared(image, offset, done, measured)


def evidence_record(
    image: np.ndarray,
    geometry: ScanGeometry | None,
    model_labels: Iterable[str] | None,
    offset: tuple[int, int] = (0, 0),
    phase_scale: float | None = None,
) -> dict[str, Any]:
    """`measure_evidence(...).to_dict()` plus `disagreements` with the model's labels (None: not compared).

    `offset` is where `image` starts in the array the geometry's positions refer to (a crop), so the
    scanned region is found in `image` too. Integer images need `phase_scale` (rad per count). Never raises
    for a bad image: the record then says why no evidence was measured (`unavailable`).
    """
    from napari_fracto.ptycho.evidence import compare_with_model, measure_evidence

    geometry = geometry or ScanGeometry()
    arr = np.asarray(image)
    if arr.dtype.kind not in "fc" and phase_scale is None:
        return {
            "unavailable": f"no evidence measured: the image is {arr.dtype}, counts not radians; the "
            "measures need phase in radians or a complex object (.npz/.h5/.cxi/.npy, float TIFF), or the "
            "value-to-radian scale of an integer phase image (`--phase-scale RAD_PER_VALUE`)"
        }
    positions = geometry.positions_px
    if positions is not None and len(positions):
        positions = np.asarray(positions, dtype=np.float64) - np.asarray(offset, dtype=np.float64)
    try:
        evidence = measure_evidence(
            arr,
            scan_step_px=geometry.scan_step_px,
            positions_px=positions,
            probe_shape=geometry.probe_shape,
            phase_scale=phase_scale,
        )
    except ValueError as exc:
        return {"unavailable": f"no evidence measured: {exc}"}
    record = evidence.to_dict()
    if model_labels is not None:  # an unreadable answer is not compared: it would "disagree" with everything
        record["disagreements"] = compare_with_model(evidence, list(model_labels))
    return record


def evidence_lines(record: dict[str, Any]) -> list[str]:
    """The evidence as short 'measure: value (threshold)' lines for a panel; flagged ones marked."""
    if not record:
        return []
    if "unavailable" in record:
        return [str(record["unavailable"])]
    if "thresholds" not in record:  # no measures (e.g. only a second opinion or reconstruction settings)
        return []
    from napari_fracto.ptycho.evidence import BLUR, GRID, LOW_CONTRAST, RAMP, SINGULARITY

    t = record.get("thresholds", {})
    flags = set(record.get("flags", ()))
    grid_threshold = t.get("grid_ratio_searched" if record.get("step_source") == "searched" else "grid_ratio")
    if record.get("grid_period_px") is None:
        if record.get("step_source") == "unknown":
            grid = "grid peak: step unknown (no positions; no peak confirmed by its harmonic)"
        else:
            grid = "grid peak: not checked (no scan step)"
    else:
        grid = (
            f"grid peak at {record['grid_period_px']:.3g} px: {record['grid_ratio']:.1f}x background "
            f"({record.get('grid_component', 'phase')}; flag from {grid_threshold:.0f}x)"
        )
    rows = [
        ("", f"measured on {record.get('measured_on', 'the whole image')}, as reconstructed"),
        (GRID, grid),
        (
            RAMP,
            f"phase ramp: {record['ramp_across_field_rad']:.2f} rad across the field "
            f"(flag from {t.get('ramp_across_field_rad', float('nan')):.2f})",
        ),
        (
            LOW_CONTRAST,
            f"contrast: {record.get('signal_rad', 0.0):.2f} rad signal, "
            f"{record.get('contrast_to_noise', 0.0):.1f}x the noise "
            f"(flag at {t.get('contrast_to_noise', float('nan')):.1f}x or less)",
        ),
        (
            SINGULARITY,
            f"phase residues: {100 * record['residue_fraction']:.2f} % "
            f"(flag from {100 * t.get('residue_fraction', float('nan')):.2f} %)",
        ),
        ("", f"noise: {record['noise_rad']:.4f} rad (not judged)"),
        (
            BLUR,
            f"fine detail: {record.get('detail', 0.0):.3f} (blurring flagged at "
            f"{t.get('detail', float('nan')):.3f} or less)",
        ),
        ("", f"amplitude-phase cross-talk: {record.get('crosstalk', 0.0):.2f} (halos, not judged)"),
    ]
    return [f"{'⚑ ' if label in flags else ''}{text}" for label, text in rows]
