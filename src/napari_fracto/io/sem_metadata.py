"""What the SEM said about an image: pixel size, magnification, kV, working distance, detector, tilt.

The field of view decides what a feature can be (a 5 µm dimple or a 500 µm beach mark), so it goes into
the analysis context and the prompt. Read from the vendors' own layouts:

- Zeiss SmartSEM: TIFF tag 34118 `CZ_SEM` (tifffile `sem_metadata`: `ap_mag`, `ap_image_pixel_size`,
  `ap_actualkv`, `ap_wd`, `dp_detector_type`, `ap_tilt_angle`, `sv_serial_number`);
- FEI/Thermo (FEI_HELIOS/FEI_SFEG, tifffile `fei_metadata`): `[Scan]`/`[EScan]` PixelWidth, `[Beam]`/
  `[EBeam]` HV and WD, `[Stage]` StageT (rad), `[Detectors]` Name/Mode, `[System]` SystemType;
- Tescan: INI text in TIFF tag 50431 or a sidecar `.hdr` (`PixelSizeX` m, `Magnification`, `HV` V,
  `WD` m, `Detector`, `StageTilt`/`TiltAngle`, `Device`);
- JEOL: sidecar `.txt` of `$CM_...` lines (`$CM_MAG`, `$CM_ACCEL_VOLT` kV, `$SM_MICRON_BAR` µm over
  `$SM_MICRON_MARKER` pixels, `$SM_WD`/`$CM_WD` mm, `$CM_SIGNAL`, `$CM_INSTRUMENT`, `$SM_STAGE_T`);
- Hitachi: sidecar `.txt` `[SemImageFile]` (`Magnification`, `AcceleratingVoltage=15000 Volt`,
  `WorkingDistance=8000 um`, `PixelSize` nm, `SignalName`, `InstructName`, `StageT`).

Every field is optional and a malformed value is dropped, never raised: a file's metadata can only add to
what the user knows. Pure: tifffile only.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari_fracto.findings import AnalysisContext

TESCAN_TAG = 50431
_SIDECAR_BYTES = 256 * 1024  # a sidecar is a few kB; a bigger .txt is not one


@dataclass(frozen=True)
class Instrument:
    """The acquisition settings of one SEM image (None / "" where the file does not say)."""

    vendor: str = ""
    instrument: str = ""
    pixel_size_um: float | None = None
    magnification: float | None = None  # "X", as the instrument reports it (its own display size)
    kv: float | None = None
    wd_mm: float | None = None
    detector: str = ""
    tilt_deg: float | None = None
    bar_rows: int = 0  # height of the instrument's data bar when the file says (FEI/Thermo DatabarHeight)
    source: str = ""  # where it was read: "Zeiss CZ_SEM", "JEOL sidecar x.txt", ...

    def is_empty(self) -> bool:
        return all(
            getattr(self, f.name) in (None, "", 0) for f in fields(self) if f.name not in ("vendor", "source")
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Instrument | None:
        if not isinstance(data, dict):
            return None
        names = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in names or value is None:
                continue
            kind = names[key].type
            values[key] = (
                str(value) if kind == "str" else int(_number(value) or 0) if kind == "int" else _number(value)
            )
        return cls(**values)

    def field_of_view_um(self, width: int, height: int) -> tuple[float, float] | None:
        """Width x height in µm of `width` x `height` pixels, when the pixel size is known."""
        if not self.pixel_size_um:
            return None
        return width * self.pixel_size_um, height * self.pixel_size_um

    def scale_text(self, width: int, height: int) -> str:
        """`105 X; 2.615 µm/pixel; field of view 2678 × 1812 µm` for the context's magnification field."""
        parts = []
        if self.magnification:
            mag = self.magnification
            parts.append(f"{round(mag):,} X".replace(",", " ") if mag >= 10 else f"{_fmt(mag)} X")
        if self.pixel_size_um:
            parts.append(f"{_length(self.pixel_size_um)}/pixel")
        fov = self.field_of_view_um(width, height)
        if fov:
            parts.append(f"field of view {_length(fov[0], unit=False)} × {_length(fov[1])}")
        return "; ".join(parts)

    def settings_text(self) -> str:
        """`Zeiss Merlin-61-08, 25 kV, WD 14.8 mm, HE-SE2 detector, tilt 70°` for the context."""
        parts = [" ".join(p for p in (self.vendor, self.instrument) if p)]
        if self.kv is not None:
            parts.append(f"{_fmt(self.kv)} kV")
        if self.wd_mm is not None:
            parts.append(f"WD {_fmt(self.wd_mm)} mm")
        if self.detector:
            parts.append(f"{self.detector} detector")
        if self.tilt_deg is not None:
            parts.append(f"tilt {_fmt(round(self.tilt_deg, 1) + 0.0)}°")
        return ", ".join(p for p in parts if p)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _length(um: float, *, unit: bool = True) -> str:
    """µm below 1 mm, else mm; nm below 0.1 µm (as an SEM's own scale bar would say)."""
    if um < 0.1:
        value, name = um * 1000, "nm"
    elif um >= 1000:
        value, name = um / 1000, "mm"
    else:
        value, name = um, "µm"
    text = f"{value:.4g}"
    return f"{text} {name}" if unit else (text if name == "µm" else f"{text} {name}")


def _number(value: Any) -> float | None:
    """A finite float from a number or a string like '4.53 K X' / '15000 Volt'; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    else:
        match = re.search(r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?", str(value))
        if not match:
            return None
        number = float(match.group())
        suffix = str(value)[match.end() :].strip()[:1]
        number *= {"K": 1e3, "k": 1e3, "M": 1e6}.get(suffix, 1.0) if suffix in "KkM" and suffix else 1.0
    return number if math.isfinite(number) else None


_LENGTH_UM = {"m": 1e6, "mm": 1e3, "µm": 1.0, "μm": 1.0, "um": 1.0, "nm": 1e-3, "pm": 1e-6}


def _um(value: Any, unit: str) -> float | None:
    number = _number(value)
    factor = _LENGTH_UM.get(str(unit).strip())
    if number is None or factor is None or number <= 0:
        return None
    return number * factor


def _positive(value: float | None) -> float | None:
    return value if value is not None and value > 0 else None


# --- TIFF layouts ------------------------------------------------------------------------------------


def from_tiff(tif: Any) -> Instrument | None:
    """The instrument of an open `tifffile.TiffFile` (Zeiss, FEI/Thermo, Tescan), or None."""
    try:
        if tif.is_sem and tif.sem_metadata:
            return _zeiss(tif.sem_metadata)
        if tif.is_fei and tif.fei_metadata:
            return _fei(tif.fei_metadata)
        tag = tif.pages.first.tags.get(TESCAN_TAG)
        if tag is not None:
            value = tag.value
            text = value.decode("latin-1", "replace") if isinstance(value, bytes) else str(value)
            return _tescan(_ini(text), "Tescan TIFF tag 50431")
    except Exception:  # metadata only adds: a malformed block must not stop the image being read
        return None
    return None


def _entry(sem: dict[str, Any], key: str) -> tuple[Any, str]:
    """(value, unit) of a CZ_SEM entry `('Mag', 105, 'X')`; (None, '') when absent or odd."""
    entry = sem.get(key)
    if not isinstance(entry, tuple | list) or len(entry) < 2:
        return None, ""
    return entry[1], str(entry[2]) if len(entry) > 2 else ""


def _zeiss(sem: dict[str, Any]) -> Instrument:
    pixel, unit = _entry(sem, "ap_image_pixel_size")
    if pixel is None:
        pixel, unit = _entry(sem, "ap_pixel_size")
    mag, mag_unit = _entry(sem, "ap_mag")
    kv, kv_unit = _entry(sem, "ap_actualkv")
    wd, wd_unit = _entry(sem, "ap_wd")
    tilt, _ = _entry(sem, "ap_tilt_angle")
    detector, _ = _entry(sem, "dp_detector_type")
    if detector is None:
        detector, _ = _entry(sem, "dp_detector_channel")
    serial, _ = _entry(sem, "sv_serial_number")
    magnification = _number(f"{mag} {mag_unit}") if mag is not None else None
    kv_value = _number(kv)
    if kv_value is not None and kv_unit.strip().lower() == "v":
        kv_value /= 1000
    wd_um = _um(wd, wd_unit or "mm")
    return Instrument(
        vendor="Zeiss",
        instrument=str(serial or ""),
        pixel_size_um=_um(pixel, unit or "m") if pixel is not None else None,
        magnification=_positive(magnification),
        kv=kv_value,
        wd_mm=wd_um / 1000 if wd_um else None,
        detector=str(detector or ""),
        tilt_deg=_number(tilt),
        source="Zeiss CZ_SEM",
    )


def _fei(fei: dict[str, Any]) -> Instrument:
    def get(sections: tuple[str, ...], key: str) -> Any:
        for name in sections:
            value = (fei.get(name) or {}).get(key)
            if value not in (None, ""):
                return value
        return None

    pixel = _number(get(("Scan", "EScan", "IScan"), "PixelWidth"))
    hv = _number(get(("Beam", "EBeam"), "HV"))
    wd = _number(get(("EBeam", "Beam", "Stage"), "WD") or get(("Stage",), "WorkingDistance"))
    tilt = _number(get(("Stage",), "StageT"))
    hfw = _number(get(("EBeam", "Scan", "EScan"), "HFW") or get(("Scan", "EScan"), "HorFieldsize"))
    display = _number(get(("System",), "DisplayWidth"))
    detector = " ".join(str(get(("Detectors",), k) or "") for k in ("Name", "Mode")).replace("None", "")
    bar = _number(get(("PrivateFei",), "DatabarHeight"))
    return Instrument(
        vendor="FEI/Thermo",
        instrument=str(get(("System",), "SystemType") or "").replace('"', ""),
        pixel_size_um=_positive(pixel * 1e6) if pixel else None,
        magnification=_positive(display / hfw) if display and hfw else None,  # xT's "Mag" (display)
        kv=hv / 1000 if hv is not None else None,
        wd_mm=_positive(wd * 1000) if wd else None,
        detector=detector.strip(),
        tilt_deg=math.degrees(tilt) if tilt is not None else None,
        bar_rows=int(bar) if bar and 0 < bar < 10_000 else 0,
        source="FEI/Thermo metadata [Scan]/[Beam]",
    )


def _ini(text: str) -> dict[str, str]:
    """`key=value` lines of every section, keys lower-cased (later sections do not override earlier)."""
    out: dict[str, str] = {}
    for line in text.replace("\x00", "\n").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.strip().startswith(("[", "#", ";")):
            out.setdefault(key.strip().lower(), value.strip())
    return out


def _tescan(values: dict[str, str], source: str) -> Instrument | None:
    pixel = _number(values.get("pixelsizex"))
    hv = _number(values.get("hv") or values.get("acceleratorvoltage"))
    wd = _number(values.get("wd"))
    inst = Instrument(
        vendor="Tescan",
        instrument=values.get("device", ""),
        pixel_size_um=_positive(pixel * 1e6) if pixel else None,
        magnification=_positive(_number(values.get("magnification"))),
        kv=hv / 1000 if hv is not None else None,
        wd_mm=_positive(wd * 1000) if wd else None,
        detector=values.get("detector", ""),
        tilt_deg=_number(values.get("stagetilt") or values.get("tiltangle")),
        source=source,
    )
    return None if inst.is_empty() else inst


# --- sidecar files ------------------------------------------------------------------------------------


def from_sidecar(image: Path) -> Instrument | None:
    """The JEOL/Hitachi `.txt` or Tescan `.hdr` written beside `image` (same stem), or None."""
    for suffix in (".txt", ".TXT", ".hdr", ".HDR"):
        side = image.with_suffix(suffix)
        try:
            if not side.is_file() or side.stat().st_size > _SIDECAR_BYTES:
                continue
            text = side.read_bytes().decode("utf-8", "replace")
        except OSError:
            continue
        found = _parse_sidecar(text, side.name)
        if found is not None:
            return found
    return None


def _parse_sidecar(text: str, name: str) -> Instrument | None:
    if "$CM_" in text or "$SM_" in text:
        return _jeol(text, name)
    if "[SemImageFile]" in text or "InstructName" in text:
        return _hitachi(_ini(text), name)
    if "[MAIN]" in text or "PixelSizeX=" in text:
        return _tescan(_ini(text), f"Tescan sidecar {name}")
    return None


def _jeol(text: str, name: str) -> Instrument | None:
    values: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if parts and parts[0].startswith("$"):
            values.setdefault(parts[0].lstrip("$").upper(), parts[1].strip() if len(parts) > 1 else "")
    bar_um, marker_px = _number(values.get("SM_MICRON_BAR")), _number(values.get("SM_MICRON_MARKER"))
    pixel = bar_um / marker_px if bar_um and marker_px and marker_px > 0 else None
    inst = Instrument(
        vendor="JEOL",
        instrument=values.get("CM_INSTRUMENT", ""),
        pixel_size_um=_positive(pixel),
        magnification=_positive(_number(values.get("CM_MAG"))),
        kv=_number(values.get("CM_ACCEL_VOLT")),
        wd_mm=_positive(_number(values.get("SM_WD") or values.get("CM_WD"))),
        detector=values.get("CM_SIGNAL", ""),
        tilt_deg=_number(values.get("SM_STAGE_T") or values.get("CM_STAGE_T")),
        source=f"JEOL sidecar {name}",
    )
    return None if inst.is_empty() else inst


def _hitachi(values: dict[str, str], name: str) -> Instrument | None:
    kv = _number(values.get("acceleratingvoltage"))
    if kv is not None and "volt" in values.get("acceleratingvoltage", "").lower() and kv > 100:
        kv /= 1000  # "15000 Volt"
    wd_text = values.get("workingdistance", "")
    wd = _number(wd_text)
    if wd is not None and "um" in wd_text.lower():
        wd /= 1000
    pixel_text = values.get("pixelsize", "")
    pixel = _number(pixel_text)
    unit = "µm" if "um" in pixel_text.lower() or "µm" in pixel_text else "nm"
    inst = Instrument(
        vendor="Hitachi",
        instrument=values.get("instructname", ""),
        pixel_size_um=_um(pixel, unit) if pixel else None,
        magnification=_positive(_number(values.get("magnification"))),
        kv=kv,
        wd_mm=_positive(wd),
        detector=values.get("signalname", ""),
        tilt_deg=_number(values.get("staget") or values.get("stagetilt")),
        source=f"Hitachi sidecar {name}",
    )
    return None if inst.is_empty() else inst


# --- one entry point ------------------------------------------------------------------------------------


def read_instrument(path: str | Path) -> Instrument | None:
    """The instrument metadata of an image file: embedded (TIFF) first, then a sidecar; None if neither.

    Used for files napari opened with its own reader too (`layer.source.path`), so the scale is not lost.
    """
    path = Path(path)
    found = None
    if path.suffix.lower() in (".tif", ".tiff") and path.is_file():
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                found = from_tiff(tif)
        except (tifffile.TiffFileError, OSError, ValueError):
            found = None
    side = from_sidecar(path)
    if found is None:
        return side
    if side is not None:  # fill what the TIFF lacks from a sidecar, never override it
        missing = {
            f.name: getattr(side, f.name) for f in fields(found) if getattr(found, f.name) in (None, "")
        }
        found = replace(found, **{k: v for k, v in missing.items() if v not in (None, "")})
    return found


def fill_context(
    context: AnalysisContext | None, inst: Instrument | None, width: int, height: int
) -> AnalysisContext:
    """`context` with its magnification (scale, field of view) and instrument filled from `inst`.

    Only empty fields are filled: what the user typed wins. `width` x `height` are the pixels the model
    is shown (without a data bar), so the field of view is that of the image sent.
    """
    from napari_fracto.findings import AnalysisContext

    context = context or AnalysisContext()
    if inst is None:
        return context
    changes = {}
    if not context.magnification.strip():
        changes["magnification"] = inst.scale_text(width, height)
    if not context.instrument.strip():
        changes["instrument"] = inst.settings_text()
    return replace(context, **{k: v for k, v in changes.items() if v})


__all__ = ["Instrument", "fill_context", "from_sidecar", "from_tiff", "read_instrument"]
