"""Self-consistency: ask k times at a non-zero temperature and report how often each label came back.

A VLM's printed confidence is whatever it prints; the fraction of k sampled answers that name a label
is a confidence with a meaning (a label named 4 times in 5 has agreement 0.8). `SelfConsistentBackend`
wraps any backend (local or server): it answers with the labels named by at least `min_agreement` of
the samples, each with its agreement as the confidence (the boxes of the first sample that named it),
so everything downstream (parsing, review, eval's calibration) reads it as one ordinary answer.
The samples themselves are kept in the reply's `extra["samples"]`. Pure; no Qt, no torch.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from napari_fracto.backends.base import Backend, CancelledError, VLMReply, VLMRequest

DEFAULT_SAMPLES = 5
DEFAULT_TEMPERATURE = 0.7


class SelfConsistentBackend:
    """`inner` asked `k` times at `temperature`; the answer is the labels most samples agree on."""

    def __init__(
        self,
        inner: Backend,
        vocab: Any,
        *,
        k: int = DEFAULT_SAMPLES,
        temperature: float = DEFAULT_TEMPERATURE,
        min_agreement: float = 0.5,
        advice_vocab: Any = None,
    ) -> None:
        if k < 2:
            raise ValueError(f"self-consistency needs at least 2 samples, got {k}")
        if temperature <= 0:
            raise ValueError(f"self-consistency samples at a temperature above 0, got {temperature}")
        self.inner = inner
        self.vocab = vocab
        self.advice_vocab = advice_vocab
        self.k = int(k)
        self.temperature = float(temperature)
        self.min_agreement = float(min_agreement)
        self.name = inner.name
        self.model = inner.model
        self.adapter = inner.adapter
        self.base_url = getattr(inner, "base_url", "")

    def generate(self, request: VLMRequest) -> VLMReply:
        from napari_fracto.findings import Finding
        from napari_fracto.parsing import parse_response
        from napari_fracto.prompts import format_answer

        texts: list[str] = []
        seconds = 0.0
        for _ in range(self.k):
            if request.cancel is not None and request.cancel.is_set():
                raise CancelledError("Analysis cancelled.")
            reply = self.inner.generate(replace(request, temperature=self.temperature))
            texts.append(reply.text)
            seconds += reply.seconds
        parsed = [parse_response(t, self.vocab, advice_vocab=self.advice_vocab) for t in texts]
        agreement = {}
        for result in parsed:
            for label in dict.fromkeys(f.label for f in result.findings):
                agreement[label] = agreement.get(label, 0) + 1 / self.k
        findings: list[Finding] = []
        for label, share in agreement.items():
            if share + 1e-9 < self.min_agreement:
                continue
            first = next(r for r in parsed if any(f.label == label for f in r.findings))
            findings += [Finding(label, round(share, 2), f.box) for f in first.findings if f.label == label]
        advice_count: dict[str, int] = {}
        for result in parsed:
            for item in dict.fromkeys(result.advice):
                advice_count[item] = advice_count.get(item, 0) + 1
        advice = [a for a, n in advice_count.items() if n / self.k + 1e-9 >= self.min_agreement]
        return VLMReply(
            format_answer(findings, advice=advice),
            seconds=seconds,
            extra={
                "samples": texts,
                "agreement": {label: round(a, 4) for label, a in agreement.items()},
                "unparsed_samples": sum(not r.ok for r in parsed),
            },
        )

    def close(self) -> None:
        self.inner.close()
