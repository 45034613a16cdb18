"""Takedowns: remove documents (a whole drop, or a list of doc_ids) from every future release and block their
content, and record a tombstone for each in the ledger so `curate explain` can say what happened and when.

The takedown list keeps each document's content hash and near-dup band keys (moved out of the drop's dedup
indexes; lists written before the compact index format also hold the full signature), so the same content
arriving again, exactly or nearly, in a drop curated later is dropped with
``takedown.blocked``. Copies that an earlier release left out as duplicates of a taken-down document are chosen
again by the next release, which picks representatives from the curated documents that remain."""

from __future__ import annotations

import time

import polars as pl

from curation_platform.errors import CurationError
from curation_platform.hashing import words_hex
from curation_platform.ledger import LEDGER_SCHEMA
from curation_platform.records import DROP
from curation_platform.workspace import Workspace, file_lock, write_parquet_atomic

TAKEDOWN_SCHEMA = {
    "doc_id": pl.String, "drop": pl.String, "reason": pl.String, "taken_down_at": pl.Float64,
    # What blocks the content: exact-dedup content hash and the near-dedup index entry (null if never indexed).
    # ``signature`` is only set in lists written before the compact index (band keys suffice to find candidates;
    # the verification reads the taken-down document's content).
    "content_hash": pl.String, "drop_order": pl.Int64, "band_keys": pl.List(pl.UInt64),
    "signature": pl.List(pl.UInt32), "params": pl.String,
}
INDEXES = ("exact", "near")


def read_takedowns(ws: Workspace) -> pl.DataFrame:
    """The takedown list with TAKEDOWN_SCHEMA (lists written before a column existed read it as null)."""
    if not ws.takedowns_path.exists():
        return pl.DataFrame(schema=TAKEDOWN_SCHEMA)
    return _conform(pl.read_parquet(ws.takedowns_path))


def _conform(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with exactly TAKEDOWN_SCHEMA's columns (missing ones null)."""
    return frame.select([(pl.col(c) if c in frame.columns else pl.lit(None)).cast(t).alias(c)
                         for c, t in TAKEDOWN_SCHEMA.items()])


def _split_indexes(ws: Workspace, doc_ids: pl.DataFrame) -> tuple[dict[str, pl.DataFrame], list]:
    """One pass over every index file: per index, the rows of ``doc_ids`` (first per doc_id); and the files that
    hold any of them, with the rows to keep (written only after the takedown list)."""
    hits: dict[str, pl.DataFrame] = {}
    rewrites = []
    for index in INDEXES:
        found = []
        for path in sorted((ws.lake / "index" / index).glob("*.parquet")):
            frame = pl.read_parquet(path)
            hit = frame.join(doc_ids, on="doc_id", how="semi")
            if hit.height:
                found.append(hit)
                rewrites.append((path, frame.join(doc_ids, on="doc_id", how="anti")))
        hits[index] = (pl.concat([_readable(index, f) for f in found], how="diagonal_relaxed")
                       .unique("doc_id", keep="first", maintain_order=True) if found else pl.DataFrame())
    return hits, rewrites


def _readable(index: str, hits: pl.DataFrame) -> pl.DataFrame:
    """Index rows in the takedown list's terms, from either index format: the exact hash as hex, near params as
    text (the compact format keeps the hash as two 64-bit words and params as a category)."""
    if index == "exact" and "hash_hi" in hits.columns:
        hits = hits.with_columns(words_hex(hits["hash_hi"], hits["hash_lo"]))
    if "params" in hits.columns:
        hits = hits.with_columns(pl.col("params").cast(pl.String))
    return hits


def _known_documents(ws: Workspace) -> pl.DataFrame:
    return ws.read_stage_columns("raw_documents", ["doc_id", "drop"])


def takedown(ws: Workspace, *, drop: str | None = None, doc_ids: list[str] | None = None, reason: str) -> int:
    """Take down every document of ``drop`` and/or the listed ``doc_ids``. Returns how many documents."""
    known = _known_documents(ws)
    if drop is not None:
        ws.drop(drop)  # raises a clear error for an unknown drop
    in_drop = (pl.col("drop") == drop) if drop is not None else pl.lit(False)
    listed = pl.col("doc_id").is_in(pl.Series(doc_ids or [], dtype=pl.String).implode())
    selected = known.filter(in_drop | listed)
    unknown = sorted(set(doc_ids or []) - set(selected["doc_id"].to_list()))
    if unknown:
        raise CurationError(f"unknown doc_id(s): {', '.join(unknown[:5])}; see `curate ledger export` for ids")
    if selected.is_empty():
        return 0
    now = time.time()
    entries = selected.with_columns(pl.lit(reason).alias("reason"), pl.lit(now).alias("taken_down_at"))
    with file_lock(ws.root / "registry" / ".lock"):
        hits, rewrites = _split_indexes(ws, selected.select("doc_id"))
        exact, near = hits["exact"], hits["near"]
        if not exact.is_empty():
            entries = entries.join(exact.select("doc_id", "content_hash"), on="doc_id", how="left")
        if not near.is_empty():
            near_columns = [c for c in ("doc_id", "band_keys", "signature", "params") if c in near.columns]
            entries = entries.join(near.select(near_columns), on="doc_id", how="left")
            # The drop's order (the compact index does not repeat it per row) ranks the entry like its drop did.
            orders = pl.DataFrame([(d.name, d.order) for d in ws.drops()], schema={"drop": pl.String,
                                  "drop_order": pl.Int64}, orient="row")
            entries = entries.join(orders, on="drop", how="left")
        entries = _conform(entries)
        merged = pl.concat([read_takedowns(ws), entries]).unique("doc_id", keep="first", maintain_order=True)
        write_parquet_atomic(merged, ws.takedowns_path)
        for path, kept in rewrites:
            write_parquet_atomic(kept, path)
        for (drop_name,), group in entries.group_by("drop"):
            path = ws.ledger_path("takedown", drop_name)
            old = pl.read_parquet(path) if path.exists() else pl.DataFrame(schema=LEDGER_SCHEMA)
            tombstones = group.select(
                pl.col("drop"), pl.lit("takedown").alias("stage"), "doc_id", pl.lit(DROP).alias("verdict"),
                pl.lit("takedown").alias("rule"), pl.col("taken_down_at").alias("value"),
                pl.lit(None, dtype=pl.String).alias("threshold"), pl.col("reason").alias("detail"),
                pl.lit(None, dtype=pl.String).alias("duplicate_of"), pl.lit(None, dtype=pl.String).alias("cluster_id"),
                pl.lit("takedown").alias("run_id"),
                pl.lit(None, dtype=pl.String).alias("config_hash"),
            )
            write_parquet_atomic(pl.concat([old, tombstones]).unique("doc_id", keep="first", maintain_order=True),
                                 path)
    return selected.height
