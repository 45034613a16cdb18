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

from typing import Annotated, Literal, Protocol

import polars as pl
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from curation_platform.errors import CurationError
from curation_platform.hashing import xxh128_hex
from curation_platform.licenses import license_restrictiveness
from curation_platform.records import DROP, FLAG, StageResult, split_by_verdicts, verdict_frame

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

# One index entry per kept document; the orchestration persists these as Parquet per drop.
EXACT_INDEX_SCHEMA: dict[str, pl.DataType] = {
    "content_hash": pl.String,
    "doc_id": pl.String,
    "drop": pl.String,
    "drop_order": pl.Int64,
}


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


def _check_index(index: pl.DataFrame, schema: dict[str, pl.DataType], stage: str) -> pl.DataFrame:
    missing = [c for c in schema if c not in index.columns]
    if missing:
        raise DedupIndexError(
            f"{stage} index is missing columns {missing}; rebuild the index from the persisted entries of earlier "
            f"drops (expected columns: {list(schema)})"
        )
    return index.select([pl.col(c).cast(t) for c, t in schema.items()])


def content_hashes(docs: pl.DataFrame, cfg: ExactDedupConfig) -> pl.Series:
    """XXH3-128 (hex) of each document's normalized content: the exact-duplicate cluster key."""
    return xxh128_hex(docs.select(_normalized_content(docs.columns, cfg))["_content"]).alias("content_hash")


def exact_duplicates(
    docs: pl.DataFrame, index: pl.DataFrame, cfg: ExactDedupConfig, blocked: pl.DataFrame | None = None
) -> tuple[StageResult, pl.DataFrame]:
    """Record exact-duplicate clusters of ``docs`` (within the drop and with the index of other drops); drop only
    documents whose content was taken down.

    ``docs``: records with ``doc_id``, ``text`` (or ``messages``), ``drop``, ``drop_order`` and optionally
    ``quality_score`` and ``license``. ``index``: EXACT_INDEX_SCHEMA entries of other drops (entries of the drops
    in ``docs`` are ignored). ``blocked``: (``doc_id``, ``content_hash``) of taken-down documents.

    No copy is dropped as a duplicate here: which copy ships is the release's choice (per cluster, the best copy
    its license profile allows, see :func:`exact_representatives`). Every document whose content has another copy
    gets a ``flag`` row ``exact_dedup.duplicate`` (``cluster_id`` the content hash, ``duplicate_of`` the copy the
    keep rule prefers among the others). A document with the content of a taken-down document is dropped with
    ``takedown.blocked``. Returns the StageResult (documents gain ``content_hash``) and the index entries of the
    documents that go on, to persist.
    """
    index = _check_index(index, EXACT_INDEX_SCHEMA, "exact dedup")
    # A document is never its own duplicate (the orchestration may hand back entries of the drop being re-run).
    index = index.join(docs.select(pl.col("doc_id").cast(pl.String)), on="doc_id", how="anti").filter(
        ~pl.col("drop").is_in(docs["drop"].cast(pl.String).unique().implode())
    ).unique("doc_id", keep="first", maintain_order=True)
    hashed = docs.with_columns(content_hashes(docs, cfg))

    if blocked is None or blocked.is_empty():
        blocked = pl.DataFrame(schema={"doc_id": pl.String, "content_hash": pl.String})
    taken_down = (
        blocked.select(pl.col("content_hash").cast(pl.String), pl.col("doc_id").cast(pl.String).alias("_taken_down"))
        .drop_nulls("content_hash").sort("_taken_down").unique("content_hash", keep="first", maintain_order=True)
    )
    blocked_verdicts = hashed.select("doc_id", "content_hash").join(taken_down, on="content_hash", how="inner").select(
        "doc_id",
        pl.lit(DROP).alias("verdict"),
        pl.lit(RULE_BLOCKED).alias("rule"),
        pl.lit(1.0).alias("value"),
        pl.lit(">= 1").alias("threshold"),
        pl.format("same normalized content ({}) as taken-down document {}", "content_hash", "_taken_down")
        .alias("detail"),
        pl.col("_taken_down").alias("duplicate_of"),
    )
    live = hashed.join(blocked_verdicts.select("doc_id"), on="doc_id", how="anti", maintain_order="left")

    # Every copy of each content, this drop's and other drops', best first by the keep rule.
    pool = sort_by_keep_rule(
        pl.concat([live.select(keep_columns(live, "drop", "content_hash")).with_columns(pl.lit(True).alias("_here")),
                   index.with_columns(pl.lit(False).alias("_here"))], how="diagonal_relaxed"),
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
        "documents_in": docs.height,
        "documents_with_copies": flags.height,
        "with_copies_in_other_drops": int(clustered["_in_other_drop"].sum()),
        "duplicate_groups": groups.height,
        "largest_duplicate_group": int(groups["_copies"].max() or 0),
        "blocked_by_takedown": blocked_verdicts.height,
        "documents_kept": live.height,
        "index_entries_in": index.height,
    }
    result = split_by_verdicts(hashed, verdicts, metrics)
    new_entries = live.select([pl.col(c).cast(t) for c, t in EXACT_INDEX_SCHEMA.items()]).sort(
        "content_hash", "doc_id")
    return result, new_entries


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
