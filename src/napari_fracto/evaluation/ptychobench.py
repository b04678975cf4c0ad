"""PtychoBench's class lists, answer strings and results-file layout, as its evaluation code defines them.

Source: github.com/crumeike/PtychoBench, `evaluation/ptychobench_loader.py` (`parse_answer_string`,
`ARTIFACT_CLASSES`, `PARAM_CLASSES`) and `evaluation/bootstrap.py` (`analyze_result_file`). Their
loader turns an answer into a 0/1 vector: drop the `<answer>` tags and the square brackets, split at
commas, strip, and keep the items that are exactly a class name (artifacts) or a letter A-X (parameter
advice; letter i is `PARAM_CLASSES[i]`). Anything else is dropped, and an empty answer is all zeros.

Pure (no numpy): used by the parser (letters), the scoring rules, the export and the importer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

ARTIFACT_CLASSES: tuple[str, ...] = (
    "Grid artifacts",
    "Halo artifacts",
    "Line artifacts",
    "Local distortion",
    "Low contrast",
    "No clear structure",
    "Noisy artifacts",
    "Non-uniform background",
    "Phase ramp",
    "Singularity artifacts",
    "Blurring",
    "No obvious artifacts",
)
PARAM_CLASSES: tuple[str, ...] = (
    "Change number of batches to 1",
    "Disable momentum acceleration",
    "Disable multimodal update",
    "Disable position correction",
    "Enable momentum acceleration",
    "Enable multimodal update",
    "Enable position correction",
    "Increase batch size",
    "Increase number of OPR modes",
    "Increase number of probe modes",
    "Increase the number of iterations",
    "No changes needed",
    "Recenter diffraction patterns",
    "Reduce batch size",
    "Reduce diffraction pattern size by factor of 2",
    "Reduce or disable regularization",
    "Try other diffraction pattern orientations",
    "Turn off affine constraint",
    "Turn off variable probe correction (set OPR modes to 0)",
    "Turn on variable probe correction (set OPR modes to 1)",
    "Use Gaussian noise model",
    "Use compact batch selection scheme",
    "Use multislice model",
    "Use sparse batch selection scheme",
)
LETTERS: tuple[str, ...] = tuple("ABCDEFGHIJKLMNOPQRSTUVWX")
LETTER_OF: dict[str, str] = dict(zip(PARAM_CLASSES, LETTERS, strict=True))
NAME_OF_LETTER: dict[str, str] = dict(zip(LETTERS, PARAM_CLASSES, strict=True))
# The shot entries bootstrap.py reads, in the order it reads them (others are ignored by it).
SHOT_KEYS: tuple[int, ...] = (0, 1, 3, 5, 7)
_SINGLE_LETTER = re.compile(r"^[A-X]$")


def letter_name(text: str) -> str | None:
    """The advice class a PtychoBench letter stands for ("J" -> "Increase number of probe modes")."""
    text = text.strip()
    return NAME_OF_LETTER.get(text) if _SINGLE_LETTER.match(text) else None


def letter_map(advice_vocab: Any) -> dict[str, str]:
    """Letter -> the advice vocabulary's canonical name, when it holds all 24 PtychoBench classes."""
    if advice_vocab is None:
        return {}
    names = {letter: advice_vocab.canonical(name) for letter, name in NAME_OF_LETTER.items()}
    return {} if None in names.values() else names  # type: ignore[return-value]


def answer_string(labels: Iterable[str], *, advice: bool = False) -> str:
    """What PtychoBench's loader reads back as exactly `labels` (class names or letters, in its order).

    Labels outside its class list are left out: its loader would drop them anyway.
    """
    given = set(labels)
    if advice:
        return "<answer>" + ", ".join(LETTER_OF[n] for n in PARAM_CLASSES if n in given) + "</answer>"
    return "<answer>[" + ", ".join(n for n in ARTIFACT_CLASSES if n in given) + "]</answer>"


def classes(advice: bool) -> Sequence[str]:
    return PARAM_CLASSES if advice else ARTIFACT_CLASSES


def file_groups(configs: Sequence[Any]) -> list[list[int]]:
    """Indices of the configurations that share one results file, each group in bootstrap.py's order.

    A PtychoBench results file holds one model and one selection mode, with one entry per k; so
    configurations that differ only in `shots` share a file, ordered 0, 1, 3, 5, 7 (then any other k,
    which bootstrap.py skips). bootstrap.py seeds its random stream once per file and runs it through
    the entries in that order, so an entry's interval depends on the entries before it.
    """
    groups: list[tuple[tuple[str, str, int], list[int]]] = []
    for index, config in enumerate(configs):
        key = (
            config.model_copy(update={"shots": 0, "name": ""}).fingerprint(),
            config.select,
            config.seed if config.select == "random" else 0,
        )
        home = next(
            (
                members
                for k, members in groups
                if k == key and all(configs[i].shots != config.shots for i in members)
            ),
            None,
        )
        if home is None:
            groups.append((key, [index]))
        else:
            home.append(index)

    def order(index: int) -> tuple[int, int]:
        k = configs[index].shots
        return (SHOT_KEYS.index(k), k) if k in SHOT_KEYS else (len(SHOT_KEYS), k)

    return [sorted(members, key=order) for _, members in groups]


def burn_in(configs: Sequence[Any], sizes: Sequence[int]) -> list[list[int]]:
    """Per configuration: the sizes of the entries bootstrap.py resamples before it in the same file.

    `sizes[i]` is how many images configuration i scored (0: no entry, nothing drawn for it).
    """
    burn: list[list[int]] = [[] for _ in configs]
    for group in file_groups(configs):
        before: list[int] = []
        for index in group:
            burn[index] = list(before)
            if configs[index].shots in SHOT_KEYS and sizes[index]:
                before.append(sizes[index])
    return burn
