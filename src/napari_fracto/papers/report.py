"""What an import did, per paper and in all: kept, left out (and why), skipped files."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class PaperReport:
    """One paper's import: what was kept, what was left out and why."""

    file: str
    pages: int = 0
    figures: int = 0
    kept: int = 0
    left_out: Counter[str] = field(default_factory=Counter)  # "plot" -> 2
    reasons: list[str] = field(default_factory=list)  # "Fig. 2: a vector drawing (plot or schematic)"
    notes: list[str] = field(default_factory=list)
    image_ids: list[str] = field(default_factory=list)

    def describe(self) -> str:
        head = f"{self.file}: {self.kept} panel(s) kept from {self.figures} figure(s)"
        if self.left_out:
            head += "; left out " + ", ".join(f"{n} {k}" for k, n in self.left_out.most_common())
        return "\n".join([head] + [f"  {r}" for r in self.reasons + self.notes])


@dataclass
class PapersSummary:
    papers: list[PaperReport] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    cancelled: bool = False

    @property
    def kept(self) -> int:
        return sum(p.kept for p in self.papers)

    def describe(self) -> str:
        lines = [p.describe() for p in self.papers]
        lines += [f"skipped {why}" for _file, why in self.failed]
        total = f"{self.kept} panel(s) added as unreviewed from {len(self.papers)} paper(s)"
        lines.append(
            total
            + (f", {len(self.failed)} file(s) skipped" if self.failed else "")
            + (" (cancelled)" if self.cancelled else "")
        )
        return "\n".join(lines)
