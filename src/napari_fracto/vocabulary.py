"""Label vocabularies as data: what a model may answer for a task, with definitions and synonyms.

Built-in vocabularies live in ``napari_fracto/vocabularies/<task>.toml``. Users extend them without code by
putting a file with the same name in ``<config dir>/vocabularies/`` (``platformdirs`` config dir of
"napari-fracto", or ``$NAPARI_FRACTO_CONFIG_DIR``), or in ``$NAPARI_FRACTO_VOCAB_DIR`` when that is set.

File format (TOML; a built-in file has all keys, a user file only what it changes)::

    version = "1.0"                      # built-in: required. user file: optional tag, see below
    title = "SEM fractography"           # required for a new task, ignored for an existing one
    description = "SEM images of ..."    # optional: what the images are, used in prompts

    [[labels]]
    name = "cleavage facets"             # canonical name (what the model must answer)
    definition = "Flat crystallographic facets ..."   # one line, shown in prompts and tooltips
    synonyms = ["transgranular cleavage"]             # mapped to the name when parsing answers
    exclusive = false                    # true: this label excludes all others ("No obvious artifacts")
    implies = ["ductile overload"]       # optional: labels of the file's `mode_task` this one evidences

``boxes = false`` asks the model for labels only (no boxes), for tasks whose classes cover the image.
A file may name an upper level, ``mode_task = "fracture-mode"``: its labels' ``implies`` are labels of
that vocabulary (features -> failure modes; see `failure_modes`).

A user label whose name matches a built-in label adds its synonyms to it and, if it has a
``definition``, replaces the built-in one; any other user label is appended and needs a definition. A user
file for a task without a built-in file defines a new task (then ``title`` is required). The resulting
version is ``<built-in version>+<user version or "user">`` so every result records that the vocabulary
was customised.

Matching (``Vocabulary.canonical``) ignores case, punctuation (hyphens, underscores, slashes, brackets),
repeated whitespace and plural endings, so "Cleavage-Facet" and "cleavage_facets" both give
"cleavage facets".
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from napari_fracto.errors import UserError

VOCAB_DIR_ENV = "NAPARI_FRACTO_VOCAB_DIR"
_BUILTIN_PACKAGE = "napari_fracto.vocabularies"


class VocabularyError(UserError, ValueError):
    """A vocabulary file is missing or malformed; the message names the file and what to fix."""


@dataclass(frozen=True)
class Label:
    """One answer a model may give: canonical name, a one-line definition, and synonyms for parsing."""

    name: str
    definition: str
    synonyms: tuple[str, ...] = ()
    exclusive: bool = False
    implies: tuple[str, ...] = ()  # labels of the `mode_task` vocabulary this feature evidences


def normalize(text: str) -> str:
    """The matching key of a label: lower case, punctuation as spaces, each word singular.

    Both vocabulary names and model answers go through this, so it only needs to be consistent,
    not linguistically perfect.
    """
    words = re.sub(r"[\W_]+", " ", str(text).lower()).split()
    return " ".join(_singular(w) for w in words)


def _singular(word: str) -> str:
    if len(word) <= 3 or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    return word


@dataclass(frozen=True)
class Vocabulary:
    """The labels of one task. `version` is recorded with every result; `description` feeds prompts."""

    task: str
    version: str
    title: str
    labels: tuple[Label, ...]
    description: str = ""
    boxes: bool = True  # False: the model is asked for labels only (no bbox_2d), e.g. whole-image classes
    mode_task: str = ""  # the upper level (failure modes) its labels' `implies` name, e.g. "fracture-mode"
    _index: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        index: dict[str, str] = {}
        for label in self.labels:
            for text in (label.name, *label.synonyms):
                key = normalize(text)
                if not key:
                    continue
                other = index.setdefault(key, label.name)
                if other != label.name:
                    raise VocabularyError(
                        f"Vocabulary {self.task!r}: {text!r} would mean both {other!r} and {label.name!r}; "
                        "remove it from one of them."
                    )
        object.__setattr__(self, "_index", index)

    def names(self) -> list[str]:
        """Canonical label names in file order."""
        return [label.name for label in self.labels]

    def canonical(self, text: str) -> str | None:
        """The canonical name `text` means (name or synonym, tolerant matching), or None."""
        if not isinstance(text, str):
            return None
        return self._index.get(normalize(text))

    def get(self, name: str) -> Label:
        """The label called `name` (or a synonym of it); KeyError lists the known names."""
        canonical = self.canonical(name)
        for label in self.labels:
            if label.name == canonical:
                return label
        raise KeyError(f"{name!r} is not a label of {self.task!r}; known labels: {', '.join(self.names())}")

    @property
    def exclusive_labels(self) -> tuple[str, ...]:
        """Names of labels that exclude all others (e.g. "No obvious artifacts")."""
        return tuple(label.name for label in self.labels if label.exclusive)

    def match_keys(self) -> dict[str, str]:
        """Every normalised name and synonym -> canonical name (for finding labels in free text)."""
        return dict(self._index)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.canonical(name) is not None

    def __len__(self) -> int:
        return len(self.labels)


def user_vocabulary_dir() -> Path:
    """Where user vocabulary files are read from."""
    override = os.environ.get(VOCAB_DIR_ENV)
    if override:
        return Path(override)
    from napari_fracto.paths import config_dir

    return config_dir() / "vocabularies"


def _builtin_tasks() -> list[str]:
    folder = resources.files(_BUILTIN_PACKAGE)
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def _user_tasks() -> list[str]:
    folder = user_vocabulary_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.toml"))


def available_tasks() -> list[str]:
    """Tasks with a built-in or user vocabulary file."""
    return sorted(set(_builtin_tasks()) | set(_user_tasks()))


ADVICE_SUFFIX = "-advice"


def advice_vocabulary(task: str) -> Vocabulary | None:
    """The suggested-fixes list that goes with `task` (the vocabulary `<task>-advice`), or None.

    A convention rather than a table, so a lab's own task gets advice by adding `<task>-advice.toml`.
    """
    name = f"{task}{ADVICE_SUFFIX}"
    return load_vocabulary(name) if name in available_tasks() else None


def analysis_tasks() -> list[str]:
    """Tasks a user analyses or reviews: every vocabulary except the advice lists that go with a task."""
    tasks = available_tasks()
    return [t for t in tasks if not (t.endswith(ADVICE_SUFFIX) and t.removesuffix(ADVICE_SUFFIX) in tasks)]


def load_vocabulary(task: str) -> Vocabulary:
    """The vocabulary of `task`, built-in merged with the user's file (cached until the file changes)."""
    user_file = user_vocabulary_dir() / f"{task}.toml"
    try:
        stamp = user_file.stat().st_mtime_ns if user_file.is_file() else None
    except OSError:
        stamp = None
    return _load_cached(str(task), str(user_file), stamp)


@lru_cache(maxsize=32)
def _load_cached(task: str, user_file: str, stamp: int | None) -> Vocabulary:
    builtin = None
    if task in _builtin_tasks():
        text = resources.files(_BUILTIN_PACKAGE).joinpath(f"{task}.toml").read_text(encoding="utf-8")
        builtin = _read_toml(text, f"built-in vocabulary {task}.toml")
    user = _read_toml(Path(user_file).read_text(encoding="utf-8"), user_file) if stamp is not None else None
    if builtin is None and user is None:
        raise VocabularyError(
            f"Unknown task {task!r}. Known tasks: {', '.join(available_tasks()) or 'none'}. "
            f"To add one, put {task}.toml in {user_vocabulary_dir()}."
        )
    if builtin is None:
        return _build(task, user, user_file, require_version=False)
    vocab = _build(task, builtin, f"built-in vocabulary {task}.toml", require_version=True)
    return _merge(vocab, user, user_file) if user is not None else vocab


def _read_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise VocabularyError(f"{source} is not valid TOML: {exc}") from exc


@lru_cache(maxsize=1)
def _file_model() -> Any:
    """The pydantic model of a vocabulary file (built lazily: pydantic is only needed when loading)."""
    from pydantic import BaseModel, ConfigDict

    class LabelSpec(BaseModel):
        model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
        name: str
        definition: str = ""
        synonyms: list[str] = []
        exclusive: bool = False
        implies: list[str] = []

    class FileSpec(BaseModel):
        model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
        version: str = ""
        title: str = ""
        description: str = ""
        mode_task: str = ""
        boxes: bool | None = None
        labels: list[LabelSpec] = []

    return FileSpec


def _spec(data: dict[str, Any], source: str) -> Any:
    from pydantic import ValidationError

    try:
        spec = _file_model().model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors(include_url=False)
        )
        raise VocabularyError(f"{source}: {problems}") from exc
    if any(not lab.name for lab in spec.labels):
        raise VocabularyError(f"{source}: a label has an empty name")
    return spec


def _build(task: str, data: dict[str, Any], source: str, *, require_version: bool) -> Vocabulary:
    spec = _spec(data, source)
    if require_version and not spec.version:
        raise VocabularyError(f"{source}: 'version' is missing")
    if not spec.title:
        raise VocabularyError(f"{source}: 'title' is missing (needed for a new task)")
    missing = [lab.name for lab in spec.labels if not lab.definition]
    if missing:
        raise VocabularyError(f"{source}: labels without a definition: {', '.join(missing)}")
    if not spec.labels:
        raise VocabularyError(f"{source}: no [[labels]] defined")
    labels = tuple(
        Label(lab.name, lab.definition, tuple(dict.fromkeys(lab.synonyms)), lab.exclusive,
              tuple(dict.fromkeys(lab.implies)))
        for lab in spec.labels
    )  # fmt: skip
    version = spec.version if require_version else f"user-{spec.version or '0'}"
    try:
        return Vocabulary(
            task, version, spec.title, labels, spec.description,
            boxes=spec.boxes is not False, mode_task=spec.mode_task,
        )  # fmt: skip
    except VocabularyError as exc:
        raise VocabularyError(f"{source}: {exc}") from exc


def _merge(base: Vocabulary, data: dict[str, Any], source: str) -> Vocabulary:
    spec = _spec(data, source)
    labels = {label.name: label for label in base.labels}
    for lab in spec.labels:
        target = base.canonical(lab.name)
        if target is not None:
            old = labels[target]
            labels[target] = Label(
                old.name,
                lab.definition or old.definition,
                tuple(
                    dict.fromkeys(
                        (*old.synonyms, *lab.synonyms, *([lab.name] if lab.name != old.name else []))
                    )
                ),
                old.exclusive or lab.exclusive,
                tuple(dict.fromkeys((*old.implies, *lab.implies))),
            )
        elif lab.name in labels:
            raise VocabularyError(f"{source}: label {lab.name!r} is defined twice")
        else:
            if not lab.definition:
                raise VocabularyError(
                    f"{source}: new label {lab.name!r} needs a definition (one line, used in prompts)"
                )
            labels[lab.name] = Label(
                lab.name, lab.definition, tuple(dict.fromkeys(lab.synonyms)), lab.exclusive,
                tuple(dict.fromkeys(lab.implies)),
            )  # fmt: skip
    version = f"{base.version}+{spec.version or 'user'}"
    try:
        return Vocabulary(
            base.task, version, base.title, tuple(labels.values()), spec.description or base.description,
            boxes=base.boxes if spec.boxes is None else spec.boxes,
            mode_task=spec.mode_task or base.mode_task,
        )  # fmt: skip
    except VocabularyError as exc:
        raise VocabularyError(f"{source}: {exc}") from exc
