"""Captions: which text is a figure's caption, its number, and each panel's part of it.

Panel markers understood: "(a)", "a)", "(a,b)", "(a-c)" and "(a–c)". The text before the first marker
belongs to every panel (it usually says what the whole figure shows).
"""

from __future__ import annotations

import re

# "Fig. 3.", "Figure 3:", "FIG. 3 |", "Fig 3 —" at the start of a block
CAPTION_START = re.compile(
    r"^\s*(?:Fig\.?|Figure|FIGURE|FIG\.?)\s*(\d{1,3}[A-Z]?)\s*(?:[.:|—–-]|\s)", re.UNICODE
)
TABLE_START = re.compile(r"^\s*(?:Table|TABLE)\s*(\d{1,3})\s*(?:[.:|—–-]|\s)")
_DASH = "-–—"
_MARKER = re.compile(
    rf"\(\s*([a-z])(?:\s*([,{_DASH}])\s*([a-z]))?(?:\s*,\s*([a-z]))*\s*\)|(?<![\w(])([a-z])\)(?=\s)"
)


def caption_number(text: str) -> str | None:
    """The figure number a caption starts with ("3"), or None when the text is not a figure caption."""
    match = CAPTION_START.match(text)
    return match.group(1) if match else None


def expand_letters(first: str, sep: str | None, last: str | None) -> list[str]:
    """'a' '-' 'c' -> [a, b, c]; 'a' ',' 'b' -> [a, b]; a range running backwards gives its first letter."""
    if not last:
        return [first]
    if sep and sep in _DASH and ord(last) >= ord(first):
        return [chr(c) for c in range(ord(first), ord(last) + 1)]
    return [first, last]


def _marker_letters(match: re.Match[str]) -> list[str]:
    if match.group(5):
        return [match.group(5)]
    letters = expand_letters(match.group(1), match.group(2), match.group(3))
    tail = re.findall(
        r",\s*([a-z])", match.group(0)[match.end(3) - match.start(0) :] if match.group(3) else ""
    )
    return list(dict.fromkeys(letters + tail))


def caption_parts(caption: str) -> tuple[str, dict[str, str]]:
    """The caption's lead (text before any panel marker) and each panel letter's own part.

    `(a, b) SEM of the origin; (c) detail` gives a and b the first part and c the second.
    """
    body = CAPTION_START.sub("", caption, count=1).strip()
    markers = list(_MARKER.finditer(body))
    if not markers:
        return body, {}
    lead = body[: markers[0].start()].strip()
    parts: dict[str, str] = {}
    for i, match in enumerate(markers):
        end = markers[i + 1].start() if i + 1 < len(markers) else len(body)
        text = re.sub(r"\s+(?:and|or)$", "", body[match.end() : end].strip(" ;,."))
        if not text:  # "(a) and (b) show ..." : the next marker's text is theirs too
            text = body[markers[i + 1].end() : _next_end(markers, i + 1, len(body))].strip(" ;,.")
        for letter in _marker_letters(match):
            parts[letter] = "; ".join(p for p in (parts.get(letter, ""), text) if p)
    return lead, parts


def _next_end(markers: list[re.Match[str]], i: int, size: int) -> int:
    return markers[i + 1].start() if i + 1 < len(markers) else size
