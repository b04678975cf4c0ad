"""Worst-case parse times: degenerate answers at the parser's length cap (issue 17).

A model that loops fills its token budget with one piece; before the linear-time parser, 100,000 `(`
took 157 s. This times every case of `napari_fracto.testing.adversarial.worst_cases()` (each piece and
each pair repeated to the cap) plus a random search over mixtures of pieces, and prints the slowest.

    .venv/bin/python benchmarks/bench_parsing.py [--random 200] [--top 8]

Target: every answer up to the cap parses in under 50 ms.
"""

from __future__ import annotations

import argparse
import random
import time

from napari_fracto.parsing import MAX_CHARS, parse_response
from napari_fracto.testing.adversarial import PIECES, repeat, worst_cases
from napari_fracto.vocabulary import load_vocabulary


def _time(text: str, vocab, advice) -> float:
    start = time.perf_counter()
    parse_response(text, vocab, advice)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--random", type=int, default=200, help="random mixtures of pieces to try")
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    fracture = load_vocabulary("fracture")
    ptycho, advice = load_vocabulary("ptychography"), load_vocabulary("ptychography-advice")
    cases = worst_cases()
    rng = random.Random(0)
    for i in range(args.random):
        piece = "".join(rng.choice(PIECES) for _ in range(rng.randint(2, 6)))
        cases[f"random {i}: {piece!r}"] = repeat(piece)
    timings = []
    for name, text in cases.items():
        seconds = max(_time(text, fracture, None), _time(text, ptycho, advice))
        timings.append((seconds, name))
    timings.sort(reverse=True)
    print(f"{len(cases)} answers of {MAX_CHARS:,} characters; slowest (fracture or ptychography + advice):")
    for seconds, name in timings[: args.top]:
        print(f"  {1000 * seconds:7.1f} ms  {name[:70]}")
    print(f"median {1000 * timings[len(timings) // 2][0]:.1f} ms")


if __name__ == "__main__":
    main()
