"""Papers made for tests and benchmarks (no downloads): PDFs in one and two columns and a JATS article,
with multi-panel figures built from real micrographs, captions with panel letters, body text citing
panels, a vector plot, a schematic, a specimen photograph, a table, a reprinted figure, a scanned page,
an encrypted and a damaged file. Needs matplotlib (and pypdf for the encrypted file).

    python -m napari_fracto.testing.paper_corpus OUT_DIR [MICROGRAPH ...]
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

W, H = 595.0, 842.0  # A4 in points
DOI = "10.5555/fracto.2024.0001"


class _Page:
    """One matplotlib figure as a PDF page, placed in points from the top-left corner."""

    def __init__(self) -> None:
        import matplotlib.pyplot as plt

        self.fig = plt.figure(figsize=(W / 72, H / 72))

    def text(self, x: float, top: float, text: str, width: int = 95, size: float = 9, **kw: Any) -> float:
        """Wrapped text from `top`; returns the top of the next block (a blank line after it)."""
        for line in textwrap.wrap(text, width):
            self.fig.text(x / W, 1 - (top + size) / H, line, fontsize=size, **kw)
            top += size * 1.3
        return top + size * 1.2

    def image(self, x: float, top: float, w: float, h: float, array: np.ndarray) -> None:
        ax = self.fig.add_axes((x / W, 1 - (top + h) / H, w / W, h / H))
        cmap = "gray" if array.ndim == 2 else None
        ax.imshow(array, cmap=cmap, vmin=0, vmax=255, interpolation="none", aspect="auto")
        ax.axis("off")

    def plot(self, x: float, top: float, w: float, h: float) -> None:
        ax = self.fig.add_axes((x / W, 1 - (top + h) / H, w / W, h / H))
        d = np.linspace(0, 1, 50)
        ax.plot(d, 800 * d - 200 * d**2)
        ax.set_xlabel("displacement (mm)")
        ax.set_ylabel("load (N)")


def micrographs(sources: list[Path], count: int = 8, size: int = 256) -> list[np.ndarray]:
    """Distinct grey micrograph tiles cut from the given images (corners of each, in turn)."""
    from PIL import Image

    tiles = []
    for i in range(count):
        with Image.open(sources[i % len(sources)]) as img:
            arr = np.asarray(img.convert("L"))
        corner = (i // len(sources)) % 4
        r = 0 if corner in (0, 1) else arr.shape[0] - 2 * size
        c = 0 if corner in (0, 2) else arr.shape[1] - 2 * size
        tile = Image.fromarray(arr[r : r + 2 * size, c : c + 2 * size]).resize((size, size))
        tiles.append(np.asarray(tile))
    return tiles


def composite(panels: list[np.ndarray], gutter: int = 12) -> np.ndarray:
    """Panels side by side on white, `gutter` pixels apart (one raster image holding several panels)."""
    h = max(p.shape[0] for p in panels)
    out = np.full((h, sum(p.shape[1] for p in panels) + gutter * (len(panels) - 1)), 255, np.uint8)
    x = 0
    for p in panels:
        out[: p.shape[0], x : x + p.shape[1]] = p
        x += p.shape[1] + gutter
    return out


def schematic() -> np.ndarray:
    """A raster line drawing: a bar on two supports under two loads."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (400, 240), "white")
    d = ImageDraw.Draw(img)
    d.rectangle((40, 100, 360, 130), outline="black", width=3)
    for x in (80, 320):
        d.polygon(((x, 130), (x - 15, 160), (x + 15, 160)), outline="black", fill=(90, 90, 200))
    for x in (150, 250):
        d.line((x, 40, x, 100), fill="red", width=3)
    return np.asarray(img)


def photograph(seed: int = 1) -> np.ndarray:
    """A colour 'photograph' of a broken specimen: a brownish bar on a textured blue table."""
    rng = np.random.default_rng(seed)
    img = (rng.normal(0, 12, (200, 256, 3)) + np.array([60, 90, 160])).clip(0, 255)
    img[70:130, 20:236] = (rng.normal(0, 10, (60, 216, 3)) + np.array([170, 120, 70])).clip(0, 255)
    return img.astype(np.uint8)


def _save(pages: list[_Page], path: Path, title: str) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    with plt.rc_context({"pdf.fonttype": 42}), PdfPages(path, metadata={"Title": title}) as pdf:
        for page in pages:
            pdf.savefig(page.fig)
            plt.close(page.fig)


def one_column(path: Path, tiles: list[np.ndarray]) -> None:
    """Two pages: Fig. 1 (three panels in one image), Fig. 2 vector plot, Fig. 3 schematic, Fig. 4
    (a specimen photograph and a micrograph as two pieces), Table 1."""
    p1 = _Page()
    y = p1.text(60, 50, "Fracture origins in alumina bend bars", size=13)
    y = p1.text(60, y, f"https://doi.org/{DOI}   This article is published under a CC BY 4.0 licence.")
    y = p1.text(
        60,
        y,
        "The fracture origin is shown in Fig. 1a, where a pore close to the tensile surface acted "
        "as the initiation site of the crack in every bar we tested.",
    )
    y = p1.text(
        60,
        y,
        "Cleavage facets with river patterns cover the mirror region (Figure 1(b)), while "
        "intergranular facets dominate further from the origin, as Fig. 1c shows.",
    )
    p1.image(60, y, 440, 140, composite(tiles[0:3], gutter=12))
    for i, letter in enumerate("abc"):
        p1.fig.text((66 + i * 151) / W, 1 - (y + 16) / H, letter, fontsize=11, color="white")
    y = p1.text(
        60,
        y + 150,
        "Fig. 1. Fracture surfaces of the alumina bars. (a) Fracture origin at a pore; "
        "(b) cleavage facets with river patterns; (c) intergranular facets.",
    )
    p1.text(
        60,
        y,
        "Figs. 1–3 summarise the test; the specimen itself is shown in Fig. 4a and its mirror "
        "zone in Fig. 4b.",
    )
    p2 = _Page()
    y = p2.text(
        60,
        50,
        "The load-displacement curve (Fig. 2) is linear until failure, and the set-up is "
        "sketched in Fig. 3; both follow the standard test method.",
    )
    p2.plot(90, y, 380, 160)
    y = p2.text(60, y + 190, "Fig. 2. Load versus displacement of the bend test.")
    p2.image(60, y, 300, 180, schematic())
    y = p2.text(60, y + 190, "Fig. 3. Schematic of the four-point bend set-up.")
    p2.image(60, y, 210, 160, photograph())
    p2.image(276, y, 210, 160, tiles[3])
    y = p2.text(
        60, y + 170, "Fig. 4. (a) Photograph of the broken specimen; (b) SEM image of the mirror zone."
    )
    y = p2.text(60, y, "Table 1. Mechanical properties of the bars.")
    p2.text(60, y, "strength 350 MPa    toughness 3.5 MPa m^0.5    modulus 380 GPa")
    _save([p1, p2], path, "Fracture origins in alumina bend bars")


def two_columns(path: Path, tiles: list[np.ndarray], reprint: np.ndarray) -> None:
    """Three pages in two columns: Fig. 1 of two pieces with letters as text, Fig. 2 a reprint of another
    paper's panel, and a scanned page."""
    left, right, col = 50, 310, 48  # columns at 50 and 310 pt, 48 characters wide
    p1 = _Page()
    p1.text(left, 40, "Fatigue of spinel: striations and dimples", size=13)
    p1.image(left, 70, 240, 200, tiles[4])
    p1.image(left + 248, 70, 240, 200, tiles[5])
    p1.fig.text((left + 6) / W, 1 - 86 / H, "a", fontsize=11, color="white")
    p1.fig.text((left + 254) / W, 1 - 86 / H, "b", fontsize=11, color="white")
    y = p1.text(
        left,
        280,
        "Figure 1: Fatigue fracture surface of the spinel. (a) Fatigue striations near the "
        "origin; (b) dimples in the overload zone.",
        width=100,
    )
    yl = p1.text(
        left,
        y,
        "Striations are visible in Fig. 1a; their spacing grows with the crack length, as "
        "expected for fatigue.",
        width=col,
    )
    p1.text(
        left,
        yl,
        "Loading was cyclic at 10 Hz with a load ratio of 0.1 throughout the test programme.",
        width=col,
    )
    p1.text(
        right,
        y,
        "The overload region (Figure 1(b)) shows dimples around small inclusions in the ceramic.",
        width=col,
    )
    p2 = _Page()
    p2.text(
        left,
        50,
        "As in Figs. 1–2, the origin lies at a near-surface pore in all of the specimens.",
        width=col,
    )
    p2.image(right, 50, 240, 240, reprint)
    p2.text(right, 300, "Fig. 2. The fracture origin, reprinted from the alumina study.", width=col)
    p3 = _Page()
    p3.image(0, 0, W, H, scanned_text())
    _save([p1, p2, p3], path, "Fatigue of spinel")


def scanned_text(seed: int = 2) -> np.ndarray:
    """A page-sized picture of lines of 'text' (what a scanner makes): no text layer."""
    rng = np.random.default_rng(seed)
    page = np.full((842, 595), 250, np.uint8)
    for top in range(60, 780, 18):
        page[top : top + 8, 60 : 60 + int(rng.integers(300, 480))] = 40
    return page


def scanned(path: Path) -> None:
    p = _Page()
    p.image(0, 0, W, H, scanned_text())
    _save([p], path, "scan")


def encrypt(source: Path, path: Path, password: str = "secret") -> None:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(source))
    writer.encrypt(user_password=password, owner_password=password + "!", algorithm="AES-128")
    with open(path, "wb") as fh:
        writer.write(fh)


def jats(folder: Path, tiles: list[np.ndarray]) -> Path:
    """A JATS article (article.xml) with a two-panel figure file and a schematic file beside it."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(composite(tiles[6:8], gutter=10)).save(folder / "fig1.png")
    Image.fromarray(schematic()).save(folder / "fig2.png")
    xml = """<?xml version="1.0" encoding="UTF-8"?>
<article xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:ali="http://www.niso.org/schemas/ali/1.0/">
<front><article-meta>
<article-id pub-id-type="doi">10.5555/fracto.jats.7</article-id>
<title-group><article-title>Intergranular fracture of magnesia</article-title></title-group>
<permissions><license license-type="open-access" xlink:href="https://creativecommons.org/licenses/by/4.0/">
<license-p>This is an open access article under the CC BY 4.0 licence.</license-p></license></permissions>
</article-meta></front>
<body><sec><title>Results</title>
<p>Grain boundaries opened along the whole crack path (<xref ref-type="fig" rid="f1">Fig. 1a</xref>), and
the facets are smooth.</p>
<p>At higher magnification (<xref ref-type="fig" rid="f1">Figure 1(b)</xref>) small cleavage steps cross
some grains.</p>
<p>The specimen geometry is drawn in <xref ref-type="fig" rid="f2">Fig. 2</xref>.</p>
<fig id="f1"><label>Figure 1</label><caption><p>Fracture surface of the magnesia. (a) Intergranular facets;
(b) cleavage steps on a grain.</p></caption><graphic xlink:href="fig1"/></fig>
<fig id="f2"><label>Figure 2</label><caption><p>Schematic of the specimen.</p></caption>
<graphic xlink:href="fig2.png"/></fig>
</sec></body></article>
"""
    (folder / "article.xml").write_text(xml, encoding="utf-8")
    return folder / "article.xml"


def make_corpus(out: Path, sources: list[Path]) -> dict[str, Path]:
    """Every test paper in `out`; returns them by role."""
    out.mkdir(parents=True, exist_ok=True)
    tiles = micrographs(sources)
    files = {
        "one_column": out / "alumina.pdf",
        "two_columns": out / "spinel.pdf",
        "scanned": out / "scan.pdf",
        "encrypted": out / "locked.pdf",
        "corrupt": out / "broken.pdf",
    }
    one_column(files["one_column"], tiles)
    from PIL import Image

    reprint = np.asarray(Image.fromarray(tiles[0]).resize((300, 300)))  # Fig. 1a of the alumina paper
    two_columns(files["two_columns"], tiles, reprint)
    scanned(files["scanned"])
    encrypt(files["one_column"], files["encrypted"])
    files["corrupt"].write_bytes(files["one_column"].read_bytes()[:3000])
    files["jats"] = jats(out / "magnesia", tiles)
    return files


if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")
    made = make_corpus(
        Path(sys.argv[1]),
        [Path(p) for p in sys.argv[2:]]
        or sorted(Path("../shared/data/fractography/ceramic-sem").glob("*.jpg")),
    )
    print("\n".join(f"{k}: {v}" for k, v in made.items()))
