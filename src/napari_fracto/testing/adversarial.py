"""Answers a degenerate model can produce, for the parser's property test and its worst-case benchmark.

A model that loops repeats one short piece until the token limit: `repeat(piece)` fills the parser's
length cap with it. `PIECES` are the pieces that made the old regular expressions backtrack (unclosed
brackets, `<think>` runs, separators before a number) plus the structure the parser looks for.
"""

from __future__ import annotations

from napari_fracto.parsing import MAX_CHARS

PIECES: tuple[str, ...] = (
    "(",
    "[",
    "{",
    "[(",
    "<think>",
    "</think>",
    "<answer>",
    "```",
    '"label": "',
    '{"label":',
    "{}",
    "a:",
    "a,",
    "- ",
    "1 ",
    " (",
    ": 8",
    "no ",
    "cleavage facets ",
    "- cleavage facets\n",
    "river patterns (0.8), ",
    "{'label': 'x'}",
    '{"bbox_2d": [1, 2, 3',
    "\n",
    " ",
)


def repeat(piece: str, length: int = MAX_CHARS) -> str:
    """`piece` repeated to exactly `length` characters."""
    return (piece * (length // max(len(piece), 1) + 1))[:length]


def worst_cases(length: int = MAX_CHARS) -> dict[str, str]:
    """Each piece repeated to `length`, plus each pair of pieces alternating."""
    cases = {repr(piece): repeat(piece, length) for piece in PIECES}
    for a in PIECES[:10]:
        for b in PIECES[10:]:
            cases[repr(a + b)] = repeat(a + b, length)
    return cases
