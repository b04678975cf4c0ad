"""Turn whatever a VLM wrote into canonical findings; never raises, says what it could not use.

Accepted, in this order of trust:

1. JSON: the canonical ``{"labels": [...], "advice": [...]}``, Qwen3-VL grounding lists
   ``[{"bbox_2d": [...], "label": ...}]``, plain lists of names, ``{label: confidence}`` maps, also inside
   ```` ```json ```` fences, surrounded by prose, or as Python literals (single quotes).
2. Cut-off or broken JSON: every complete ``{...}`` entry is kept, then any complete ``"label": "..."``
   after it (label only); a ``problems`` note says the answer was incomplete.
3. PtychoBench ``<answer>[A, B]</answer>`` / ``<answer>A, B</answer>`` and plain comma, newline or bullet
   lists (``label: explanation`` and ``label (0.8)`` are understood).
4. Prose: known names and synonyms mentioned in the text, skipping negated ones ("no cleavage"); a
   ``problems`` note asks the user to check them.

Decisions: boxes stay on the 0-1000 grid and are not clamped here (`geometry.grid_to_pixels` clamps);
reversed corners are swapped; boxes that are not 4 finite numbers or have no area are dropped (the label
is kept without a box). A ``point_2d`` becomes a small box of 2 * POINT_HALF_SIZE grid units around the
point, so it stays visible and editable in napari. Confidences above 1 and up to 100 are read as
percentages, others are clamped to [0, 1]. Same label + same box are merged (highest confidence kept), and
a label-only finding is dropped when the same label also has a box. An exclusive label ("No obvious
artifacts") given together with others is dropped in favour of the others, with a note
(``keep_exclusive=True`` keeps it: evaluation scores answers as given). Text inside
``<think>...</think>`` is ignored. With PtychoBench's advice vocabulary, a letter A-X is the advice it
stands for in PtychoBench (``<answer>J, K, L</answer>``, `evaluation.ptychobench.PARAM_CLASSES`).

Linear time on any input: a degenerate model can emit 100,000 ``(`` or ``<think>``. Patterns here never
backtrack over unbounded text (asides and thinking are cut by scanning, names longer than
_MAX_NAME_CHARS are not looked up, JSON decoding and literal evaluation have budgets); the worst cases
are in benchmarks/bench_parsing.py.
"""

from __future__ import annotations

import ast
import bisect
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from napari_fracto.findings import Box, Finding, ParseResult
from napari_fracto.geometry import GRID
from napari_fracto.vocabulary import Vocabulary, normalize
from napari_fracto.vocabulary import _singular as singular  # normalize()'s per-word step, for one-pass prose

POINT_HALF_SIZE = 10
MAX_CHARS = 100_000
_MAX_DECODE_STARTS = 400
_MAX_LITERAL_CHARS = 20_000
_MAX_NAME_CHARS = 200  # the longest name or synonym is ~50 characters; longer text is never a label
_LITERAL_BUDGET = 50_000  # characters given to json/ast decoding of salvaged pieces per answer
_DECODE_BUDGET = 4 * MAX_CHARS  # characters scanned by failed raw_decode attempts per region
_MAX_REGIONS = 20  # <answer> or ``` blocks read per answer; a real one has one or two
_MAX_ITEMS = 300  # list items or JSON pieces read per region; a vocabulary has tens of labels

_LABEL_KEYS = ("label", "name", "class", "category", "feature", "artifact", "type")
_BOX_KEYS = ("bbox_2d", "bbox", "box", "bounding_box")
_POINT_KEYS = ("point_2d", "point")
_CONF_KEYS = ("confidence", "score", "probability", "prob", "conf")
_LIST_KEYS = ("labels", "findings", "features", "artifacts", "detections", "objects", "predictions", "answer")
_ADVICE_KEYS = ("advice", "recommendations", "parameter_advice")
_EMPTY_ANSWERS = {"none", "nothing", "no", "n a", "na", "no label", "no feature", "empty", "no finding"}
_NEGATIONS = {"no", "not", "without", "absent", "absence", "lack", "free", "nor", "neither", "never", "non"}


@dataclass
class _Collector:
    vocab: Vocabulary
    advice_vocab: Vocabulary | None
    findings: list[Finding] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    answered: bool = False
    literal_budget: int = _LITERAL_BUDGET
    letters: dict[str, str] = field(default_factory=dict)  # PtychoBench advice letter -> name

    def __post_init__(self) -> None:
        from napari_fracto.evaluation.ptychobench import letter_map

        self.letters = letter_map(self.advice_vocab)

    def note(self, problem: str) -> None:
        if problem not in self.problems:
            self.problems.append(problem)

    def resolve(self, text: str, *, exact: bool = False) -> tuple[str, str] | None:
        """("label" | "advice", canonical name) for a name or synonym, else retried without an aside."""
        if len(text) > _MAX_NAME_CHARS:
            return None
        candidates = [text]
        stripped = _strip_asides(text).strip()
        if not exact and stripped and stripped != text:
            candidates.append(stripped)
        letter = self.letters.get(text.strip())
        if letter is not None:
            return "advice", letter
        for candidate in candidates:
            name = self.vocab.canonical(candidate)
            if name is not None:
                return "label", name
            if self.advice_vocab is not None:
                name = self.advice_vocab.canonical(candidate)
                if name is not None:
                    return "advice", name
        return None

    def add_unknown(self, text: str) -> None:
        text = " ".join(text.split())[:120]
        if text and text.lower() not in (u.lower() for u in self.unknown):
            self.unknown.append(text)

    def add_label(self, raw: Any, confidence: Any = None, box: Any = None, point: Any = None) -> bool:
        """Add one named entry; True when it named something (known or not)."""
        if isinstance(raw, list):
            return any([self.add_label(r, confidence, box, point) for r in raw])
        if not isinstance(raw, str):
            if raw is not None:
                self.note(f"ignored a label that is not text: {str(raw)[:40]!r}")
            return False
        text = raw.strip().strip("\"'`*").strip()
        if not text:
            return False
        resolved = self.resolve(text)
        if resolved is None:
            self.add_unknown(text)
            return True
        kind, name = resolved
        if kind == "advice":
            self.add_advice(name)
            return True
        parsed_box = _parse_box(box, self) if box is not None else None
        if parsed_box is None and box is None and point is not None:
            parsed_box = _point_box(point, self)
        self.findings.append(Finding(name, _parse_confidence(confidence, self), parsed_box))
        return True

    def add_advice(self, raw: Any) -> None:
        if isinstance(raw, list):
            for item in raw:
                self.add_advice(item)
            return
        if not isinstance(raw, str):
            return
        for piece in _split_items(raw) if "," in raw and self.advice_vocab is not None else [raw]:
            text = piece.strip().strip("\"'`*[]").strip()
            if not text:
                continue
            if self.advice_vocab is None:
                self.advice.append(" ".join(text.split()))
                continue
            name = self.letters.get(text) or self.advice_vocab.canonical(text)
            if name is None:
                self.add_unknown(text)
                self.note(f"unknown advice {text[:60]!r}")
            else:
                self.advice.append(name)


def _strip_asides(text: str) -> str:
    """`text` with each "(...)" and "[...]" replaced by a space, in one pass (an unclosed one stays)."""
    out: list[str] = []
    closed = {"(": True, "[": True}  # False once no closing bracket is left: later openers stay as text
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if closed.get(ch):
            j = text.find(")" if ch == "(" else "]", i + 1)
            if j != -1:
                out.append(" ")
                i = j + 1
                continue
            closed[ch] = False
        out.append(ch)
        i += 1
    return "".join(out)


# ----------------------------------------------------------------------------------------- values


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _parse_confidence(value: Any, c: _Collector) -> float | None:
    if value is None:
        return None
    percent = False
    if isinstance(value, str):
        text = value.strip()
        percent = text.endswith("%")
        value = text.rstrip("%").strip()
    number = _number(value)
    if number is None:
        c.note(f"confidence {str(value)[:30]!r} is not a number; ignored")
        return None
    if percent or 1 < number <= 100:
        number /= 100
    if not 0 <= number <= 1:
        c.note(f"confidence {number:g} is outside 0-1; clamped")
        number = min(max(number, 0.0), 1.0)
    return number


def _coords(value: Any) -> list[float] | None:
    if isinstance(value, str):
        parts = re.findall(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", value)
        value = parts
    if isinstance(value, dict):
        value = [value.get(k) for k in ("x1", "y1", "x2", "y2")] if "x1" in value else None
    if not isinstance(value, (list, tuple)):
        return None
    if len(value) == 2 and all(isinstance(v, (list, tuple)) for v in value):
        value = [*value[0], *value[1]]
    numbers = [_number(v) for v in value]
    if any(n is None for n in numbers):
        return None
    return numbers  # type: ignore[return-value]


def _parse_box(value: Any, c: _Collector) -> Box | None:
    numbers = _coords(value)
    if numbers is None or len(numbers) != 4:
        c.note(f"dropped a malformed box {str(value)[:60]} (needs 4 numbers); kept its label")
        return None
    x1, y1, x2, y2 = numbers
    if x2 < x1 or y2 < y1:
        c.note("a box had its corners reversed; swapped them")
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        c.note(f"dropped a box with no area {[x1, y1, x2, y2]}; kept its label")
        return None
    return Box(x1, y1, x2, y2)


def _point_box(value: Any, c: _Collector) -> Box | None:
    numbers = _coords(value)
    if numbers is None or len(numbers) != 2:
        c.note(f"dropped a malformed point {str(value)[:60]} (needs 2 numbers); kept its label")
        return None
    x, y = (min(max(v, 0.0), float(GRID)) for v in numbers)
    h = POINT_HALF_SIZE
    return Box(max(x - h, 0.0), max(y - h, 0.0), min(x + h, float(GRID)), min(y + h, float(GRID)))


def _get(item: dict[Any, Any], keys: tuple[str, ...]) -> Any:
    lowered = {str(k).lower(): v for k, v in item.items()}
    for key in keys:
        if key in lowered:
            return lowered[key]
    return None


def _has(item: dict[Any, Any], keys: tuple[str, ...]) -> bool:
    return any(str(k).lower() in keys for k in item)


# ------------------------------------------------------------------------------------------- JSON


def _take_item(item: dict[Any, Any], c: _Collector) -> bool:
    """One {"label", "bbox_2d", ...} entry; True when it looked like one."""
    label = _get(item, _LABEL_KEYS)
    box = _get(item, _BOX_KEYS)
    point = _get(item, _POINT_KEYS)
    if label is None:
        if box is not None or point is not None:
            c.note("dropped a box without a label")
            return True
        return False
    return c.add_label(label, _get(item, _CONF_KEYS), box, point) or isinstance(label, str)


def _take_mapping(value: dict[Any, Any], c: _Collector) -> bool:
    """{"cleavage facets": 0.9, "river patterns": true}: keys are labels, values confidences."""
    keys = [k for k in value if isinstance(k, str) and c.resolve(k) is not None]
    if not keys:
        return False
    for key in keys:
        v = value[key]
        if v is None or v is False or (isinstance(v, str) and v.strip().lower() in {"no", "false", "absent"}):
            continue
        confidence = None if v is True or isinstance(v, (str, dict, list)) else v
        c.add_label(key, confidence)
    return True


def _take_value(value: Any, c: _Collector, depth: int = 0) -> bool:
    """Read a decoded JSON value into `c`; True when it was an answer (possibly empty)."""
    if depth > 4:
        return False
    if isinstance(value, list):
        if not value and depth == 0:
            c.answered = True
            return True
        relevant = False
        for item in value:
            if isinstance(item, dict):
                relevant = _take_item(item, c) or _take_value(item, c, depth + 1) or relevant
            elif isinstance(item, str) and depth <= 1:
                relevant = c.add_label(item) or relevant
        c.answered = c.answered or relevant
        return relevant
    if not isinstance(value, dict):
        return False
    relevant = False
    if _has(value, _LIST_KEYS):
        labels = _get(value, _LIST_KEYS)
        if isinstance(labels, str):
            labels = _split_items(labels)
        if isinstance(labels, list):
            for item in labels:
                if isinstance(item, dict):
                    _take_item(item, c)
                elif isinstance(item, str):
                    c.add_label(item)
            relevant = True
    if _has(value, _ADVICE_KEYS):
        c.add_advice(_get(value, _ADVICE_KEYS))
        relevant = True
    if not relevant:
        relevant = _take_item(value, c) or _take_mapping(value, c)
    if not relevant:
        relevant = any(_take_value(v, c, depth + 1) for v in value.values() if isinstance(v, (dict, list)))
    c.answered = c.answered or relevant
    return relevant


def _literal(text: str, c: _Collector | None = None) -> Any:
    """json.loads, then a Python literal (single quotes, True/None); raises ValueError when neither.

    With a collector, each call spends its length from the answer's budget, so thousands of small
    broken pieces cannot add up to seconds of decoding.
    """
    if c is not None:
        if c.literal_budget < len(text):
            raise ValueError("decoding budget spent")
        c.literal_budget -= len(text)
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    pythonic = "'" in text or "True" in text or "None" in text or "False" in text
    if len(text) <= _MAX_LITERAL_CHARS and pythonic:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    raise ValueError("not a literal")


_JSON_START = re.compile(r"[\[{]")


def _read_json(region: str, c: _Collector) -> bool:
    """Whole-region JSON first, then every JSON value embedded in the text."""
    stripped = region.strip()
    if stripped[:1] in "[{":
        try:
            if _take_value(_literal(stripped), c):
                return True
        except ValueError:
            pass
    decoder = json.JSONDecoder()
    spans: list[tuple[int, int]] = []
    pos, tries, scanned = 0, 0, 0
    while tries < _MAX_DECODE_STARTS and scanned < _DECODE_BUDGET:
        match = _JSON_START.search(region, pos)
        if match is None:
            break
        tries += 1
        try:
            value, end = decoder.raw_decode(region, match.start())
        except json.JSONDecodeError as exc:
            scanned += exc.pos - match.start()
            pos = match.start() + 1
            continue
        except (ValueError, RecursionError):
            scanned += len(region) - match.start()  # how far it got is unknown: count the worst
            pos = match.start() + 1
            continue
        if _take_value(value, c):
            spans.append((match.start(), end))
            pos = end
        else:
            pos = match.start() + 1
    if not spans:
        return False
    # Entries of a cut-off answer around the complete pieces decoded above.
    rest = list(region)
    for start, end in spans:
        rest[start:end] = " " * (end - start)
    remainder = "".join(rest)
    if _looks_like_json(remainder):
        _salvage(remainder, c, partial=True)
    return True


_OBJECT = re.compile(r"\{[^{}]*\}")
_LABEL_FIELD = re.compile(r"[\"'](?:label|name|class)[\"']\s*:\s*[\"']([^\"'\n]{1,200})[\"']", re.IGNORECASE)
_ADVICE_FIELD = re.compile(r"[\"']advice[\"']\s*:\s*\[([^\]]*)", re.IGNORECASE)


def _looks_like_json(region: str) -> bool:
    stripped = region.strip()
    return (
        stripped.startswith("{")
        or re.match(r"\[\s*\{", stripped) is not None
        or bool(re.search(r"[\"'](?:labels|label|bbox_2d)[\"']\s*:", region))
    )


def _salvage(region: str, c: _Collector, *, partial: bool = False) -> bool:
    """Keep the complete entries of cut-off or broken JSON (`partial`: some were decoded already)."""
    before = len(c.findings) + len(c.unknown)
    covered: list[tuple[int, int]] = []
    for count, match in enumerate(_OBJECT.finditer(region)):
        if count == _MAX_ITEMS:
            c.note(f"the answer has more than {_MAX_ITEMS} {{...}} pieces; read the first {_MAX_ITEMS}")
            break
        try:
            value = _literal(match.group(0), c)
        except ValueError:
            continue
        if isinstance(value, dict) and _take_item(value, c):
            covered.append(match.span())
    starts = [start for start, _ in covered]  # in order and disjoint: finditer's matches do not overlap
    for count, match in enumerate(_LABEL_FIELD.finditer(region)):
        if count == _MAX_ITEMS:
            break
        i = bisect.bisect_right(starts, match.start()) - 1
        if i < 0 or match.start() >= covered[i][1]:
            c.add_label(match.group(1))
    advice = _ADVICE_FIELD.search(region)
    if advice:
        for item in re.findall(r"[\"']([^\"'\n]+)[\"']", advice.group(1)):
            c.add_advice(item)
    if partial or len(c.findings) + len(c.unknown) > before or advice:
        c.answered = True
        c.note("the answer was cut off or is not valid JSON; kept the complete entries")
        return True
    c.note("the answer looks like JSON but is cut off before the first complete label")
    return False


# ------------------------------------------------------------------------------------------- text


def _split_items(text: str) -> list[str]:
    return [p for p in re.split(r"[,;\n]", text) if p.strip()]


_BULLET = re.compile(r"^\s*(?:[-*•+>]|\d{1,3}[.)])\s+")
_LEADING_FILLER = re.compile(
    r"^(?:(?:and|or|with|plus|also|some|a few|several|many|possibly|maybe|likely)\s+)+"
)
# A number at the end ("label (0.8)", "label: 80%"); each part optional once, so no ambiguous backtracking.
_TRAILING_CONF = re.compile(r"(\d{1,3}(?:\.\d+)?)(?:\s*(%))?(?:\s*[)\]])?\s*$")
_CONF_SEPARATORS = ":=([-"
_EXPLANATION_SEPARATORS = (":", " - ", " – ", " — ", "(")


def _clean_piece(piece: str) -> str:
    piece = _BULLET.sub("", piece.replace("**", "").replace("`", ""))
    piece = piece.strip().strip("[]{}\"'.").strip()
    return _LEADING_FILLER.sub("", piece)


def _list_items(region: str, c: _Collector) -> list[str]:
    """The items of a list answer: bullet lines if there are any (the rest is prose), else all lines."""
    lines = [line for line in region.splitlines() if line.strip()]
    bullets = [line for line in lines if _BULLET.match(line.replace("**", ""))]
    items: list[str] = []
    for line in (bullets or lines)[:_MAX_ITEMS]:
        line = _clean_piece(line)
        head = next(
            (
                line.split(sep, 1)[0]
                for sep in _EXPLANATION_SEPARATORS
                if sep in line and c.resolve(_clean_piece(line.split(sep, 1)[0])) is not None
            ),
            None,
        )
        if head is not None:  # "cleavage facets: flat facets, with river patterns" -> the label only
            items.append(head)
            continue
        before, sep, after = line.partition(":")
        if sep and bullets:
            items.append(before)  # "- **Wallner lines**: faint ripples" -> an (unknown) label
            continue
        if sep and len(before.split()) <= 3 and after.strip():
            line = after  # "Answer: A, B"
        items.extend(_split_items(line))
        if len(items) > _MAX_ITEMS:
            break
    if len(items) > _MAX_ITEMS or len(bullets or lines) > _MAX_ITEMS:
        c.note(f"the answer lists more than {_MAX_ITEMS} items; read the first {_MAX_ITEMS}")
        items = items[:_MAX_ITEMS]
    return [cleaned for cleaned in (_clean_piece(i) for i in items) if cleaned]


def _resolve_item(text: str, c: _Collector) -> tuple[str, str | None] | None:
    """(label text, confidence text) when a list item names a known label, maybe with a confidence."""
    if len(text) > _MAX_NAME_CHARS:
        return None
    if c.resolve(text, exact=True) is not None:
        return text, None
    match = _TRAILING_CONF.search(text)
    head = text[: match.start()] if match else ""
    if match and head and (head[-1].isspace() or head[-1] in _CONF_SEPARATORS):  # a separator before it
        label = _rstrip_separators(head)
        if label and c.resolve(label) is not None:
            return label, match.group(1) + (match.group(2) or "")
    if c.resolve(text) is not None:
        return text, None
    return None


def _rstrip_separators(text: str) -> str:
    end = len(text)
    while end and (text[end - 1].isspace() or text[end - 1] in _CONF_SEPARATORS):
        end -= 1
    return text[:end].strip()


def _read_text(region: str, c: _Collector) -> None:
    """A comma/newline/bullet list, or failing that prose mentioning known labels."""
    items = _list_items(region, c)
    if not items:
        if len(region.strip()) <= 4:
            c.answered = True  # "<answer></answer>" or "<answer>[]</answer>": nothing found
        else:
            c.note("no known label in the answer")
        return
    if not all(len(item.split()) <= 6 for item in items):
        if not _read_prose(region, c):
            c.note("no known label in the answer")
        return
    resolved = [_resolve_item(item, c) for item in items]
    empty = [normalize(item) in _EMPTY_ANSWERS for item in items]
    if not any(resolved) and not all(empty):
        if not _read_prose(region, c):
            for item in items:
                c.add_unknown(item)
            c.note("no known label in the answer")
        return
    c.answered = True
    ignored = 0
    labels_index = _by_first_word(c.vocab)
    for item, hit, is_empty in zip(items, resolved, empty, strict=True):
        if hit is not None:
            c.add_label(*hit)
        elif is_empty:
            continue
        elif names := _mentions(normalize(item).split(), labels_index):
            for name in names:
                c.add_label(name)
        elif len(item.split()) <= 4:
            c.add_unknown(item)
        else:
            ignored += 1
    if ignored:
        c.note(f"ignored {ignored} piece(s) of free text in the list")


_PROSE_TOKEN = re.compile(r"[.;:!?\n]|[^\W_]+")
_BREAKS = {"but", "however", "whereas", "although", "while", *".;:!?\n"}


def _clauses(text: str, candidates: set[str]) -> list[list[str]]:
    """The normalised words of each clause that has a word in `candidates`, in one pass.

    The words are those `normalize` gives per clause; clauses without a candidate cannot mention a name.
    """
    clauses: list[list[str]] = []
    words: list[str] = []
    hit = False
    for token in _PROSE_TOKEN.findall(text.lower()):
        if token in _BREAKS:
            if hit:
                clauses.append(words)
            words, hit = [], False
        else:
            word = singular(token)
            words.append(word)
            hit = hit or word in candidates
    if hit:
        clauses.append(words)
    return clauses


def _read_prose(text: str, c: _Collector) -> bool:
    """Labels mentioned in free text, clause by clause (longest match first, negated mentions skipped)."""
    found: list[str] = []
    advice: list[str] = []
    vocabularies = [(_by_first_word(c.vocab), found)]
    if c.advice_vocab is not None:
        vocabularies.append((_by_first_word(c.advice_vocab), advice))
    for words in _clauses(text, {first for index, _ in vocabularies for first in index}):
        for index, out in vocabularies:
            out.extend(_mentions(words, index))
    for name in dict.fromkeys(found):
        c.add_label(name)
    for name in dict.fromkeys(advice):
        c.add_advice(name)
    if found or advice:
        c.answered = True
        c.note("labels were read from free text, not a structured answer; check them")
        return True
    return False


_KeyIndex = dict[str, list[tuple[str, str, int]]]


def _by_first_word(vocab: Vocabulary) -> _KeyIndex:
    """first word -> (key, canonical name, number of words) for each match key of `vocab`."""
    index: _KeyIndex = {}
    for key, name in vocab.match_keys().items():
        words = key.split()
        if words:
            index.setdefault(words[0], []).append((key, name, len(words)))
    return index


def _mentions(words: list[str], index: _KeyIndex) -> list[str]:
    """Names mentioned in one clause; a negation word earlier in the clause ("no", "without") cancels.

    Only keys whose first word is in the clause are looked for, each with str.find on the joined words,
    so the cost is per word and per occurrence, not per word times keys.
    """
    present = {word for word in words if word in index}
    if not present:
        return []
    joined = " " + " ".join(words) + " "
    found: list[tuple[int, str, int]] = []  # (offset of the space before the key, name, words)
    for key, name, size in (entry for first in present for entry in index[first]):
        needle = f" {key} "
        pos = joined.find(needle)
        while pos != -1:
            found.append((pos, name, size))
            pos = joined.find(needle, pos + 1)
    if not found:
        return []
    word_at, offset = {}, 0
    for i, word in enumerate(words):
        word_at[offset] = i  # joined[offset] is the space before word i
        offset += len(word) + 1
    matches = [(word_at[pos], word_at[pos] + size, name) for pos, name, size in found]
    taken = [False] * len(words)
    chosen: list[tuple[int, int, str]] = []
    for start, end, name in sorted(matches, key=lambda m: (m[0] - m[1], m[0])):
        if any(taken[start:end]):
            continue
        for k in range(start, end):
            taken[k] = True
        chosen.append((start, end, name))
    first_negation = next((i for i, w in enumerate(words) if w in _NEGATIONS and not taken[i]), len(words))
    names = []
    for start, end, name in sorted(chosen):
        if first_negation < start:
            continue
        if end < len(words) and words[end] == "free":
            continue
        names.append(name)
    return list(dict.fromkeys(names))


# --------------------------------------------------------------------------------------- regions


_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)


def _strip_thinking(text: str, c: _Collector) -> str:
    """Drop each <think>...</think>, text before a stray </think>, and an unclosed <think> to the end.

    One left-to-right scan: once no </think> follows, later <think>s cannot close either.
    """
    kept: list[str] = []
    pos = 0
    while (opening := _THINK_OPEN.search(text, pos)) is not None:
        closing = _THINK_CLOSE.search(text, opening.end())
        if closing is None:
            break
        kept.append(text[pos : opening.start()])
        kept.append(" ")
        pos = closing.end()
    text = "".join(kept) + text[pos:]
    closings = list(_THINK_CLOSE.finditer(text))
    if closings:
        text = text[closings[-1].end() :]
    opening = _THINK_OPEN.search(text)
    if opening is not None:
        text = text[: opening.start()]
        c.note("the model was cut off while thinking; allow more new tokens")
    return text


def _regions(text: str) -> list[str]:
    answers = re.findall(r"<answer>(.*?)(?:</answer>|\Z)", text, flags=re.DOTALL | re.IGNORECASE)
    if answers:
        return answers
    fences = re.findall(r"```[ \t]*(?:json|python|text)?[ \t]*\n?(.*?)(?:```|\Z)", text, flags=re.DOTALL)
    fences = [f for f in fences if f.strip()]
    return fences or [text]


# ------------------------------------------------------------------------------------------ result


def _finish(c: _Collector, keep_exclusive: bool = False) -> ParseResult:
    merged: dict[tuple[str, Box | None], Finding] = {}
    for f in c.findings:
        key = (f.label, f.box)
        old = merged.get(key)
        if old is None:
            merged[key] = f
        elif f.confidence is not None and (old.confidence is None or f.confidence > old.confidence):
            merged[key] = Finding(f.label, f.confidence, f.box)
    boxed = {label for label, box in merged if box is not None}
    findings = [f for (label, box), f in merged.items() if box is not None or label not in boxed]
    if not keep_exclusive:
        findings = _exclusive(findings, c.vocab, c, lambda f: f.label, "label")
    advice = list(dict.fromkeys(c.advice))
    if c.advice_vocab is not None and not keep_exclusive:
        advice = _exclusive(advice, c.advice_vocab, c, lambda a: a, "advice")
    return ParseResult(
        findings=tuple(findings),
        unknown_labels=tuple(c.unknown),
        advice=tuple(advice),
        ok=c.answered,
        problems=tuple(c.problems),
    )


def _exclusive(items: list[Any], vocab: Vocabulary, c: _Collector, name_of: Any, what: str) -> list[Any]:
    exclusive = set(vocab.exclusive_labels)
    names = {name_of(i) for i in items}
    if names & exclusive and names - exclusive:
        dropped = ", ".join(sorted(names & exclusive))
        kept = ", ".join(n for n in dict.fromkeys(name_of(i) for i in items) if n not in exclusive)
        c.note(f"the model gave {dropped!r} together with other {what}s ({kept}); kept the others")
        return [i for i in items if name_of(i) not in exclusive]
    return items


def parse_response(
    text: Any, vocab: Vocabulary, advice_vocab: Vocabulary | None = None, *, keep_exclusive: bool = False
) -> ParseResult:
    """Findings (boxes on the 0-1000 grid), unknown labels, advice and problems from a model's answer.

    Never raises: `ok` is False when no answer could be found at all. `keep_exclusive`: an exclusive
    label given with others stays (the answer as given) instead of being dropped.
    """
    try:
        return _parse(text, vocab, advice_vocab, keep_exclusive)
    except Exception as exc:  # the contract is "never raises"; the property test checks this stays unused
        return ParseResult(
            ok=False, problems=(f"internal parser error ({type(exc).__name__}); please report this answer",)
        )


def _parse(
    text: Any, vocab: Vocabulary, advice_vocab: Vocabulary | None, keep_exclusive: bool
) -> ParseResult:
    c = _Collector(vocab, advice_vocab)
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    if len(text) > MAX_CHARS:
        c.note(f"the answer is {len(text)} characters long; only the first {MAX_CHARS} were read")
        text = text[:MAX_CHARS]
    text = _strip_thinking(text, c)
    if not text.strip():
        c.note("the answer is empty")
        return _finish(c, keep_exclusive)
    regions = _regions(text)
    if len(regions) > _MAX_REGIONS:
        c.note(f"the answer has {len(regions)} <answer> or ``` blocks; read the first {_MAX_REGIONS}")
        regions = regions[:_MAX_REGIONS]
    for region in regions:
        if _read_json(region, c):
            continue
        if _looks_like_json(region):
            _salvage(region, c)
            continue
        _read_text(region, c)
    return _finish(c, keep_exclusive)
