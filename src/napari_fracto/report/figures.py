"""The pictures of a report as encoded bytes: images with their boxes, thumbnails and charts.

Boxes are drawn with Pillow in the colour napari gives each label (`overlay.label_colour`), with the
label beside every box (colour is never the only cue). Charts use matplotlib's object API on the Agg
canvas (no GUI backend, safe in napari's process). Images go out as JPEG (small for micrographs),
charts as PNG.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_fracto.findings import Finding

DETAIL_PX = 960  # longest side of a per-image picture
THUMB_PX = 240  # longest side of a thumbnail
MIN_DRAWN_PX = 480  # smaller images are enlarged by a whole factor up to about this


@dataclass(frozen=True)
class Picture:
    """Encoded image bytes and their MIME type (an `<img>` data URI, or a PDF page)."""

    data: bytes
    mime: str
    width: int
    height: int

    def data_uri(self) -> str:
        import base64

        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def draw_boxes(
    rgb: np.ndarray,
    findings: Sequence[Finding],
    colour_of: Any,
    *,
    longest: int = DETAIL_PX,
    box_scale: float = 1.0,
    dashed_findings: Sequence[Finding] = (),
    labels: bool = True,
) -> Picture:
    """`rgb` scaled to `longest` px with every boxed finding drawn (solid) and labelled, plus
    `dashed_findings` (the reviewer's corrections) dashed; JPEG bytes. Boxes are in file pixels, which
    `box_scale` maps onto `rgb` (when it was already shrunk)."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(np.ascontiguousarray(rgb[..., :3]))
    side = max(image.width, image.height)
    # large images shrink to `longest`; small ones (a cropped reconstruction) grow pixel for pixel, so
    # boxes and labels are drawn at a size a reader can see
    scale = longest / side if side > longest else max(1, min(longest, MIN_DRAWN_PX) // side)
    if scale != 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST
        image = image.resize(size, resample)
    draw = ImageDraw.Draw(image)
    width = max(3, round(max(image.size) / 250))
    font = _font(max(11, round(max(image.size) / 36)))
    for dashed, group in ((False, findings), (True, dashed_findings)):
        for f in group:
            if f.box is None or not all(math.isfinite(c) for c in f.box.as_list()):
                continue
            x1, y1, x2, y2 = (c * scale * box_scale for c in f.box.as_list())
            x1, x2 = sorted((min(max(0.0, x1), image.width - 1.0), min(max(0.0, x2), image.width - 1.0)))
            y1, y2 = sorted((min(max(0.0, y1), image.height - 1.0), min(max(0.0, y2), image.height - 1.0)))
            colour = colour_of(f.label)
            if dashed:
                _dashed_rectangle(draw, (x1, y1, x2, y2), colour, width)
            else:
                draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
            if labels:
                text = f.label + (f" {f.confidence:.2f}" if _finite(f.confidence) and not dashed else "")
                at = (x1 + width, (y2 - width - getattr(font, "size", 11) - 4) if dashed else (y1 + width))
                left, top, right, bottom = draw.textbbox(at, text, font=font)
                draw.rectangle((left - 2, top - 1, right + 2, bottom + 1), fill=(0, 0, 0))
                draw.text(at, text, fill=colour, font=font)
    return encode_jpeg(image)


def _dashed_rectangle(draw: Any, box: tuple[float, ...], colour: str, width: int) -> None:
    x1, y1, x2, y2 = box
    dash = 4 * width
    for a, b, horizontal, at in (
        (x1, x2, True, y1),
        (x1, x2, True, y2),
        (y1, y2, False, x1),
        (y1, y2, False, x2),
    ):
        pos = a
        while pos < b:
            end = min(pos + dash, b)
            line = (pos, at, end, at) if horizontal else (at, pos, at, end)
            draw.line(line, fill=colour, width=width)
            pos += 2 * dash


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def encode_jpeg(image: Any, quality: int = 85) -> Picture:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality, optimize=True)
    return Picture(buffer.getvalue(), "image/jpeg", image.width, image.height)


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def encode_figure(fig: Any) -> Picture:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    width, height = (round(v) for v in fig.get_size_inches() * fig.dpi)
    return Picture(buffer.getvalue(), "image/png", width, height)


def label_frequency_chart(counts: dict[str, Sequence[int]], series: Sequence[str], colour_of: Any) -> Picture:
    """Horizontal bars: images per label, one bar per series (e.g. 'model' and 'after review')."""
    labels = list(counts)
    fig = _figure(7.5, 1.2 + 0.38 * max(len(labels), 1) * max(len(series), 1) ** 0.5)
    ax = fig.add_subplot()
    y = np.arange(len(labels))
    height = 0.8 / max(len(series), 1)
    for j, name in enumerate(series):
        values = [counts[label][j] for label in labels]
        colours = [colour_of(label) for label in labels]
        bars = ax.barh(
            y + (j - (len(series) - 1) / 2) * height,
            values,
            height,
            color=colours,
            edgecolor="black",
            hatch="//" if j else None,
            label=name,
        )
        ax.bar_label(bars, fontsize="small", padding=2)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax.xaxis.get_major_locator().set_params(integer=True)
    if len(series) > 1:
        fig.legend(
            *ax.get_legend_handles_labels(), loc="outside lower center", ncols=len(series), fontsize="small"
        )
    ax.set_title("Label frequencies")
    return encode_figure(fig)


def confidence_chart(confidences: dict[str, list[float]], colour_of: Any) -> Picture:
    """Per-label distributions of the model's confidences: a box plot with every value as a dot."""
    labels = list(confidences)
    fig = _figure(7.5, 1.2 + 0.4 * max(len(labels), 1))
    ax = fig.add_subplot()
    data = [confidences[label] for label in labels]
    parts = ax.boxplot(data, orientation="horizontal", widths=0.6, patch_artist=True, showfliers=False)
    for patch, label in zip(parts["boxes"], labels, strict=True):
        patch.set_facecolor(colour_of(label))
        patch.set_alpha(0.5)
    rng = np.random.default_rng(0)  # the jitter only spreads dots; a fixed seed keeps reports identical
    for i, values in enumerate(data, 1):
        ax.scatter(values, i + rng.uniform(-0.15, 0.15, len(values)), s=10, color="black", zorder=3)
    ax.set_yticks(range(1, len(labels) + 1), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("confidence the model gave")
    ax.set_title("Confidence per label")
    return encode_figure(fig)


def per_label_f1_chart(f1: dict[str, dict[str, float | None]], configs: Sequence[str]) -> Picture:
    """Grouped bars: F1 of each vocabulary label, one bar per configuration."""
    labels = list(f1)
    fig = _figure(7.5, 1.4 + 0.3 * max(len(labels), 1) * max(len(configs), 1) ** 0.5)
    ax = fig.add_subplot()
    y = np.arange(len(labels))
    height = 0.8 / max(len(configs), 1)
    for j, name in enumerate(configs):
        values = [f1[label].get(name) for label in labels]
        ax.barh(y + (j - (len(configs) - 1) / 2) * height, [v or 0.0 for v in values], height, label=name)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1")
    ax.set_title("Per-label F1")
    fig.legend(
        *ax.get_legend_handles_labels(),
        loc="outside lower center",
        ncols=min(len(configs), 4),
        fontsize="small",
    )
    return encode_figure(fig)


def evaluation_chart(run: Any) -> Picture:
    """The evaluation's own chart (`evaluation.report.chart_figure`), as the report embeds it."""
    from napari_fracto.evaluation.report import chart_figure

    return encode_figure(chart_figure(run))
