"""Specialist and generalist together: two configurations asked about the same image at once.

`SecondOpinionBackend(first, second)` is a backend that asks both (in parallel, one Cancel stops both)
and answers with the first; the second's answer rides along in the reply and `analysis.run_request`
stores it in the result's `evidence["second_opinion"]` (`record`): who answered, its labels and
confidences, its full text (the generalist's explanation) and, per label, whether the two agree. So the
record keeps both, the review queue sees the disagreement, and nothing else needs a second result type.

`combine` scores simple rules over two configurations' labels, for eval's combination rows:
"agreement" (labels both named), "either" (labels either named) and "veto" (the specialist's labels,
less those the generalist did not name unless the specialist was at least `VETO_BELOW` sure).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from napari_fracto.backends.base import Backend, BackendError, CancelledError, VLMReply, VLMRequest

KEY = "second_opinion"
VETO_BELOW = 0.8
RULES = ("agreement", "either", "veto")


class SecondOpinionBackend:
    """Answers as `first`; `second` is asked the same chat at the same time and kept in `extra`."""

    def __init__(self, first: Backend, second: Backend, *, second_name: str = "") -> None:
        self.first = first
        self.second = second
        self.second_name = second_name or f"{second.name}:{second.model}"
        self.name = first.name
        self.model = first.model
        self.adapter = first.adapter
        self.base_url = getattr(first, "base_url", "")
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="second-opinion")
        self._lock = threading.Lock()

    def generate(self, request: VLMRequest) -> VLMReply:
        other = self._pool.submit(self.second.generate, request)
        try:
            reply = self.first.generate(request)
        except BaseException:
            other.cancel()
            raise
        opinion: dict[str, Any] = {"source": self.second_name}
        try:
            second = other.result()
            opinion |= {"text": second.text, "seconds": second.seconds}
        except CancelledError:
            raise
        except BackendError as exc:  # the first answer stands; the record says why the second is missing
            opinion |= {"text": "", "error": str(exc)}
        reply.extra = dict(reply.extra) | {KEY: opinion}
        return reply

    def close(self) -> None:
        self.close_second()
        self.first.close()

    def close_second(self) -> None:
        """Close the second configuration only (Analyze keeps its own backend loaded between runs)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.second.close()


def record(
    first_labels: Mapping[str, float | None], replies: Sequence[Mapping[str, Any]], vocab: Any
) -> dict[str, Any]:
    """The stored second opinion: its source, labels (label -> confidence), text and per-label agreement."""
    from napari_fracto.parsing import parse_response

    labels: dict[str, float | None] = {}
    texts = []
    errors = [str(r["error"]) for r in replies if r.get("error")]
    for reply in replies:
        texts.append(str(reply.get("text", "")))
        for f in parse_response(texts[-1], vocab).findings:
            old = labels.get(f.label)
            labels[f.label] = f.confidence if old is None else max(old, f.confidence or old)
    agreement = {
        label: "both" if label in first_labels and label in labels
        else ("first only" if label in first_labels else "second only")
        for label in dict.fromkeys([*first_labels, *labels])
    }  # fmt: skip
    out = {
        "source": str(replies[0].get("source", "")) if replies else "",
        "labels": labels,
        "text": "\n\n".join(texts),
        "agreement": agreement,
        "seconds": float(sum(float(r.get("seconds", 0.0)) for r in replies)),
    }
    if errors:  # no agreement is claimed where the second opinion never answered
        out["error"] = "; ".join(dict.fromkeys(errors))
        out["agreement"] = {}
    return out


def disagreements(stored: Mapping[str, Any]) -> list[str]:
    """Labels only one of the two named, e.g. for a panel or the queue."""
    return [label for label, how in dict(stored.get("agreement", {})).items() if how != "both"]


def combine(
    rule: str,
    specialist: Mapping[str, float | None],
    generalist: Mapping[str, float | None],
    *,
    veto_below: float = VETO_BELOW,
) -> list[str]:
    """One combination rule's labels from the two configurations' labels (label -> confidence)."""
    if rule == "agreement":
        return [label for label in specialist if label in generalist]
    if rule == "either":
        return list(dict.fromkeys([*specialist, *generalist]))
    if rule == "veto":
        return [
            label
            for label, c in specialist.items()
            if label in generalist or (c is not None and c >= veto_below)
        ]
    raise ValueError(f"unknown combination rule {rule!r}; use one of {', '.join(RULES)}")


def load_second_opinion(path: str | Path) -> Any:
    """The `EvalConfig` a --second-opinion file describes: one configuration's flat keys, TOML or JSON."""
    import json
    import tomllib

    from napari_fracto.evaluation.compare import ComparisonError, make_config

    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except OSError as exc:
        raise ComparisonError(f"cannot read the second-opinion file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ComparisonError(
            f"{path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise ComparisonError(
            f"{path}: expected a table of backend settings (the keys of a comparison entry)"
        )
    config = make_config(data, where=str(path))
    if config.shots:
        raise ComparisonError(f"{path}: a second opinion is asked without in-context examples; drop `shots`")
    return config


def paired_backend(backend: Backend, path: str | Path, confirm: Any) -> SecondOpinionBackend:
    """`backend` with the configuration in `path` asked beside it; `confirm(settings)` must allow a
    remote endpoint (the same consent as the first). Raises ComparisonError (a UserError) otherwise."""
    from napari_fracto.backends.factory import make_backend
    from napari_fracto.evaluation.compare import ComparisonError

    config = load_second_opinion(path)
    if config.settings.kind == "openai" and not config.settings.model:
        raise ComparisonError(f"{path}: an openai second opinion needs `model` (the name the server serves)")
    if not confirm(config.settings):
        raise ComparisonError(f"{path}: the second opinion's server was not allowed to receive the images")
    return SecondOpinionBackend(backend, make_backend(config.settings), second_name=config.label)


ROW_NAMES = {
    "agreement": "{s} + {g}: agreement only",
    "either": "{s} + {g}: either",
    "veto": "{s} with {g} veto",
}


def combination_results(results: Sequence[Any], specialist: str, generalist: str) -> list[Any]:
    """Eval rows (unscored `ConfigResult`s) of each rule over two evaluated configurations, by name."""
    from napari_fracto.evaluation.compare import EvalConfig
    from napari_fracto.evaluation.runner import ConfigResult, EvaluationError, Prediction

    by_name = {r.config.label: r for r in results}
    missing = [n for n in (specialist, generalist) if n not in by_name]
    if missing:
        raise EvaluationError(
            f"cannot combine: no configuration named {', '.join(map(repr, missing))}; "
            f"the configurations are {', '.join(map(repr, by_name))}"
        )
    spec = {p.image_id: p for p in by_name[specialist].predictions}
    gen = {p.image_id: p for p in by_name[generalist].predictions}
    rows = []
    for rule in RULES:
        name = ROW_NAMES[rule].format(s=specialist, g=generalist)
        row = ConfigResult(EvalConfig(name=name), fingerprint="")
        for image_id in [i for i in spec if i in gen]:
            a, b = spec[image_id], gen[image_id]
            labels = combine(rule, _opinion(a), _opinion(b))
            row.predictions.append(
                Prediction(
                    image_id=image_id,
                    labels=labels,
                    advice=[],
                    parse_ok=(a.parse_ok or b.parse_ok) if rule == "either" else a.parse_ok,
                    seconds=max(a.seconds, b.seconds),  # asked at once
                    raw_text="",
                )
            )
        rows.append(row)
    return rows


def _opinion(prediction: Any) -> dict[str, float | None]:
    if not prediction.parse_ok:
        return {}
    return {label: prediction.confidences.get(label) for label in prediction.labels}
