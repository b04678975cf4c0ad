"""Which vocabulary label a class folder of a real collection stands for.

Real collections name their folders "Ductile", "Intergranular Brittle", "fatigue" or "01_cleavage": the
label is found by (1) an explicit mapping (`--map "Ductile=ductile overload"` or a mapping file), then
(2) the whole name as a label or synonym (case, punctuation and plurals ignored), then (3) the longest run
of its words that is a label or synonym, in any word order ("Transgranular Brittle" is "brittle
transgranular"). Two different labels matching equally well is ambiguous: the folder is reported and
skipped, never guessed. A mapping to nothing (`"Other="`) skips a folder on purpose.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from napari_fracto.dataset.model import DatasetError
from napari_fracto.vocabulary import Vocabulary, normalize

#: words that carry no label by themselves (a folder "01 fatigue images" is "fatigue")
_NOISE = {"image", "images", "img", "sample", "samples", "class", "the", "of", "and", "sem"}


@dataclass(frozen=True)
class FolderMatch:
    """The labels a folder maps to and how that was decided (shown in a dry run)."""

    folder: str
    labels: tuple[str, ...]
    how: str  # "mapping", "name", "words 'intergranular'", "skipped by mapping", or why nothing matched

    @property
    def matched(self) -> bool:
        return bool(self.labels)


def parse_mapping(items: Iterable[str], vocab: Vocabulary) -> dict[str, tuple[str, ...]]:
    """`FOLDER=LABEL[,LABEL...]` strings as {normalised folder: canonical labels}; bad labels raise."""
    mapping: dict[str, tuple[str, ...]] = {}
    for item in items:
        folder, sep, target = str(item).partition("=")
        if not sep or not folder.strip():
            raise DatasetError(
                f'mapping {item!r} is not FOLDER=LABEL (e.g. --map "Ductile=ductile overload")'
            )
        mapping[normalize(folder)] = _targets(folder.strip(), target, vocab)
    return mapping


def read_mapping_file(path: str | os.PathLike[str], vocab: Vocabulary) -> dict[str, tuple[str, ...]]:
    """A mapping file: TOML or JSON `{folder = "label"}` (a list for several), or `FOLDER=LABEL` lines."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read the mapping file {path}: {exc}") from None
    data: object = None
    for loads in (json.loads, tomllib.loads):
        try:
            data = loads(text)
            break
        except ValueError:
            continue
    if isinstance(data, dict):
        mapping = {}
        for folder, target in data.items():
            targets = ",".join(target) if isinstance(target, list) else target
            if not isinstance(targets, str):
                raise DatasetError(f"{path}: the label for {folder!r} must be a string or a list of strings")
            mapping[normalize(folder)] = _targets(str(folder), targets, vocab)
        return mapping
    lines = [line.strip() for line in text.splitlines()]
    return parse_mapping((line for line in lines if line and not line.startswith("#")), vocab)


def _targets(folder: str, target: str, vocab: Vocabulary) -> tuple[str, ...]:
    labels = []
    for part in (p.strip() for p in target.split(",")):
        if not part:
            continue
        canonical = vocab.canonical(part)
        if canonical is None:
            raise DatasetError(
                f"mapping {folder}={target}: {part!r} is not a {vocab.task} label or synonym "
                f"(known: {', '.join(vocab.names())})"
            )
        labels.append(canonical)
    return tuple(dict.fromkeys(labels))


def match_folder(
    name: str, vocab: Vocabulary, mapping: Mapping[str, tuple[str, ...]] | None = None
) -> FolderMatch:
    """The labels of class folder `name` (see the module docstring for the order of the rules)."""
    key = normalize(name)
    if mapping and key in mapping:
        labels = mapping[key]
        return FolderMatch(name, labels, "mapping" if labels else "skipped by the mapping")
    whole = vocab.canonical(name)
    if whole is not None:
        return FolderMatch(name, (whole,), "name")
    by_words = {_word_key(k): label for k, label in vocab.match_keys().items()}
    words = [w for w in key.split() if w not in _NOISE and not w.isdigit()]
    for size in range(len(words), 0, -1):
        found: dict[str, str] = {}
        for start in range(len(words) - size + 1):
            run = words[start : start + size]
            label = by_words.get(_word_key(" ".join(run)))
            if label is not None:
                found.setdefault(label, " ".join(run))
        if len(found) == 1:
            label, run = next(iter(found.items()))
            return FolderMatch(name, (label,), f"words {run!r}")
        if len(found) > 1:
            return FolderMatch(
                name, (), f'ambiguous: {" or ".join(sorted(found))}; say which with --map "{name}=LABEL"'
            )
    return FolderMatch(
        name,
        (),
        f'not a {vocab.task} label or synonym; map it with --map "{name}=LABEL" (known: '
        f"{', '.join(vocab.names())})",
    )


def _word_key(text: str) -> tuple[str, ...]:
    return tuple(sorted(text.split()))


def describe_matches(matches: Iterable[FolderMatch], counts: Mapping[str, int] | None = None) -> str:
    """The folder -> label table a dry run prints."""
    lines = []
    for m in matches:
        n = f" ({counts[m.folder]} file(s))" if counts and m.folder in counts else ""
        target = ", ".join(m.labels) if m.labels else "(not imported)"
        lines.append(f"{m.folder!r}{n} -> {target}   [{m.how}]")
    return "\n".join(lines)


__all__ = ["FolderMatch", "describe_matches", "match_folder", "parse_mapping", "read_mapping_file"]
