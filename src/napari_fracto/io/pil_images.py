"""PNG, JPEG and BMP up to 16k x 16k, without lifting Pillow's decompression-bomb limit for anyone else.

Pillow refuses images over 2 x `Image.MAX_IMAGE_PIXELS` (179 Mpx) in `Image.open`, so a 16000 x 12000
SEM montage saved as PNG would not open, while the same image as TIFF does. The limit is a process-wide
setting that guards every other user of Pillow; it is left as it is. This reader opens the file with the
format's own plugin class (which reads the header only), checks the size against its own bound
(`MAX_PIXELS`, 16k x 16k), and copies the decoded image into numpy in bands of rows, so the peak is the
decoded image twice (Pillow's copy and numpy's), not three times (`np.asarray` joins a full-size bytes
object first).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: the most pixels this reader decodes (a 16384 x 16384 image); Pillow's own limit applies elsewhere
MAX_PIXELS = 16384 * 16384
#: images with more bytes than this are copied to numpy band by band
BAND_COPY_BYTES = 64 * 2**20
_BAND_BYTES = 2 * 2**20  # small bands: each is briefly held three times (crop, bytes, array)


class TooLargeError(ValueError):
    """More pixels than `MAX_PIXELS`: the message gives the size and what to do."""


def _plugin(path: Path) -> Any:
    from PIL import BmpImagePlugin, JpegImagePlugin, PngImagePlugin

    return {
        ".png": PngImagePlugin.PngImageFile,
        ".jpg": JpegImagePlugin.JpegImageFile,
        ".jpeg": JpegImagePlugin.JpegImageFile,
        ".bmp": BmpImagePlugin.BmpImageFile,
    }.get(path.suffix.lower())


def open_image(path: Path) -> Any:
    """The Pillow image of `path` (header read, pixels not yet), with this reader's size bound.

    A file whose content is not the format its suffix says goes through `Image.open` (format sniffing,
    and Pillow's default limit).
    """
    from PIL import Image

    plugin = _plugin(path)
    image = None
    if plugin is not None:
        try:
            image = plugin(str(path))
        except (SyntaxError, OSError, ValueError):
            image = None  # not this format after all (a JPEG called .png): let Pillow identify it
    if image is None:
        return Image.open(path)
    width, height = image.size
    if width * height > MAX_PIXELS:
        image.close()
        raise TooLargeError(
            f"{path.name} is {width} x {height} pixels, more than the {MAX_PIXELS // 2**20} Mpx "
            "(16k x 16k) this reader decodes; save it as a (tiled or uncompressed) TIFF, which is "
            "memory-mapped, or crop it"
        )
    return image


#: Pillow modes imagecodecs decodes to the same array (palette, LA, CMYK... go through Pillow)
_DIRECT = {".png": {"L", "RGB", "RGBA", "I;16"}, ".jpg": {"L", "RGB"}, ".jpeg": {"L", "RGB"}}


def decode_direct(path: Path, image: Any) -> np.ndarray | None:
    """A big PNG/JPEG decoded by imagecodecs straight into numpy (the `large-images` extra), else None.

    Pillow keeps its own copy of the pixels (RGB as 4 bytes a pixel) before numpy gets them; this path
    holds only the compressed file and the array. None when imagecodecs is missing, the image is small,
    or its mode is one Pillow must convert: the caller then decodes with Pillow.
    """
    width, height = image.size
    channels = {"L": 1, "I;16": 2, "RGB": 3, "RGBA": 4}.get(image.mode, 0)
    if image.mode not in _DIRECT.get(path.suffix.lower(), ()) or width * height * channels <= BAND_COPY_BYTES:
        return None
    try:
        import imagecodecs
    except ImportError:
        return None
    decode = imagecodecs.png_decode if path.suffix.lower() == ".png" else imagecodecs.jpeg8_decode
    try:
        data = decode(path.read_bytes())
    except Exception:  # a codec's own error: Pillow gets the file and gives the usual messages
        return None
    expected = (height, width) if image.mode in ("L", "I;16") else (height, width, channels)
    return data if data.shape == expected else None


def to_array(image: Any) -> np.ndarray:
    """The pixels of a loaded Pillow image as numpy, peak memory twice the image for big ones."""
    width, height = image.size
    first = np.asarray(image.crop((0, 0, width, 1)))
    nbytes = first.nbytes * height
    if nbytes <= BAND_COPY_BYTES:
        return np.asarray(image)
    out = np.empty((height, *first.shape[1:]), dtype=first.dtype)
    rows = max(1, _BAND_BYTES // max(1, first.nbytes))
    for r0 in range(0, height, rows):
        r1 = min(height, r0 + rows)
        out[r0:r1] = np.asarray(image.crop((0, r0, width, r1)))
    return out


__all__ = ["BAND_COPY_BYTES", "MAX_PIXELS", "TooLargeError", "decode_direct", "open_image", "to_array"]
