"""Small renderings shared by the UI metadata, the CLI and the data card."""

from __future__ import annotations

import polars as pl


def markdown_table(frame: pl.DataFrame | None, max_chars: int = 80) -> str:
    """A Markdown table of a frame's scalar columns, long strings shortened (for previews, never the full text)."""
    if frame is None or frame.is_empty():
        return "_no rows_"
    columns = [c for c, t in frame.schema.items() if not isinstance(t, (pl.List, pl.Struct))]
    def cell(value: object) -> str:
        text = "" if value is None else str(value)
        text = text.replace("\n", " ").replace("|", "\\|")
        return text if len(text) <= max_chars else text[: max_chars - 1] + "…"
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in frame.select(columns).iter_rows():
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)
