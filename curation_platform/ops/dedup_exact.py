"""Exact-duplicate clusters of normalized content, against a persistent index of the other drops.

Each document's content (its text, or its rendered messages for chat records) is normalized cheaply (whitespace
collapsed, optionally lower-cased; NFC is done upstream) and hashed with XXH3-128; the hash is the exact cluster
key. The stage records clusters (within the drop and with the index of other drops) and drops nothing but the
content of taken-down documents: which copy of a cluster ships is decided per release
(:func:`exact_representatives`), so no license profile loses the only copy it may use.

The keep rule lives here (:func:`keep_order`) and is shared with near-duplicate selection
(:mod:`curation_platform.ops.dedup_minhash`), so both pick representatives the same way.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterator, Literal, Protocol, Sequence

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from curation_platform.errors import CurationError
from curation_platform.hashing import xxh128_hex
from curation_platform.licenses import license_restrictiveness
from curation_platform.outofcore import (OutOfCore, SpillWriter, duckdb_connection, frames_then_remove,
                                         new_spill_folder, spill_folder, sql_path)
from curation_platform.records import DROP, FLAG, DropInput, FrameDropInput, StageResult, verdict_frame
from curation_platform.storage import is_uri, register

RULE_DUPLICATE = "exact_dedup.duplicate"
# Content (exact or near) of a taken-down document arriving again, in a drop curated after the takedown.
RULE_BLOCKED = "takedown.blocked"

KeepKey = Literal["drop_order", "quality_score", "license", "doc_id"]
# Earliest drop, then higher quality, then more permissive license, then smallest doc_id.
DEFAULT_KEEP_RULE: tuple[KeepKey, ...] = ("drop_order", "quality_score", "license", "doc_id")


def _distinct_keys(keys: list[KeepKey]) -> list[KeepKey]:
    if len(set(keys)) != len(keys):
        raise ValueError(f"keep_rule lists a key twice: {keys}")
    return keys


# The keep-rule field both dedup stages share: sort keys in order, each at most once.
KeepRule = Annotated[list[KeepKey], AfterValidator(_distinct_keys)]


def default_keep_rule() -> list[KeepKey]:
    return list(DEFAULT_KEEP_RULE)

# One index entry per kept document; the orchestration persists these as Parquet per drop
# (``index/exact/<drop>.parquet``). The 128-bit content hash is two unsigned 64-bit words (high, low) and the doc_id
# the system's own id; the drop and its order are not stored: they are the file's drop and its registry entry.
EXACT_INDEX_SCHEMA: dict[str, pl.DataType] = {
    "hash_hi": pl.UInt64,
    "hash_lo": pl.UInt64,
    "doc_id": pl.String,
}
# The format written before issue 10 (hex hash, drop and order on every row): still read, never written.
LEGACY_EXACT_INDEX_SCHEMA: dict[str, pl.DataType] = {
    "content_hash": pl.String, "doc_id": pl.String, "drop": pl.String, "drop_order": pl.Int64,
}


@dataclass(frozen=True)
class IndexPart:
    """One drop's index entries, queried in place: a Parquet file (or, in tests, a frame) and the drop and drop
    order its entries belong to. Entries that carry ``drop``/``drop_order`` columns themselves (the legacy format,
    the takedown list) keep their own values."""

    source: Path | pl.DataFrame
    drop: str | None = None
    drop_order: int | None = None

    def columns(self) -> list[str]:
        if isinstance(self.source, pl.DataFrame):
            return self.source.columns
        return pq.read_schema(self.source.open("rb") if is_uri(self.source) else self.source).names

    def describe(self) -> str:
        return "frame" if isinstance(self.source, pl.DataFrame) else str(self.source)


def index_parts(index: pl.DataFrame | Sequence[IndexPart] | None) -> list[IndexPart]:
    """The index as parts: a frame (entries with their ``drop``/``drop_order`` columns) is one part."""
    if index is None:
        return []
    if isinstance(index, pl.DataFrame):
        return [IndexPart(index)]
    return list(index)


def register_index(connection: duckdb.DuckDBPyConnection, parts: list[IndexPart], columns: dict[str, str]) -> str:
    """A view ``index_raw`` over every part's entries: ``_part``, ``_row`` (position in the part), ``drop`` and
    ``drop_order`` (the entry's own, else the part's) and the given ``columns`` (name -> DuckDB type; NULL where a
    part does not store it). Every file is read by one ``read_parquet`` scan (files of both formats together,
    ``union_by_name``), so DuckDB streams them under its memory limit. Returns the view's name."""
    wanted = {**columns, "drop": "VARCHAR", "drop_order": "BIGINT"}
    files = [(i, p) for i, p in enumerate(parts) if not isinstance(p.source, pl.DataFrame)]
    selects = []
    if files:
        register(connection, *(p.source for _, p in files))  # index files in object storage, through fsspec
        present = set().union(*(p.columns() for _, p in files))
        connection.register("_index_files", pa.table({
            "_file": pa.array([str(p.source) for _, p in files], pa.string()),
            "_part": pa.array([i for i, _ in files], pa.int64()),
            "_drop": pa.array([p.drop for _, p in files], pa.string()),
            "_drop_order": pa.array([p.drop_order for _, p in files], pa.int64())}))
        own = {c: (f"f.{c}::{t}" if c in present else f"NULL::{t}") for c, t in wanted.items()}
        own["drop"] = f"coalesce({own['drop']}, m._drop)"
        own["drop_order"] = f"coalesce({own['drop_order']}, m._drop_order)"
        file_list = ", ".join(sql_path(p.source) for _, p in files)
        selects.append(
            f"SELECT m._part, f.file_row_number AS _row, {', '.join(f'{e} AS {c}' for c, e in own.items())} "
            f"FROM read_parquet([{file_list}], filename=true, file_row_number=true, union_by_name=true) AS f "
            "JOIN _index_files AS m ON f.filename = m._file")
    for i, part in enumerate(parts):
        if not isinstance(part.source, pl.DataFrame):
            continue
        name = f"_index_frame_{i}"
        connection.register(name, part.source.with_row_index("_row").to_arrow())
        have = set(part.source.columns)
        own = {c: (f"{c}::{t}" if c in have else f"NULL::{t}") for c, t in wanted.items()}
        if "drop" not in have:
            own["drop"] = "NULL::VARCHAR" if part.drop is None else f"{sql_path(part.drop)}::VARCHAR"
        if "drop_order" not in have:
            own["drop_order"] = "NULL::BIGINT" if part.drop_order is None else f"{int(part.drop_order)}::BIGINT"
        selects.append(f"SELECT {i} AS _part, _row::BIGINT AS _row, "
                       f"{', '.join(f'{e} AS {c}' for c, e in own.items())} FROM {name}")
    if not selects:
        selects.append("SELECT NULL::BIGINT AS _part, NULL::BIGINT AS _row, "
                       + ", ".join(f"NULL::{t} AS {c}" for c, t in wanted.items()) + " WHERE false")
    connection.execute("CREATE OR REPLACE TEMP VIEW index_raw AS " + " UNION ALL ".join(selects)).fetchall()
    return "index_raw"


def exact_index_sql(connection: duckdb.DuckDBPyConnection, parts: list[IndexPart]) -> str:
    """SQL over every part's entries as (``_part``, ``_row``, ``hash_hi``, ``hash_lo``, ``doc_id``, ``drop``,
    ``drop_order``), the new and the legacy format alike (the legacy hex hash is split into its two words)."""
    for part in parts:
        columns = part.columns()
        if not ({"hash_hi", "hash_lo"} <= set(columns) or "content_hash" in columns) or "doc_id" not in columns:
            raise DedupIndexError(
                f"exact dedup index {part.describe()} has columns {columns}; expected {list(EXACT_INDEX_SCHEMA)} (or "
                "the legacy content_hash, doc_id, drop, drop_order); re-curate its drop to rebuild it"
            )
    raw = register_index(connection, parts, {"hash_hi": "UBIGINT", "hash_lo": "UBIGINT", "content_hash": "VARCHAR",
                                             "doc_id": "VARCHAR"})
    return (f"(SELECT _part, _row, coalesce(hash_hi, ('0x' || substr(content_hash, 1, 16))::UBIGINT) AS hash_hi, "
            f"coalesce(hash_lo, ('0x' || substr(content_hash, 17, 16))::UBIGINT) AS hash_lo, doc_id, drop, drop_order "
            f"FROM {raw})")


class DedupIndexError(CurationError):
    """A persisted dedup index does not match what the stage expects (schema or hashing parameters)."""


class ExactDedupConfig(BaseModel):
    """Exact dedup settings. Defaults follow common practice (whitespace-collapsed, case-sensitive content
    hashing, as in RefinedWeb/Dolma exact dedup)."""

    model_config = ConfigDict(extra="forbid")

    lowercase: bool = False
    collapse_whitespace: bool = True
    keep_rule: KeepRule = Field(default_factory=default_keep_rule)


class _HasKeepRule(Protocol):
    keep_rule: list[KeepKey]


def empty_exact_index() -> pl.DataFrame:
    """An empty exact-dedup index with the persisted schema (the index of the first drop)."""
    return pl.DataFrame(schema=EXACT_INDEX_SCHEMA)


# Permissiveness rank of each SPDX id or expression, lower is more permissive: the release policy's own
# classifier (``A OR B`` ranks as its laxer side, ``A AND B`` as its stricter side; unknown or null ranks last).
license_rank = license_restrictiveness


def keep_order(frame: pl.DataFrame, cfg: _HasKeepRule) -> list[pl.Expr]:
    """Sort keys implementing the keep rule: sort ``frame`` ascending by them with nulls last and the first row
    is the document to keep. ``doc_id`` is always the final tie-break, so the order is total and deterministic.

    Missing optional columns (``quality_score``, ``license``) count as null, i.e. they never win a tie.
    """
    columns = set(frame.columns)
    keys: list[pl.Expr] = []
    order = list(cfg.keep_rule) if "doc_id" in cfg.keep_rule else [*cfg.keep_rule, "doc_id"]
    for key in order:
        if key == "drop_order":
            keys.append(pl.col("drop_order") if "drop_order" in columns else pl.lit(None, dtype=pl.Int64))
        elif key == "quality_score":
            # Negated so that an ascending sort puts the highest score first; null stays null (sorted last).
            quality = pl.col("quality_score").cast(pl.Float64) if "quality_score" in columns else pl.lit(None)
            keys.append(-quality.cast(pl.Float64))
        elif key == "license":
            # Ranked once per distinct value by the release's own classifier; no column ranks every row last.
            licenses = (frame["license"].cast(pl.String) if "license" in columns
                        else pl.Series([None] * frame.height, dtype=pl.String))
            keys.append(pl.lit(license_rank(licenses)))
        else:
            keys.append(pl.col("doc_id"))
    return [k.alias(f"_keep_key_{i}") for i, k in enumerate(keys)]


def keep_columns(frame: pl.DataFrame, *extra: str) -> list[str]:
    """The columns the keep rule reads (plus ``extra``) that ``frame`` has: sorting never needs the text."""
    return [c for c in ("doc_id", *extra, "drop_order", "quality_score", "license") if c in frame.columns]


def sort_by_keep_rule(frame: pl.DataFrame, cfg: _HasKeepRule) -> pl.DataFrame:
    """``frame`` sorted best-first by the keep rule (stable, nulls last)."""
    keys = keep_order(frame, cfg)
    names = [k.meta.output_name() for k in keys]
    # Materialized as columns first so that literal keys (a missing optional column) broadcast to every row.
    return frame.with_columns(keys).sort(names, nulls_last=True, maintain_order=True).drop(names)


def content_expr(columns: list[str]) -> pl.Expr:
    """The content a document is deduplicated on: its text, or for chat records without text the messages
    rendered one ``role: content`` per line. Null content becomes the empty string. ``columns`` are the
    frame's columns (``text`` and ``messages`` are each optional)."""
    parts = [pl.col("text")] if "text" in columns else []
    if "messages" in columns:
        parts.append(rendered_messages())
    return pl.coalesce(*parts, pl.lit("")).alias("_content")


def rendered_messages() -> pl.Expr:
    """Chat messages rendered as ``role: content`` lines (null when there are no messages)."""
    return (
        pl.col("messages")
        .list.eval(pl.format("{}: {}", pl.element().struct.field("role"), pl.element().struct.field("content")))
        .list.join("\n")
    )


def _normalized_content(columns: list[str], cfg: ExactDedupConfig) -> pl.Expr:
    expr = content_expr(columns)
    if cfg.collapse_whitespace:
        expr = expr.str.replace_all(r"\s+", " ").str.strip_chars()
    if cfg.lowercase:
        expr = expr.str.to_lowercase()
    return expr


def content_hashes(docs: pl.DataFrame, cfg: ExactDedupConfig) -> pl.Series:
    """XXH3-128 (hex) of each document's normalized content: the exact-duplicate cluster key."""
    return xxh128_hex(docs.select(_normalized_content(docs.columns, cfg))["_content"]).alias("content_hash")


def hash_words(content_hash: pl.Expr) -> list[pl.Expr]:
    """The high and low 64-bit words of a 32-character hex XXH3-128 hash (the index stores these)."""
    return [content_hash.str.slice(0, 16).str.to_integer(base=16, dtype=pl.UInt64).alias("hash_hi"),
            content_hash.str.slice(16, 16).str.to_integer(base=16, dtype=pl.UInt64).alias("hash_lo")]


# Columns the exact stage reads from its input: content and the keep-rule columns, never anything else.
_INPUT_COLUMNS = ["doc_id", "text", "messages", "drop", "drop_order", "quality_score", "license"]
_SPILL_SCHEMA = {"doc_id": pl.String, "content_hash": pl.String, "hash_hi": pl.UInt64, "hash_lo": pl.UInt64,
                 "drop": pl.String, "drop_order": pl.Int64, "quality_score": pl.Float64, "license": pl.String}

# Copies of the drop's contents: the drop's live documents and the in-play index entries (not of the drop, not a
# document of the drop, first row per doc_id) whose content some live document has, only for contents held by
# two or more of them. Everything else never leaves DuckDB.
_EXACT_POOL_SQL = """
CREATE TEMP TABLE live AS SELECT * FROM read_parquet($here) ANTI JOIN blocked_ids USING (doc_id);
CREATE TEMP TABLE drop_names AS SELECT DISTINCT drop FROM read_parquet($here) WHERE drop IS NOT NULL;
CREATE TEMP TABLE drop_ids AS SELECT doc_id FROM read_parquet($here);
CREATE TEMP TABLE index_copies AS
    SELECT i.* FROM {index} AS i
    SEMI JOIN live AS l ON i.hash_hi = l.hash_hi AND i.hash_lo = l.hash_lo
    WHERE i.drop NOT IN (SELECT drop FROM drop_names)
      AND i.doc_id NOT IN (SELECT doc_id FROM drop_ids)
    QUALIFY row_number() OVER (PARTITION BY i.doc_id ORDER BY i._part, i._row) = 1;
CREATE TEMP TABLE shared AS
    SELECT hash_hi, hash_lo FROM (SELECT hash_hi, hash_lo FROM live UNION ALL SELECT hash_hi, hash_lo FROM index_copies)
    GROUP BY ALL HAVING count(*) > 1;
"""
_INDEX_IN_PLAY_SQL = """
SELECT count(DISTINCT doc_id) FROM {index} AS i
WHERE i.drop NOT IN (SELECT drop FROM drop_names) AND i.doc_id NOT IN (SELECT doc_id FROM drop_ids)
"""


def exact_duplicates(
    docs: pl.DataFrame | DropInput, index: pl.DataFrame | Sequence[IndexPart] | None, cfg: ExactDedupConfig,
    blocked: pl.DataFrame | None = None, ooc: OutOfCore | None = None,
) -> tuple[StageResult, pl.DataFrame | Iterator[pl.DataFrame]]:
    """Record exact-duplicate clusters of ``docs`` (within the drop and with the index of other drops); drop only
    documents whose content was taken down.

    ``docs``: the drop (a DropInput, or a frame) with ``doc_id``, ``text`` (or ``messages``), ``drop``,
    ``drop_order`` and optionally ``quality_score`` and ``license``. ``index``: the other drops' entries as
    :class:`IndexPart` files queried in place (entries of the drops in ``docs`` are ignored), either index format.
    ``blocked``: (``doc_id``, ``content_hash``) of taken-down documents. ``ooc``: batch size, DuckDB memory limit
    and spill folder.

    The drop is read in batches; each batch's content hashes and keep-rule columns are spilled to Parquet and
    DuckDB finds the contents held more than once (this drop's live documents and the index files, joined in
    place under the memory limit). Only the rows of those contents are brought into memory to be ordered by the
    keep rule.

    No copy is dropped as a duplicate here: which copy ships is the release's choice (per cluster, the best copy
    its license profile allows, see :func:`exact_representatives`). Every document whose content has another copy
    gets a ``flag`` row ``exact_dedup.duplicate`` (``cluster_id`` the content hash, ``duplicate_of`` the copy the
    keep rule prefers among the others). A document with the content of a taken-down document is dropped with
    ``takedown.blocked``. Returns the StageResult (``kept``: an iterator of the input's batches gaining
    ``content_hash``, in row order) and the index entries (EXACT_INDEX_SCHEMA) of the documents that go on, sorted
    by hash: an iterator of frames of at most ``batch_rows`` entries read from a spill file (removed once read),
    a frame when ``docs`` is a frame.
    """
    ooc = ooc or OutOfCore()
    source = docs if not isinstance(docs, pl.DataFrame) else FrameDropInput(docs, batch_rows=ooc.batch_rows)
    parts = index_parts(index)
    if blocked is None or blocked.is_empty():
        blocked = pl.DataFrame(schema={"doc_id": pl.String, "content_hash": pl.String})
    taken_down = (
        blocked.select(pl.col("content_hash").cast(pl.String), pl.col("doc_id").cast(pl.String).alias("_taken_down"))
        .drop_nulls("content_hash").sort("_taken_down").unique("content_hash", keep="first", maintain_order=True)
    )
    with spill_folder(ooc, "exact-dedup") as folder, duckdb_connection(ooc, folder / "duckdb") as connection:
        here = SpillWriter(folder / "here.parquet", _SPILL_SCHEMA)
        documents_in = 0
        for batch in source.batches(_INPUT_COLUMNS):
            documents_in += batch.height
            hashed = batch.select(pl.col("doc_id").cast(pl.String), content_hashes(batch, cfg))
            here.write(hashed.with_columns(
                *hash_words(pl.col("content_hash")),
                *[(batch[c] if c in batch.columns else pl.lit(None)).alias(c)
                  for c in ("drop", "drop_order", "quality_score", "license")]))
        here_path = str(here.close())
        params = {"here": here_path}
        connection.register("taken_down", taken_down.to_arrow())
        blocked_rows = pl.from_arrow(connection.sql(
            "SELECT h.doc_id, h.content_hash, t._taken_down FROM read_parquet($here) h "
            "JOIN taken_down t USING (content_hash) ORDER BY h.doc_id", params=params).to_arrow_table())
        blocked_verdicts = blocked_rows.select(
            "doc_id",
            pl.lit(DROP).alias("verdict"),
            pl.lit(RULE_BLOCKED).alias("rule"),
            pl.lit(1.0).alias("value"),
            pl.lit(">= 1").alias("threshold"),
            pl.format("same normalized content ({}) as taken-down document {}", "content_hash", "_taken_down")
            .alias("detail"),
            pl.col("_taken_down").alias("duplicate_of"),
        )
        connection.register("blocked_ids", blocked_verdicts.select("doc_id").to_arrow())
        index_sql = exact_index_sql(connection, parts)
        for statement in _EXACT_POOL_SQL.format(index=index_sql).split(";"):
            if statement.strip():
                connection.execute(statement, {k: v for k, v in params.items() if f"${k}" in statement}).fetchall()
        index_in_play = connection.execute(_INDEX_IN_PLAY_SQL.format(index=index_sql)).fetchall()[0][0]
        documents_kept = connection.execute("SELECT count(*) FROM live").fetchall()[0][0]
        pool_here = pl.from_arrow(connection.sql(
            "SELECT * FROM live SEMI JOIN shared USING (hash_hi, hash_lo)").to_arrow_table())
        pool_index = pl.from_arrow(connection.sql(
            "SELECT doc_id, drop, drop_order, lower(printf('%016x%016x', hash_hi, hash_lo)) AS content_hash "
            "FROM index_copies SEMI JOIN shared USING (hash_hi, hash_lo)").to_arrow_table())
        # The entries grow with the drop: DuckDB writes them sorted to a spill file, read back batch by batch.
        entries_folder = new_spill_folder(ooc, "exact-entries")
        try:
            connection.execute(f"COPY (SELECT hash_hi, hash_lo, doc_id FROM live ORDER BY hash_hi, hash_lo, doc_id) "
                               f"TO {sql_path(entries_folder / 'entries.parquet')} (FORMAT parquet)").fetchall()
        except BaseException:
            shutil.rmtree(entries_folder, ignore_errors=True)
            raise
    entries = frames_then_remove(entries_folder / "entries.parquet", EXACT_INDEX_SCHEMA, ooc.batch_rows,
                                 entries_folder)

    # Every copy of each shared content, this drop's and other drops', best first by the keep rule.
    pool = sort_by_keep_rule(
        pl.concat([pool_here.select(keep_columns(pool_here, "drop", "content_hash"))
                   .with_columns(pl.lit(True).alias("_here")),
                   pool_index.with_columns(pl.lit(False).alias("_here"))], how="diagonal_relaxed"),
        cfg,
    ).with_columns(
        pl.len().over("content_hash").alias("_copies"),
        pl.col("doc_id").first().over("content_hash").alias("_first"),
        pl.col("doc_id").head(2).last().over("content_hash").alias("_second"),
        pl.col("drop").first().over("content_hash").alias("_first_drop"),
        pl.col("drop").head(2).last().over("content_hash").alias("_second_drop"),
        (~pl.col("_here")).any().over("content_hash").alias("_in_other_drop"),
    )
    clustered = pool.filter(pl.col("_here") & (pl.col("_copies") > 1)).with_columns(
        pl.when(pl.col("doc_id") == pl.col("_first")).then("_second").otherwise("_first").alias("_other"),
        pl.when(pl.col("doc_id") == pl.col("_first")).then("_second_drop").otherwise("_first_drop")
        .alias("_other_drop"),
    )
    flags = clustered.select(
        "doc_id",
        pl.lit(FLAG).alias("verdict"),
        pl.lit(RULE_DUPLICATE).alias("rule"),
        pl.lit(1.0).alias("value"),
        pl.lit(">= 1").alias("threshold"),
        pl.format("same normalized content ({}) as {} other copies, first by the keep rule {} in drop {}; each "
                  "release ships the best copy its license profile allows", "content_hash",
                  pl.col("_copies") - 1, "_other", "_other_drop").alias("detail"),
        pl.col("_other").alias("duplicate_of"),
        pl.col("content_hash").alias("cluster_id"),
    )

    verdicts = pl.concat([verdict_frame(blocked_verdicts), verdict_frame(flags)]).sort("doc_id")
    groups = clustered.unique("content_hash")
    metrics = {
        "documents_in": documents_in,
        "documents_with_copies": flags.height,
        "with_copies_in_other_drops": int(clustered["_in_other_drop"].sum()),
        "duplicate_groups": groups.height,
        "largest_duplicate_group": int(groups["_copies"].max() or 0),
        "blocked_by_takedown": blocked_verdicts.height,
        "documents_kept": documents_kept,
        "index_entries_in": index_in_play,
    }
    kept = _kept_batches(source, cfg, blocked_verdicts["doc_id"])
    if isinstance(docs, pl.DataFrame):  # a frame in, a frame out
        kept = pl.concat(list(kept))
        entries = pl.concat(list(entries) or [pl.DataFrame(schema=EXACT_INDEX_SCHEMA)])
    return StageResult(kept=kept, verdicts=verdicts, metrics=metrics), entries


def _kept_batches(source: DropInput, cfg: ExactDedupConfig, blocked_ids: pl.Series) -> Iterator[pl.DataFrame]:
    """The input, batch by batch, with its ``content_hash`` (recomputed: cheaper than a spilled copy's I/O), minus
    the blocked documents."""
    blocked_ids = blocked_ids.implode()
    for batch in source.batches():
        yield batch.with_columns(content_hashes(batch, cfg)).filter(~pl.col("doc_id").is_in(blocked_ids))


def exact_representatives(docs: pl.DataFrame, cfg: _HasKeepRule) -> pl.DataFrame:
    """The release's choice among exact copies: per ``content_hash``, the first document in keep-rule order
    represents the cluster. ``docs`` holds only copies the release may ship (license already checked), with
    ``doc_id``, ``content_hash`` and the keep-rule columns. Returns one row per other copy:
    (``doc_id``, ``duplicate_of`` = the representative, ``cluster_id`` = the content hash, ``copies``)."""
    ranked = sort_by_keep_rule(docs.select(keep_columns(docs, "content_hash")), cfg)
    return ranked.select(
        "doc_id",
        pl.col("doc_id").first().over("content_hash").alias("duplicate_of"),
        pl.col("content_hash").alias("cluster_id"),
        pl.len().over("content_hash").alias("copies"),
    ).filter(pl.col("doc_id") != pl.col("duplicate_of"))
