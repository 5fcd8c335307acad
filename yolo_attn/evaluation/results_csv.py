"""Ultralytics' per-epoch ``results.csv`` (losses, val metrics, wall time) as columns of floats.

Read by the report's training curves and by the compare tables' epoch-time column; torch-free, so rendering a table
stays fast.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

__all__ = ["read_results_csv"]


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def read_results_csv(path: Path) -> dict[str, list[float | None]]:
    """Ultralytics' ``results.csv`` as ``column -> values`` (names stripped of padding; unreadable cells None).

    Raises:
        OSError: The file cannot be read.
    """
    with Path(path).open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return {}
    header = [h.strip() for h in rows[0]]
    return {h: [_float(r[i]) if i < len(r) else None for r in rows[1:]] for i, h in enumerate(header)}
