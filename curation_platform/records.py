"""The canonical record and the stage contract every operator follows.

Every stage is a function ``stage(docs: pl.DataFrame, cfg) -> StageResult``. ``kept`` holds the documents
that go on (the input columns plus any the stage adds); ``verdicts`` holds one ledger row for every document the
stage dropped (and optional annotation rows such as ``redact`` or ``flag``). The orchestration adds the
``keep`` rows, the drop, stage, run id and config hash, so operators stay free of bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

MESSAGES_DTYPE = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))

# Columns every record carries from ingest to the training shard.
RECORD_SCHEMA: dict[str, pl.DataType] = {
    "doc_id": pl.String,
    "source": pl.String,
    "drop": pl.String,
    "source_id": pl.String,
    "license": pl.String,
    "kind": pl.String,
    "text": pl.String,
    "messages": MESSAGES_DTYPE,
    "provenance": pl.String,  # JSON object from the manifest, kept verbatim
    "file": pl.String,  # path of the file inside the drop
    "line": pl.Int64,  # 1-based line (or row) in that file; null for one-document-per-file formats
    "format": pl.String,
    "code_language": pl.String,  # programming language for code documents
    "declared_language": pl.String,  # language the manifest declares, if any
}

# Web provenance, written by ingest after the RECORD_SCHEMA columns (null where a format has none). Operators
# must not require them: documents built from RECORD_SCHEMA alone are valid input to every stage.
WEB_PROVENANCE_SCHEMA: dict[str, pl.DataType] = {
    "url": pl.String,  # the page's URL (WARC-Target-URI, or a JSON record's top-level `url`)
    "fetch_date": pl.String,  # WARC-Date of the fetch (ISO 8601), WARC drops only
    "content_type": pl.String,  # HTTP Content-Type of the fetch, WARC drops only
    "warc_record_id": pl.String,  # WARC-Record-ID, WARC drops only
}
INGEST_SCHEMA: dict[str, pl.DataType] = {**RECORD_SCHEMA, **WEB_PROVENANCE_SCHEMA}

# Verdict kinds. ``drop`` and ``quarantine`` remove a document; the others annotate a kept one.
DROP, QUARANTINE, KEEP, REDACT, FLAG = "drop", "quarantine", "keep", "redact", "flag"

# What an operator returns for its verdicts. ``value`` is the measured signal, ``threshold`` the bound it broke
# written as a comparison (``"< 50"``), ``duplicate_of`` the kept document a duplicate points to.
VERDICT_SCHEMA: dict[str, pl.DataType] = {
    "doc_id": pl.String,
    "verdict": pl.String,
    "rule": pl.String,
    "value": pl.Float64,
    "threshold": pl.String,
    "detail": pl.String,
    "duplicate_of": pl.String,
    "cluster_id": pl.String,  # near-duplicate cluster (the doc_id of its first document in keep order)
}


def empty_verdicts() -> pl.DataFrame:
    return pl.DataFrame(schema=VERDICT_SCHEMA)


def verdict_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """Coerce an operator's verdict rows to VERDICT_SCHEMA (missing columns become null)."""
    return frame.select(
        [
            (pl.col(name) if name in frame.columns else pl.lit(None)).cast(dtype).alias(name)
            for name, dtype in VERDICT_SCHEMA.items()
        ]
    )


@dataclass
class StageResult:
    """What a stage returns: documents that go on, verdict rows, and numbers for the asset metadata."""

    kept: pl.DataFrame
    verdicts: pl.DataFrame = field(default_factory=empty_verdicts)
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.verdicts = verdict_frame(self.verdicts)

    @property
    def removed_ids(self) -> pl.Series:
        return self.verdicts.filter(pl.col("verdict").is_in([DROP, QUARANTINE]))["doc_id"].unique()


def merge_metrics(parts: list[dict[str, Any]], rows: list[int]) -> dict[str, Any]:
    """The metrics of one stage run batch by batch, as one dict: integers (counts) add up, dicts merge key by key,
    other numbers (means, medians, rates, quantile lists) are averaged weighted by each batch's ``rows``, which is
    exact for means and an approximation for medians and quantiles. Metrics are asset metadata, never data."""
    merged: dict[str, Any] = {}
    for key in dict.fromkeys(k for part in parts for k in part):
        values = [(part[key], n) for part, n in zip(parts, rows) if part.get(key) is not None]
        if not values:
            merged[key] = None
        elif all(isinstance(v, dict) for v, _ in values):
            merged[key] = merge_metrics([v for v, _ in values], [n for _, n in values])
        elif all(isinstance(v, int) and not isinstance(v, bool) for v, _ in values):
            merged[key] = sum(v for v, _ in values)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v, _ in values):
            weight = sum(n for _, n in values) or 1
            merged[key] = sum(v * n for v, n in values) / weight
        elif all(isinstance(v, list) and len(v) == len(values[0][0]) and all(isinstance(x, (int, float)) for x in v)
                 for v, _ in values):
            weight = sum(n for _, n in values) or 1
            merged[key] = [sum(v[i] * n for v, n in values) / weight for i in range(len(values[0][0]))]
        else:  # labels and other non-numbers: the first batch's value
            merged[key] = values[0][0]
    return merged


def split_by_verdicts(docs: pl.DataFrame, verdicts: pl.DataFrame, metrics: dict[str, Any] | None = None) -> StageResult:
    """Build a StageResult: documents with a drop or quarantine verdict leave, the rest are kept."""
    verdicts = verdict_frame(verdicts)
    removed = verdicts.filter(pl.col("verdict").is_in([DROP, QUARANTINE])).select("doc_id").unique()
    kept = docs.join(removed, on="doc_id", how="anti", maintain_order="left")
    return StageResult(kept=kept, verdicts=verdicts, metrics=metrics or {})
