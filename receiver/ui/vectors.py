"""A prediction's embeddings drawn small: each vector as an SVG sparkline, not 384 numbers.

Drawn on the server as polyline points, so the page needs no script and loads nothing."""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_DRAWN = 8  # a page shows the first few; the output file or the read API has them all
WIDTH = 384
HEIGHT = 40


@dataclass(frozen=True)
class Drawn:
    count: int  # vectors in the output
    dimensions: int
    lines: list[str]  # SVG polyline points, one per drawn vector


def vectors_of(output: object) -> list[list[float]]:
    """The output as a list of equal-length vectors of finite numbers, or [] if it is not one
    (a file URL, an error's null, anything a sender made up)."""
    if not isinstance(output, list) or not output:
        return []
    dimensions = len(output[0]) if isinstance(output[0], list) else 0
    vectors = []
    for vector in output:
        if not isinstance(vector, list) or len(vector) != dimensions or dimensions < 2:
            return []
        if not all(_finite(value) for value in vector):
            return []
        vectors.append([float(value) for value in vector])
    return vectors


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def drawn(output: object) -> Drawn | None:
    vectors = vectors_of(output)
    if not vectors:
        return None
    lines = [_points(vector) for vector in vectors[:MAX_DRAWN]]
    return Drawn(count=len(vectors), dimensions=len(vectors[0]), lines=lines)


def _points(vector: list[float]) -> str:
    """x across the dimensions, y the value around the middle line, scaled to the largest."""
    scale = max(abs(value) for value in vector) or 1.0
    step = WIDTH / (len(vector) - 1)
    middle = HEIGHT / 2
    return " ".join(
        f"{index * step:.1f},{middle - value / scale * (middle - 1):.1f}"
        for index, value in enumerate(vector)
    )
