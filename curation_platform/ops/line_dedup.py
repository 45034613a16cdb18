"""Line and paragraph dedup: remove boilerplate lines that repeat across many documents of the whole corpus.

Navigation, cookie banners and license footers repeat across thousands of pages but rarely make two pages
near-duplicates, so document-level MinHash keeps them. Like Dolma's paragraph dedup and C4's repeated-span rule
(Raffel et al. 2020 remove every three-sentence span seen before, keeping one), a line (after normalize, a line is
a paragraph or a list item) that occurs in at least ``min_documents`` distinct documents of the corpus is removed
from every document except its first occurrence; a document left shorter than ``min_chars`` is dropped.

Counting is across drops and incremental, like the document indexes: each drop writes
``index/lines/<drop>.parquet`` with one row per distinct line hash (XXH3-64 of the stripped line) and the number
of distinct documents holding it; a drop reads only the earlier drops' entries for its own hashes, through a
DuckDB semi-join over the Parquet files, so memory is bounded by the drop, not by the corpus. The lookup is
exact on 64-bit hashes: a line is wrongly taken for a repeated one only when its hash collides with another
line's, with probability about n / 2^64 for n distinct lines in the corpus (5e-11 for a billion lines). No Bloom
filter is needed, so there is no Bloom false-positive rate to budget.

Documents count as distinct by their text: exact copies of one page count once and are edited identically, so
exact dedup still sees them as copies (and records which document they copy).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import polars_hash as plh
from pydantic import BaseModel, ConfigDict, Field

from curation_platform.records import DROP, FLAG, StageResult, split_by_verdicts
from curation_platform.storage import as_path, register

LINE_INDEX_SCHEMA = {"line_hash": pl.UInt64, "documents": pl.UInt32}


class LineDedupConfig(BaseModel):
    """Corpus-wide repeated-line removal (Dolma paragraph dedup; C4 repeated spans)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    kinds: list[str] = Field(default_factory=lambda: ["web", "text"])  # code, chat and synthetic keep their lines
    # A line in at least this many distinct documents is boilerplate. Dolma and C4 use 2 (any repeat); 5 leaves
    # small clusters of copies to document dedup, which records what they copy.
    min_documents: int = Field(default=5, ge=2)
    min_line_chars: int = Field(default=1, ge=1)  # shorter lines (after stripping) are never removed
    min_chars: int = Field(default=50, ge=0)  # a document with lines removed and fewer characters left is dropped


def _xxh3_64(values: pl.Series) -> pl.Series:
    return pl.DataFrame({"v": values}).select(plh.col("v").fill_null("").nchash.xxh3_64())["v"]


def _hash64(expr: pl.Expr) -> pl.Expr:
    """Stable XXH3-64 of each string (Polars' own ``hash`` may change between versions)."""
    return expr.map_batches(_xxh3_64, return_dtype=pl.UInt64)


def _earlier_counts(hashes: pl.DataFrame, index_files: list[Path]) -> pl.DataFrame:
    """(line_hash, earlier): documents of earlier drops holding each of ``hashes``' lines, out of core."""
    files = [str(f) for f in index_files if as_path(f).exists()]
    if not files or hashes.is_empty():
        return pl.DataFrame(schema={"line_hash": pl.UInt64, "earlier": pl.UInt64})
    with duckdb.connect() as con:
        con.execute("SET memory_limit = '1GB'")
        register(con, *files)  # an index in object storage is read through fsspec
        con.register("probe", hashes.select("line_hash").to_arrow())
        table = con.sql(
            "SELECT i.line_hash, sum(i.documents)::UBIGINT AS earlier FROM read_parquet($files) i "
            "SEMI JOIN probe p ON i.line_hash = p.line_hash GROUP BY i.line_hash",
            params={"files": files},
        ).to_arrow_table()
    return pl.from_arrow(table).cast({"line_hash": pl.UInt64, "earlier": pl.UInt64})


def line_dedup(docs: pl.DataFrame, index_files: list[Path], cfg: LineDedupConfig) -> tuple[StageResult, pl.DataFrame]:
    """Remove corpus-wide repeated lines from ``docs`` of the configured kinds.

    In: documents (``doc_id``, ``kind``, ``text``) in keep order (earlier rows win), and the index files of the
    earlier drops. Out: the StageResult (edited texts; a ``flag`` verdict ``line_dedup.removed_lines`` per edited
    document with the number of lines removed; a ``drop`` verdict ``line_dedup.too_short`` per document left under
    ``min_chars``) and this drop's index entries (``line_hash``, ``documents``).
    """
    empty_entries = pl.DataFrame(schema=LINE_INDEX_SCHEMA)
    if not cfg.enabled or docs.is_empty():
        return StageResult(kept=docs, metrics={"lines_removed": 0}), empty_entries
    applicable = docs.with_row_index("_row").filter(pl.col("kind").is_in(cfg.kinds) & pl.col("text").is_not_null())
    lines = (
        applicable.select("_row", "text", _hash64(pl.col("text")).alias("text_hash"),
                          pl.col("text").str.split("\n").alias("line"))
        .drop("text")
        .with_columns(pl.int_ranges(pl.col("line").list.len()).alias("line_nr"))
        .explode("line", "line_nr")
        .with_columns(pl.col("line").str.strip_chars().alias("key"))
    )
    countable = lines.filter(pl.col("key").str.len_chars() >= cfg.min_line_chars).with_columns(
        _hash64(pl.col("key")).alias("line_hash"))
    here = countable.group_by("line_hash").agg(
        pl.col("text_hash").n_unique().cast(pl.UInt32).alias("documents"),
        pl.col("text_hash").sort_by("_row").first().alias("first_text"),
    )
    counts = here.join(_earlier_counts(here, index_files), on="line_hash", how="left").with_columns(
        pl.col("earlier").fill_null(0))
    boiler = counts.filter(pl.col("documents").cast(pl.UInt64) + pl.col("earlier") >= cfg.min_documents)
    removed = countable.join(boiler, on="line_hash", how="inner").filter(
        (pl.col("earlier") > 0) | (pl.col("text_hash") != pl.col("first_text"))
    ).select("_row", "line_nr", pl.col("key").str.len_chars().alias("chars"))
    entries = here.select("line_hash", "documents").sort("line_hash")
    if removed.is_empty():
        return StageResult(kept=docs, metrics={"lines_removed": 0, "documents_edited": 0,
                                               "distinct_lines": here.height}), entries

    edited_rows = removed.select("_row").unique()
    rebuilt = (
        lines.join(edited_rows, on="_row", how="semi")
        .join(removed.select("_row", "line_nr"), on=["_row", "line_nr"], how="anti")
        .sort("_row", "line_nr")
        .group_by("_row", maintain_order=True).agg(pl.col("line").str.join("\n").alias("new_text"))
    )
    # Edited documents with every line removed have no row in ``rebuilt``: they become empty.
    edited = edited_rows.join(rebuilt, on="_row", how="left").with_columns(
        pl.col("new_text").fill_null("").str.replace_all(r"\n{3,}", "\n\n").str.strip_chars())
    per_doc = removed.group_by("_row").agg(pl.len().alias("n"), pl.col("chars").sum().alias("chars"))
    out = (
        docs.with_row_index("_row").join(edited, on="_row", how="left", maintain_order="left")
        .with_columns(pl.coalesce("new_text", "text").alias("text")).drop("new_text")
    )
    changed = out.join(per_doc, on="_row").with_columns(pl.col("text").str.len_chars().alias("left"))
    flags = changed.select(
        "doc_id", pl.lit(FLAG).alias("verdict"), pl.lit("line_dedup.removed_lines").alias("rule"),
        pl.col("n").cast(pl.Float64).alias("value"),
        pl.format("removed {} repeated lines ({} characters)", "n", "chars").alias("detail"))
    short = changed.filter(pl.col("left") < cfg.min_chars).select(
        "doc_id", pl.lit(DROP).alias("verdict"), pl.lit("line_dedup.too_short").alias("rule"),
        pl.col("left").cast(pl.Float64).alias("value"), pl.lit(f"< {cfg.min_chars}").alias("threshold"),
        pl.format("{} characters left after removing {} repeated lines", "left", "n").alias("detail"))
    metrics = {
        "distinct_lines": here.height,
        "boilerplate_lines": boiler.height,
        "lines_removed": removed.height,
        "chars_removed": int(removed["chars"].sum()),
        "documents_edited": changed.height,
        "documents_too_short": short.height,
    }
    result = split_by_verdicts(out.drop("_row"), pl.concat([flags, short], how="diagonal_relaxed"), metrics)
    return result, entries
