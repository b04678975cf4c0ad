"""Body text that cites a figure or a panel: "Fig. 3b", "Figure 3(b)", "Figs. 2–4", "Fig. 3a–c",
"Figs. 2b and 4".

`citations(text)` says which (figure, panel) a paragraph cites; a figure cited without a letter cites all
its panels (panel None). `excerpts(paragraphs, figure, letter)` picks the paragraphs that describe a panel,
those naming the panel first.
"""

from __future__ import annotations

import re

from napari_fracto.papers.captions import expand_letters

_WORD = r"(?:Fig(?:ure)?s?\.?|FIG(?:URE)?S?\.?)"
_LETTERS = r"[a-z](?:\s*[,–—-]\s*[a-z](?![a-z]))*"
# a letter follows the number directly ("3b", "3a–c") or in brackets ("3(b)", "3 (a, b)"):
# "Fig. 2 a crack" is not 2a
_REF = rf"\d{{1,3}}(?:[a-z](?:[,–—-][a-z](?![a-z]))*(?![a-z])|\s*\({_LETTERS}\))?"
_LIST = rf"{_REF}(?:\s*(?:,|and|&|[–—-])\s*{_REF})*"
_CITE = re.compile(rf"\b{_WORD}\s*({_LIST})")
_ONE = re.compile(rf"(\d{{1,3}})(?:([a-z](?:[,–—-][a-z](?![a-z]))*)(?![a-z])|\s*\(({_LETTERS})\))?")
MAX_EXCERPT = 900


def citations(text: str) -> set[tuple[str, str | None]]:
    """Every (figure number, panel letter or None) the text cites."""
    cited: set[tuple[str, str | None]] = set()
    for match in _CITE.finditer(text):
        refs = list(_ONE.finditer(match.group(1)))
        for i, ref in enumerate(refs):
            number, letters = ref.group(1), ref.group(2) or ref.group(3)
            between = match.group(1)[refs[i - 1].end() : ref.start()] if i else ""
            if (
                i
                and re.search(r"[–—-]", between)
                and not (refs[i - 1].group(2) or refs[i - 1].group(3))
                and not letters
            ):
                for n in range(int(refs[i - 1].group(1)) + 1, int(number)):  # "Figs. 2–4": 3 as well
                    cited.add((str(n), None))
            if not letters:
                cited.add((number, None))
                continue
            found = re.findall(r"[a-z]|[,–—-]", letters.replace(" ", ""))
            out: list[str] = []
            j = 0
            while j < len(found):
                if j + 2 < len(found) and found[j + 1] in "–—-":
                    out += expand_letters(found[j], "-", found[j + 2])
                    j += 3
                elif found[j] not in ",–—-":
                    out.append(found[j])
                    j += 1
                else:
                    j += 1
            cited.update((number, letter) for letter in out)
    return cited


def _window(paragraph: str, number: str) -> str:
    """A long paragraph cut to the sentences around its first citation of the figure."""
    if len(paragraph) <= MAX_EXCERPT:
        return paragraph
    sentences = re.split(r"(?<!Fig\.)(?<!Figs\.)(?<!FIG\.)(?<=[.!?])\s+(?=[A-Z])", paragraph)
    hits = [i for i, s in enumerate(sentences) if any(n == number for n, _ in citations(s))]
    i = hits[0] if hits else 0
    out = " ".join(sentences[max(0, i - 1) : i + 2])
    return out[:MAX_EXCERPT]


def excerpts(paragraphs: list[str], number: str, letter: str | None, limit: int = 3) -> list[str]:
    """The paragraphs citing this panel (by letter first, then the whole figure), at most `limit`."""
    exact, whole = [], []
    for paragraph in paragraphs:
        cited = citations(paragraph)
        if letter and (number, letter) in cited:
            exact.append(paragraph)
        elif (number, None) in cited or (not letter and any(n == number for n, _ in cited)):
            whole.append(paragraph)
    return [_window(p, number) for p in (exact + whole)[:limit]]
