"""Exact deduplication of normalized content against a persistent index of earlier drops.

Each document's content (its text, or its rendered messages for chat records) is normalized cheaply (whitespace
collapsed, optionally lower-cased; NFC is done upstream) and hashed with XXH3-128. A document whose hash is in the
index of earlier drops is dropped in favour of the indexed document; within the drop, documents sharing a hash are
ranked by the keep rule and all but the winner are dropped. The kept documents' hashes are the new index entries.

The keep rule lives here (:func:`keep_order`) and is shared with near-duplicate removal
(:mod:`curation_platform.ops.dedup_minhash`), so both stages pick the same survivor.
"""

from __future__ import annotations

from typing import Annotated, Literal, Protocol

import polars as pl
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from curation_platform.errors import CurationError
from curation_platform.hashing import xxh128_hex
from curation_platform.records import DROP, StageResult, split_by_verdicts

RULE_DUPLICATE = "exact_dedup.duplicate"

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


def license_rank(spdx: pl.Expr) -> pl.Expr:
    """Permissiveness rank of an SPDX id or expression, lower is more permissive.

    0 public domain / CC0, 1 MIT / BSD / Apache / ISC, 2 CC-BY, 3 CC-BY-SA / share-alike, 4 non-commercial,
    no-derivatives, copyleft, unknown or null. Patterns are tested from most to least restrictive, so an SPDX
    expression such as ``MIT AND CC-BY-SA-4.0`` ranks as its most restrictive part (the conservative reading).
    """
    upper = spdx.str.to_uppercase()
    return (
        pl.when(upper.is_null() | upper.str.contains(r"\b(NC|ND)\b"))
        .then(pl.lit(4))
        # Copyleft and unknown references rank as restrictive even beside a permissive id in an expression.
        .when(upper.str.contains(r"\b(A?GPL|LGPL|MPL|EPL|EUPL|CDDL|OSL|CPAL|SSPL|LICENSEREF)"))
        .then(pl.lit(4))
        .when(upper.str.contains(r"\bCC-BY-SA\b|\bODBL\b"))
        .then(pl.lit(3))
        .when(upper.str.contains(r"\bCC-BY\b|\bODC-BY\b"))
        .then(pl.lit(2))
        .when(upper.str.contains(r"\b(MIT|BSD|0BSD|APACHE|ISC|ZLIB|BSL)\b"))
        .then(pl.lit(1))
        .when(upper.str.contains(r"\b(CC0|CC-PDDC|PDDL|UNLICENSE|PUBLIC-DOMAIN)\b"))
        .then(pl.lit(0))
        .otherwise(pl.lit(4))
        .cast(pl.Int32)
    )


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
            keys.append(license_rank(pl.col("license") if "license" in columns else pl.lit(None, dtype=pl.String)))
        else:
            keys.append(pl.col("doc_id"))
    return [k.alias(f"_keep_key_{i}") for i, k in enumerate(keys)]


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


def exact_duplicates(
    docs: pl.DataFrame, index: pl.DataFrame, cfg: ExactDedupConfig
) -> tuple[StageResult, pl.DataFrame]:
    """Drop documents whose normalized content was seen in an earlier drop or earlier in this drop.

    ``docs``: records with ``doc_id``, ``text`` (or ``messages``), ``drop``, ``drop_order`` and optionally
    ``quality_score`` and ``license``. ``index``: EXACT_INDEX_SCHEMA entries of every earlier drop.
    Returns the StageResult (kept documents gain ``content_hash``; dropped ones get ``exact_dedup.duplicate``
    verdicts whose ``duplicate_of`` is the indexed or winning document) and the index entries of the kept
    documents, to persist for later drops.
    """
    index = _check_index(index, EXACT_INDEX_SCHEMA, "exact dedup")
    # A document is never its own duplicate (the orchestration may hand back entries of the drop being re-run).
    index = index.join(docs.select(pl.col("doc_id").cast(pl.String)), on="doc_id", how="anti")
    hashes = xxh128_hex(docs.select(_normalized_content(docs.columns, cfg))["_content"]).alias("content_hash")
    hashed = docs.with_columns(hashes)

    # An index built by several runs may hold a hash twice; the earliest entry is the one to point at.
    seen = (
        index.sort("drop_order", "doc_id", nulls_last=True)
        .unique("content_hash", keep="first", maintain_order=True)
        .select("content_hash", pl.col("doc_id").alias("_index_doc"), pl.col("drop").alias("_index_drop"))
    )
    matched = hashed.select("doc_id", "content_hash").join(seen, on="content_hash", how="inner")
    cross_drop = matched.select(
        "doc_id",
        pl.lit(DROP).alias("verdict"),
        pl.lit(RULE_DUPLICATE).alias("rule"),
        pl.lit(1.0).alias("value"),
        pl.lit(">= 1").alias("threshold"),
        pl.format("same normalized content ({}) as {} in earlier drop {}", "content_hash", "_index_doc",
                  "_index_drop").alias("detail"),
        pl.col("_index_doc").alias("duplicate_of"),
    )

    fresh = sort_by_keep_rule(hashed.join(matched.select("doc_id"), on="doc_id", how="anti"), cfg)
    ranked = fresh.select(
        "doc_id",
        "content_hash",
        pl.col("doc_id").first().over("content_hash").alias("_winner"),
        pl.len().over("content_hash").alias("_group_size"),
    )
    within_drop = ranked.filter(pl.col("doc_id") != pl.col("_winner")).select(
        "doc_id",
        pl.lit(DROP).alias("verdict"),
        pl.lit(RULE_DUPLICATE).alias("rule"),
        pl.lit(1.0).alias("value"),
        pl.lit(">= 1").alias("threshold"),
        pl.format("same normalized content ({}) as {}, which the keep rule prefers among {} copies in this drop",
                  "content_hash", "_winner", "_group_size").alias("detail"),
        pl.col("_winner").alias("duplicate_of"),
    )

    verdicts = pl.concat([cross_drop, within_drop]).sort("doc_id")
    group_sizes = ranked.filter(pl.col("_group_size") > 1).unique("content_hash")["_group_size"]
    metrics = {
        "documents_in": docs.height,
        "duplicates_removed": verdicts.height,
        "removed_cross_drop": cross_drop.height,
        "removed_within_drop": within_drop.height,
        "documents_kept": docs.height - verdicts.height,
        "duplicate_groups_in_drop": int(group_sizes.len()),
        "largest_duplicate_group": int(group_sizes.max() or 0),
        "index_entries_in": index.height,
    }
    result = split_by_verdicts(hashed, verdicts, metrics)
    new_entries = result.kept.select([pl.col(c).cast(t) for c, t in EXACT_INDEX_SCHEMA.items()]).sort("content_hash")
    return result, new_entries
