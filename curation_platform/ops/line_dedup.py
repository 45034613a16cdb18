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

import shutil
from pathlib import Path
from typing import Iterator

import polars as pl
import polars_hash as plh
from pydantic import BaseModel, ConfigDict, Field

from curation_platform.outofcore import (OutOfCore, SpillWriter, duckdb_connection, frames_then_remove,
                                         new_spill_folder, spill_folder, sql_path)
from curation_platform.records import (DROP, FLAG, VERDICT_SCHEMA, DropInput, FrameDropInput, StageResult,
                                       verdict_frame)
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


_LINES_SCHEMA = {"_row": pl.Int64, "line_nr": pl.Int64, "text_hash": pl.UInt64, "line_hash": pl.UInt64,
                 "chars": pl.UInt32}

# Out of core over the spilled (row, line) hashes: per distinct line, the documents (distinct texts) of this drop
# holding it and the text of its first occurrence; the earlier drops' counts for the same lines, read from their
# index files in place; the lines to remove (boilerplate, except the first occurrence unless an earlier drop has
# it), written to a Parquet file sorted by row for the rewrite. The per-line counts (about 20 bytes per distinct
# line, so they grow with the drop) go to a Parquet file read through a view, not to a table that an in-memory
# DuckDB holds in its buffer pool up to ``memory_limit``.
_LINE_SQL = """
COPY (
    SELECT line_hash, count(DISTINCT text_hash)::UINTEGER AS documents, arg_min(text_hash, _row) AS first_text
    FROM read_parquet($lines) GROUP BY line_hash
) TO '{here}' (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1);
CREATE TEMP VIEW here AS SELECT line_hash, documents, first_text FROM read_parquet('{here}');
CREATE TEMP TABLE earlier AS
    SELECT i.line_hash, sum(i.documents)::UBIGINT AS earlier
    FROM read_parquet($index_files) AS i SEMI JOIN here USING (line_hash) GROUP BY i.line_hash;
CREATE TEMP TABLE boiler AS
    SELECT h.line_hash, h.first_text, coalesce(e.earlier, 0) AS earlier
    FROM here AS h LEFT JOIN earlier AS e USING (line_hash)
    WHERE h.documents + coalesce(e.earlier, 0) >= $min_documents;
COPY (
    SELECT l._row, l.line_nr, l.chars FROM read_parquet($lines) AS l JOIN boiler AS b USING (line_hash)
    WHERE b.earlier > 0 OR l.text_hash <> b.first_text
    ORDER BY l._row, l.line_nr
) TO '{removed}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 100000);
"""


def _lines(rows: pl.DataFrame, cfg: LineDedupConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """All lines of the applicable documents of ``rows`` (which carry their drop row ``_row``) as (row, line_nr,
    line), and the countable lines' hashes."""
    applicable = rows.filter(pl.col("kind").is_in(cfg.kinds) & pl.col("text").is_not_null())
    lines = (
        applicable.select("_row", "text", _hash64(pl.col("text")).alias("text_hash"),
                          pl.col("text").str.split("\n").alias("line"))
        .drop("text")
        .with_columns(pl.int_ranges(pl.col("line").list.len(), dtype=pl.Int64).alias("line_nr"))
        .explode("line", "line_nr")
        .with_columns(pl.col("line").str.strip_chars().alias("key"))
    )
    countable = lines.filter(pl.col("key").str.len_chars() >= cfg.min_line_chars).select(
        "_row", "line_nr", "text_hash", _hash64(pl.col("key")).alias("line_hash"),
        pl.col("key").str.len_chars().cast(pl.UInt32).alias("chars"))
    return lines, countable


def _numbered(batch: pl.DataFrame, start: int) -> pl.DataFrame:
    return batch.with_columns(pl.int_range(start, start + batch.height, dtype=pl.Int64).alias("_row"))


def _rewrite(batch: pl.DataFrame, start: int, removed: pl.DataFrame, cfg: LineDedupConfig) -> pl.DataFrame:
    """The batch with the removed lines taken out of its edited documents (``removed``: their rows, this batch's
    only), plus ``_row``, ``_n`` (lines removed), ``_chars`` (their characters) and ``_left`` (characters left)."""
    rows = _numbered(batch, start)
    edited_rows = removed.select("_row").unique()
    lines, _ = _lines(rows.join(edited_rows, on="_row", how="semi"), cfg)
    rebuilt = (
        lines.join(removed.select("_row", "line_nr"), on=["_row", "line_nr"], how="anti")
        .sort("_row", "line_nr")
        .group_by("_row", maintain_order=True).agg(pl.col("line").str.join("\n").alias("new_text"))
    )
    # Edited documents with every line removed have no row in ``rebuilt``: they become empty.
    edited = edited_rows.join(rebuilt, on="_row", how="left").with_columns(
        pl.col("new_text").fill_null("").str.replace_all(r"\n{3,}", "\n\n").str.strip_chars())
    per_doc = removed.group_by("_row").agg(pl.len().cast(pl.UInt32).alias("_n"), pl.col("chars").sum().alias("_chars"))
    return (
        rows.join(edited, on="_row", how="left", maintain_order="left")
        .with_columns(pl.coalesce("new_text", "text").alias("text")).drop("new_text")
        .join(per_doc, on="_row", how="left", maintain_order="left")
        .with_columns(pl.col("text").str.len_chars().alias("_left"))
    )


def line_dedup(
    docs: pl.DataFrame | DropInput, index_files: list[Path], cfg: LineDedupConfig, ooc: OutOfCore | None = None,
) -> tuple[StageResult, pl.DataFrame | Iterator[pl.DataFrame]]:
    """Remove corpus-wide repeated lines from ``docs`` of the configured kinds.

    In: documents (``doc_id``, ``kind``, ``text``; a DropInput or a frame) in keep order (earlier rows win), and
    the index files of the earlier drops (queried in place). Out: the StageResult (edited texts, ``kept`` an
    iterator of batches in row order, a frame when ``docs`` is a frame; a ``flag`` verdict
    ``line_dedup.removed_lines`` per edited document with the number of lines removed; a ``drop`` verdict
    ``line_dedup.too_short`` per document left under ``min_chars``) and this drop's index entries (``line_hash``,
    ``documents``, sorted by hash; like ``kept``, an iterator of frames read from a spill file that DuckDB wrote,
    a frame when ``docs`` is a frame: 12 bytes per distinct line never all in memory).

    Out of core: the drop is read in batches and its line hashes spilled to Parquet; DuckDB counts them and joins
    the earlier drops' index files under the memory limit, writing the lines to remove sorted by row; a second
    pass rewrites the edited documents batch by batch (to decide which become too short), and the kept batches are
    rewritten the same way as they are read.
    """
    empty_entries = pl.DataFrame(schema=LINE_INDEX_SCHEMA)
    ooc = ooc or OutOfCore()
    frame_in = isinstance(docs, pl.DataFrame)
    source = FrameDropInput(docs, batch_rows=ooc.batch_rows) if frame_in else docs
    if not cfg.enabled:
        return StageResult(kept=docs if frame_in else source.batches(), metrics={"lines_removed": 0}), empty_entries
    folder_context = spill_folder(ooc, "line-dedup")
    folder = folder_context.__enter__()
    entries_folder = verdicts_folder = None  # owned by the iterators returned (removed here on error)
    try:
        lines_spill = SpillWriter(folder / "lines.parquet", _LINES_SCHEMA)
        start = 0
        for batch in source.batches(["doc_id", "kind", "text"]):
            lines_spill.write(_lines(_numbered(batch, start), cfg)[1])
            start += batch.height
        lines_path = lines_spill.close()
        if start == 0:
            folder_context.__exit__(None, None, None)
            return StageResult(kept=docs if frame_in else source.batches(), metrics={"lines_removed": 0}), \
                empty_entries
        files = [str(f) for f in index_files if as_path(f).exists()]
        removed_path = folder / "removed.parquet"
        with duckdb_connection(ooc, folder / "duckdb") as connection:
            register(connection, *files)  # an index in object storage is read through fsspec
            if not files:  # no earlier drop: an empty index with the same columns
                empty_entries.write_parquet(folder / "no_index.parquet")
                files = [str(folder / "no_index.parquet")]
            params = {"lines": str(lines_path), "index_files": files, "min_documents": cfg.min_documents}
            script = _LINE_SQL.format(removed=str(removed_path).replace("'", "''"),
                                      here=str(folder / "here.parquet").replace("'", "''"))
            for statement in script.split(";"):
                if statement.strip():
                    connection.execute(statement, {k: v for k, v in params.items() if f"${k}" in statement}
                                       ).fetchall()
            entries_folder = new_spill_folder(ooc, "line-entries")
            connection.execute(
                f"COPY (SELECT line_hash, documents FROM here ORDER BY line_hash) TO "
                f"{sql_path(entries_folder / 'entries.parquet')} (FORMAT parquet)").fetchall()
            entries = frames_then_remove(entries_folder / "entries.parquet", LINE_INDEX_SCHEMA, ooc.batch_rows,
                                         entries_folder)
            if frame_in:  # a frame in, a frame out
                entries = pl.concat(list(entries) or [empty_entries])
            distinct_lines = connection.execute("SELECT count(*) FROM here").fetchall()[0][0]
            boilerplate = connection.execute("SELECT count(*) FROM boiler").fetchall()[0][0]
            removed_lines, removed_chars, edited_docs = connection.execute(
                "SELECT count(*), coalesce(sum(chars), 0), count(DISTINCT _row) FROM read_parquet($removed)",
                {"removed": str(removed_path)}).fetchall()[0]
        if removed_lines == 0:
            folder_context.__exit__(None, None, None)
            metrics = {"lines_removed": 0, "documents_edited": 0, "distinct_lines": distinct_lines}
            return StageResult(kept=docs if frame_in else source.batches(), metrics=metrics), entries

        # Pass 2: rewrite the edited documents to know what is left of them (verdicts only; no text is kept). The
        # verdicts (a row per edited document) are spilled and read back batch by batch; only the ids of the
        # documents left too short stay in memory (the kept batches leave them out).
        verdicts_folder = new_spill_folder(ooc, "line-verdicts")
        flags_out = SpillWriter(verdicts_folder / "flags.parquet", VERDICT_SCHEMA)
        short_out = SpillWriter(verdicts_folder / "short.parquet", VERDICT_SCHEMA)
        short_ids, start = [], 0
        for batch, removed in _with_removed(source.batches(["doc_id", "kind", "text"]), removed_path):
            if removed.is_empty():
                start += batch.height
                continue
            rewritten = _rewrite(batch, start, removed, cfg).filter(pl.col("_n").is_not_null())
            start += batch.height
            flags = rewritten.select(
                "doc_id", pl.lit(FLAG).alias("verdict"), pl.lit("line_dedup.removed_lines").alias("rule"),
                pl.col("_n").cast(pl.Float64).alias("value"),
                pl.format("removed {} repeated lines ({} characters)", "_n", "_chars").alias("detail"))
            short = rewritten.filter(pl.col("_left") < cfg.min_chars).select(
                "doc_id", pl.lit(DROP).alias("verdict"), pl.lit("line_dedup.too_short").alias("rule"),
                pl.col("_left").cast(pl.Float64).alias("value"), pl.lit(f"< {cfg.min_chars}").alias("threshold"),
                pl.format("{} characters left after removing {} repeated lines", "_left", "_n").alias("detail"))
            flags_out.write(verdict_frame(flags))
            short_out.write(verdict_frame(short))
            short_ids.append(short["doc_id"])
        flags_out.close()
        short_out.close()
        # Every flag in row order, then every drop: the same rows in the same order for any batch size.
        verdicts = _verdict_batches(verdicts_folder, ooc.batch_rows)
        if frame_in:  # a frame in, a frame out
            verdicts = pl.concat(list(verdicts))
        dropped = pl.concat(short_ids) if short_ids else pl.Series("doc_id", [], pl.String)
        metrics = {
            "distinct_lines": distinct_lines,
            "boilerplate_lines": boilerplate,
            "lines_removed": removed_lines,
            "chars_removed": int(removed_chars),
            "documents_edited": edited_docs,
            "documents_too_short": dropped.len(),
        }
    except BaseException:
        folder_context.__exit__(None, None, None)
        for owned in (entries_folder, verdicts_folder):
            if owned is not None:
                shutil.rmtree(owned, ignore_errors=True)
        raise
    kept = _kept_batches(source, removed_path, dropped, cfg, folder_context)
    if frame_in:  # a frame in, a frame out
        kept = pl.concat(list(kept))
    return StageResult(kept=kept, verdicts=verdicts, metrics=metrics), entries


def _verdict_batches(folder: Path, batch_rows: int) -> Iterator[pl.DataFrame]:
    """The spilled verdicts, every flag then every drop, in frames of at most ``batch_rows``; ``folder`` is
    removed once they are read."""
    try:
        yield from frames_then_remove(folder / "flags.parquet", VERDICT_SCHEMA, batch_rows, None)
        yield from frames_then_remove(folder / "short.parquet", VERDICT_SCHEMA, batch_rows, None)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _with_removed(batches, removed_path: Path):
    """Each batch with the removed lines of its rows (the removed file is sorted by row: read once, in step)."""
    from curation_platform.workspace import iter_parquet

    # One row group at a time, pyarrow's pool pages released (``iter_batches`` over the whole file kept more memory
    # the more row groups it had passed).
    reader = iter_parquet(removed_path, 65_536)
    pending = pl.DataFrame(schema={"_row": pl.Int64, "line_nr": pl.Int64, "chars": pl.UInt32})
    exhausted, start = False, 0
    for batch in batches:
        stop = start + batch.height
        while not exhausted and (pending.is_empty() or pending["_row"][-1] < stop):
            chunk = next(reader, None)
            if chunk is None:
                exhausted = True
                break
            pending = pl.concat([pending, chunk.select(pending.columns).cast(pending.schema)])
        yield batch, pending.filter(pl.col("_row") < stop)
        pending = pending.filter(pl.col("_row") >= stop)
        start = stop


def _kept_batches(source: DropInput, removed_path: Path, dropped: pl.Series, cfg: LineDedupConfig,
                  folder_context) -> Iterator[pl.DataFrame]:
    """The input batch by batch with the removed lines taken out, minus the documents left too short. Owns the
    spill folder: it is removed once the batches are read (or the iterator is closed)."""
    try:
        start, dropped_ids = 0, dropped.implode()
        for batch, removed in _with_removed(source.batches(), removed_path):
            rewritten = _rewrite(batch, start, removed, cfg) if removed.height else batch
            start += batch.height
            yield rewritten.select(batch.columns).filter(~pl.col("doc_id").is_in(dropped_ids))
    finally:
        folder_context.__exit__(None, None, None)
