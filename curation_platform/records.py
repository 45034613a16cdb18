"""The canonical record and the stage contract every operator follows.

Every stage is a function ``stage(docs: pl.DataFrame, cfg) -> StageResult``. ``kept`` holds the documents
that go on (the input columns plus any the stage adds); ``verdicts`` holds one ledger row for every document the
stage dropped (and optional annotation rows such as ``redact`` or ``flag``). The orchestration adds the
``keep`` rows, the drop, stage, run id and config hash, so operators stay free of bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

import polars as pl
import pyarrow.parquet as pq

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
# Tests of a generated code record (Python source run after the record's code by the verification sandbox):
# a record's string ``tests`` field, or its array of strings joined by newlines; null for other records.
CODE_TESTS_SCHEMA: dict[str, pl.DataType] = {"tests": pl.String}
INGEST_SCHEMA: dict[str, pl.DataType] = {**RECORD_SCHEMA, **WEB_PROVENANCE_SCHEMA, **CODE_TESTS_SCHEMA}

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


class DropInput(Protocol):
    """A drop-global stage's input (line, exact and near dedup): the upstream stage's kept documents of one drop,
    streamed, never the whole drop in memory unless the operator asks for it."""

    drop: str

    def batches(self, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        """Frames of at most ``engine.batch_rows`` rows, in row order."""
        ...

    def scan(self) -> pl.LazyFrame:
        """A lazy view; never ``.collect()`` the text column of a whole drop."""
        ...


Frames = pl.DataFrame | Iterable[pl.DataFrame]


@dataclass
class StageResult:
    """What a stage returns: documents that go on, verdict rows, and numbers for the asset metadata. A drop-global
    stage may return ``kept`` and ``verdicts`` as iterators of frames (written in order as they come)."""

    kept: Frames
    verdicts: Frames = field(default_factory=empty_verdicts)
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.verdicts, pl.DataFrame):
            self.verdicts = verdict_frame(self.verdicts)
        else:
            self.verdicts = map(verdict_frame, self.verdicts)

    @property
    def removed_ids(self) -> pl.Series:
        return self.verdicts.filter(pl.col("verdict").is_in([DROP, QUARANTINE]))["doc_id"].unique()


_AVERAGED = ("mean", "median", "quantile", "rate", "ratio", "frac", "share", "avg")


def merge_metrics(total: dict[str, Any], batch: dict[str, Any], total_rows: int, batch_rows: int) -> dict[str, Any]:
    """Merge one batch's metrics into the running ``total`` (of ``total_rows`` documents so far): integer counts
    are summed; numbers whose name says they are per-document statistics (mean, median, quantile, rate, ratio,
    frac, share) become the batch-size-weighted mean; dicts merge key by key; anything else keeps its first
    non-null value."""
    merged = dict(total)
    weight = total_rows + batch_rows
    for key, value in batch.items():
        if key not in merged or merged[key] is None:
            merged[key] = value
            continue
        old = merged[key]
        averaged = any(word in key.lower() for word in _AVERAGED)
        if isinstance(old, dict) and isinstance(value, dict):
            merged[key] = merge_metrics(old, value, total_rows, batch_rows)
        elif value is None or isinstance(value, bool) or isinstance(old, bool):
            continue
        elif isinstance(old, (int, float)) and isinstance(value, (int, float)):
            if averaged and weight:
                merged[key] = (old * total_rows + value * batch_rows) / weight
            else:
                merged[key] = old + value
        elif (isinstance(old, list) and isinstance(value, list) and len(old) == len(value) and averaged and weight
              and all(isinstance(v, (int, float)) for v in [*old, *value])):
            merged[key] = [(a * total_rows + b * batch_rows) / weight for a, b in zip(old, value)]
    return merged


def split_by_verdicts(docs: pl.DataFrame, verdicts: pl.DataFrame, metrics: dict[str, Any] | None = None) -> StageResult:
    """Build a StageResult: documents with a drop or quarantine verdict leave, the rest are kept."""
    verdicts = verdict_frame(verdicts)
    removed = verdicts.filter(pl.col("verdict").is_in([DROP, QUARANTINE])).select("doc_id").unique()
    kept = docs.join(removed, on="doc_id", how="anti", maintain_order="left")
    return StageResult(kept=kept, verdicts=verdicts, metrics=metrics or {})


# Simple DropInput implementations (the pipeline's own, over a stage's composed view, is pipeline.StageInput).


class FrameDropInput:
    """A DropInput over an in-memory frame (tests, small callers)."""

    def __init__(self, frame: pl.DataFrame, drop: str = "", batch_rows: int = 20_000):
        self.frame, self.drop, self.batch_rows = frame, drop, max(1, batch_rows)

    def _present(self, columns: list[str] | None) -> list[str]:
        return self.frame.columns if columns is None else [c for c in columns if c in self.frame.columns]

    def batches(self, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        frame = self.frame.select(self._present(columns))
        if frame.height == 0:
            yield frame
        for start in range(0, frame.height, self.batch_rows):
            yield frame.slice(start, self.batch_rows)

    def scan(self) -> pl.LazyFrame:
        return self.frame.lazy()


class ParquetDropInput:
    """A DropInput over one Parquet file (a stage output), read with pyarrow ``iter_batches``."""

    def __init__(self, path: str | Path, drop: str, batch_rows: int = 20_000, with_columns: dict | None = None):
        # ``with_columns``: constant columns added to every batch (e.g. the drop's order).
        self.path, self.drop, self.batch_rows = Path(path), drop, max(1, batch_rows)
        self.with_columns = with_columns or {}

    def _extend(self, frame: pl.DataFrame, columns: list[str] | None) -> pl.DataFrame:
        extra = {k: v for k, v in self.with_columns.items() if columns is None or k in columns}
        return frame.with_columns(**extra) if extra else frame

    def _file_columns(self, columns: list[str] | None) -> list[str] | None:
        if columns is None:
            return None
        present = set(pq.read_schema(self.path).names)
        return [c for c in columns if c in present]

    def batches(self, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        # One slice per batch through Polars' reader, which decodes only the row groups the slice needs: memory
        # stays flat as the file grows (pyarrow's iter_batches kept ~1.6x more resident at 4x the rows).
        rows = pq.ParquetFile(self.path).metadata.num_rows
        lazy = pl.scan_parquet(self.path)
        file_columns = self._file_columns(columns)
        lazy = lazy.select(file_columns) if file_columns is not None else lazy
        for start in range(0, max(rows, 1), self.batch_rows):
            yield self._extend(lazy.slice(start, self.batch_rows).collect(), columns)

    def scan(self) -> pl.LazyFrame:
        lazy = pl.scan_parquet(self.path)
        return lazy.with_columns(**self.with_columns) if self.with_columns else lazy
