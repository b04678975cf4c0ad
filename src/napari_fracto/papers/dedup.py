"""The same figure reprinted (another paper, a review, a thesis): found by a perceptual hash, kept once.

dHash: the sign of horizontal brightness steps on a 9 x 8 thumbnail, 64 bits. Resampling, JPEG
recompression and small crops change a few bits; a different micrograph differs in about half of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

MAX_DISTANCE = 6  # of 64 bits


def dhash(image: np.ndarray) -> str:
    """64-bit difference hash of an image, as 16 hex digits."""
    import numpy as np
    from PIL import Image

    from napari_fracto.papers.panels import gray

    small = Image.fromarray(gray(image)).resize((9, 8), Image.Resampling.BOX)
    arr = np.asarray(small, dtype=np.int16)
    bits = (arr[:, 1:] > arr[:, :-1]).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def distance(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


@dataclass
class Seen:
    """Hashes already kept, each with where it came from; `match` finds a reprint among them."""

    known: list[tuple[str, str]] = field(default_factory=list)  # (hash, where)

    def match(self, digest: str) -> str | None:
        for other, where in self.known:
            if distance(digest, other) <= MAX_DISTANCE:
                return where
        return None

    def add(self, digest: str, where: str) -> None:
        self.known.append((digest, where))
