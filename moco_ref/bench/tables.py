"""How the suites print: plain aligned tables and a banner per section."""

from __future__ import annotations

import math

from moco_ref.bench.machine import load_average


def table(headers: list[str], rows: list[list], echo) -> None:
    """Prints a plain aligned table (numbers right-aligned, text left-aligned)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def line(values, raw):
        return "  ".join(
            v.rjust(w) if isinstance(r, (int, float)) else v.ljust(w) for v, w, r in zip(values, widths, raw)
        )

    echo(line(headers, headers))
    echo("  ".join("-" * w for w in widths))
    for row, raw in zip(cells, rows):
        echo(line(row, raw))


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        magnitude = abs(value)
        if magnitude >= 100:
            return f"{value:,.0f}"
        if magnitude >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value)


def banner(title: str, echo) -> None:
    echo("")
    echo(f"== {title} == (load average now: {load_average()})")
