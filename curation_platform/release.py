"""Releases: select curated documents under a license profile, mixture and token budget, cut deterministic
shards, and write the data card. Publishing (rename + DVC) lives in ``versioning``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from tokenizers import Tokenizer

from curation_platform import __version__
from curation_platform import card as card_parts
from curation_platform.config import CurationConfig, ReleaseConfig
from curation_platform.formatting import FormattingConfig, formatting_card, training_text
from curation_platform.ledger import LEDGER_SCHEMA
from curation_platform.licenses import attribution_required, license_breakdown, release_license_verdicts
from curation_platform.ops import flagged_words
from curation_platform.ops.dedup_exact import exact_representatives
from curation_platform.ops.dedup_minhash import RULE_DUPLICATE as NEAR_PAIR_RULE
from curation_platform.ops.dedup_minhash import near_representatives
from curation_platform.ops.verify_code import verification_summary
from curation_platform.records import DROP, FLAG, StageResult, split_by_verdicts, verdict_frame
from curation_platform.selection import select, shard_plan, split_assignment
from curation_platform.storage import child_folders, is_uri, move_tree, remove_tree
from curation_platform.workspace import (Workspace, resolve_resource, write_bytes_atomic, write_parquet_atomic,
                                        write_text_atomic)

SHARD_COLUMNS = [
    "doc_id", "source_id", "drop", "source", "license", "kind", "language", "text", "messages",
    "token_count", "quality_score", "domain", "epoch", "provenance", "url", "fetch_date", "warc_record_id",
]
# Columns the selection decides (not in the curated stage output).
SELECTION_COLUMNS = ["token_count", "domain", "epoch"]


def code_version() -> str:
    """Package version plus the git commit of the checkout it runs from, when there is one."""
    import subprocess

    proc = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent,
                          capture_output=True, text=True)
    return f"{__version__}+g{proc.stdout.strip()}" if proc.returncode == 0 and proc.stdout.strip() else __version__


@functools.lru_cache(maxsize=2)
def _tokenizer(tokenizer_path: str) -> Tokenizer:
    """The tokenizer, loaded once per process (loading tokenizer.json takes about 0.2 s)."""
    return Tokenizer.from_file(str(resolve_resource(tokenizer_path, "release.tokenizer")))


def count_tokens(texts: pl.Series, tokenizer_path: str) -> pl.Series:
    """Token count per text with the configured tokenizer (Rust, batched, parallel)."""
    encodings = _tokenizer(tokenizer_path).encode_batch_fast(texts.fill_null("").to_list())
    return pl.Series("token_count", [len(e.ids) for e in encodings], dtype=pl.Int64)


# What selection needs to know about every curated document: no text, so a release of many drops fits in memory.
META_COLUMNS = ["doc_id", "drop", "source", "license", "kind", "language", "quality_score", "provenance",
                "content_hash"]
RULE_EXACT, RULE_NEAR, RULE_REEVALUATED = "dedup.exact", "dedup.near", "dedup.reevaluated"
PAIR_SCHEMA = {"doc_id": pl.String, "duplicate_of": pl.String, "value": pl.Float64}


def _token_counts(ws: Workspace, final_stage: str, drop: str, tokenizer: str,
                  formatting: FormattingConfig | None = None) -> pl.DataFrame:
    """(doc_id, token_count) of a drop's curated documents (chat documents as the template renders them, with
    ``formatting``), cached until the drop is curated again or the tokenizer or template changes."""
    cache, source = ws.cache_path("tokens", drop), ws.stage_path(final_stage, drop)
    key = tokenizer if formatting is None else f"{tokenizer}|{formatting.model_dump_json()}"
    if cache.exists() and cache.stat().st_mtime_ns >= source.stat().st_mtime_ns:
        cached = pl.read_parquet(cache)
        if cached.height == 0 or cached["tokenizer"][0] == key:
            return cached.drop("tokenizer")
    view = ws.scan_stage(final_stage, drop)
    schema = view.collect_schema()
    texts = view.select([c for c in ("doc_id", "text", "messages", "kind") if c in schema]).collect()
    text = texts["text"] if formatting is None else training_text(texts, formatting)
    counts = texts.select("doc_id", count_tokens(text, tokenizer), pl.lit(key).alias("tokenizer"))
    write_parquet_atomic(counts, cache)
    return counts.drop("tokenizer")


def curated_metadata(ws: Workspace, final_stage: str, drops: list[str], tokenizer: str,
                     extra_columns: tuple[str, ...] = (), formatting: FormattingConfig | None = None) -> pl.DataFrame:
    """Selection columns (plus ``extra_columns``, e.g. a curriculum signal) and token counts of every curated
    document of the given (current) drops, in drop order, minus takedowns. Reads no text beyond counting tokens
    once per drop (of the training text: chat documents rendered with ``formatting``'s template when given)."""
    frames = []
    for entry in ws.drops():
        if entry.name not in drops:
            continue
        view = ws.scan_stage(final_stage, entry.name)
        schema = view.collect_schema()
        columns = [c for c in dict.fromkeys([*META_COLUMNS, *extra_columns]) if c in schema]
        frames.append(
            view.select(columns).collect()
            .join(_token_counts(ws, final_stage, entry.name, tokenizer, formatting), on="doc_id", how="left")
            .with_columns(pl.lit(entry.order, dtype=pl.Int64).alias("drop_order"))
        )
    if not frames:
        return pl.DataFrame()
    docs = pl.concat(frames, how="diagonal_relaxed")
    if ws.takedowns_path.exists():
        docs = docs.join(pl.read_parquet(ws.takedowns_path).select("doc_id"), on="doc_id", how="anti")
    return docs


def near_pairs(ws: Workspace, drops: list[str]) -> pl.DataFrame:
    """Verified near-duplicate pairs (doc_id, duplicate_of, exact Jaccard) that the near-dedup stage recorded for
    the given (curated) drops. A pair with a document outside the release's documents is ignored later."""
    paths = [p for drop in drops if (p := ws.ledger_path("near_deduped", drop)).exists()]
    if not paths:
        return pl.DataFrame(schema=PAIR_SCHEMA)
    return (pl.scan_parquet(paths, missing_columns="insert", extra_columns="ignore")
            .filter((pl.col("rule") == NEAR_PAIR_RULE) & (pl.col("verdict") == FLAG))
            .select(list(PAIR_SCHEMA)).collect())


def _why(rep: str, profile: str, keep_rule: list[str]) -> pl.Expr:
    return pl.format(
        "that copy represents the cluster in release {}: the best copy profile {} allows (license {}), by keep "
        "rule {}",
        pl.lit(rep), pl.lit(profile), pl.col("_rep_license").fill_null("unknown"),
        pl.lit(", ".join(keep_rule)),
    )


def dedup_verdicts(
    docs: pl.DataFrame, eligible: pl.DataFrame, pairs: pl.DataFrame, cfg: CurationConfig
) -> pl.DataFrame:
    """Which copy of each duplicate cluster ships. ``docs``: every curated document of the release (metadata);
    ``eligible``: those the license profile allows; ``pairs``: verified near pairs.

    Exact clusters (same ``content_hash``) keep their first eligible copy in keep-rule order (rule
    ``dedup.exact``); then near clusters among those representatives keep copies greedily without chain collapse
    (rule ``dedup.near``, ``value`` the exact Jaccard). A pair recorded on any copy of a content counts for its
    representative, so a cluster is never split by which copy the stage happened to compare."""
    name, profile = cfg.release.name, cfg.release.profile
    rep_info = eligible.select(
        pl.col("doc_id").alias("duplicate_of"), pl.col("license").alias("_rep_license"),
        (pl.col("drop") if "drop" in eligible.columns else pl.lit(None, dtype=pl.String)).alias("_rep_drop"),
    )
    if "content_hash" in eligible.columns:
        exact = exact_representatives(eligible, cfg.exact_dedup)
    else:
        exact = pl.DataFrame(schema={"doc_id": pl.String, "duplicate_of": pl.String, "cluster_id": pl.String,
                                     "copies": pl.UInt32})
    exact_rows = exact.join(rep_info, on="duplicate_of", how="left").select(
        "doc_id",
        pl.lit(DROP).alias("verdict"),
        pl.lit(RULE_EXACT).alias("rule"),
        pl.lit(1.0).alias("value"),
        pl.lit("same content").alias("threshold"),
        pl.format("exact copy of {} (drop {}); ", "duplicate_of", "_rep_drop")
        .add(_why(name, profile, cfg.exact_dedup.keep_rule)).alias("detail"),
        "duplicate_of",
        "cluster_id",
    )
    representatives = eligible.join(exact.select("doc_id"), on="doc_id", how="anti")
    # Every curated document stands for its content's representative (if the profile allows any copy).
    if "content_hash" in docs.columns:
        stands_for = docs.select("doc_id", "content_hash").join(
            representatives.select("content_hash", pl.col("doc_id").alias("_rep")), on="content_hash", how="inner"
        ).select("doc_id", "_rep")
    else:
        stands_for = representatives.select("doc_id", pl.col("doc_id").alias("_rep"))
    mapped = (
        pairs.join(stands_for, on="doc_id", how="inner")
        .join(stands_for.rename({"doc_id": "duplicate_of", "_rep": "_rep_other"}), on="duplicate_of", how="inner")
        .select(pl.col("_rep").alias("doc_id"), pl.col("_rep_other").alias("duplicate_of"), "value")
    )
    near = near_representatives(representatives, mapped, cfg.near_dedup)
    near_rows = near.join(rep_info, on="duplicate_of", how="left").select(
        "doc_id",
        pl.lit(DROP).alias("verdict"),
        pl.lit(RULE_NEAR).alias("rule"),
        "value",
        pl.lit(f">= {cfg.near_dedup.verify_threshold:g}").alias("threshold"),
        pl.format("near-duplicate (exact Jaccard {}) of {} (drop {}){}; ", pl.col("value").round(4),
                  "duplicate_of", "_rep_drop",
                  pl.when(pl.col("cluster_id") != pl.col("duplicate_of"))
                  .then(pl.format(" in cluster {}", "cluster_id")).otherwise(pl.lit("")))
        .add(_why(name, profile, cfg.near_dedup.keep_rule)).alias("detail"),
        "duplicate_of",
        "cluster_id",
    )
    return pl.concat([verdict_frame(exact_rows), verdict_frame(near_rows)]).sort("doc_id")


def _licensed_copy(docs: pl.DataFrame, license_verdicts: pl.DataFrame, eligible: pl.DataFrame,
                   dedup: pl.DataFrame, pairs: pl.DataFrame, release: str) -> pl.DataFrame:
    """License verdicts completed, for a document with an exact or near copy the profile allows, with the copy
    that represents their cluster in ``duplicate_of`` and the detail: the profile lost nothing."""
    if license_verdicts.is_empty():
        return license_verdicts
    # The final representative of every eligible document: its exact cluster's, then that one's near cluster's.
    exact_map = dedup.filter(pl.col("rule") == RULE_EXACT).select("doc_id", pl.col("duplicate_of").alias("_r"))
    near_map = dedup.filter(pl.col("rule") == RULE_NEAR).select(pl.col("doc_id").alias("_r"),
                                                                pl.col("duplicate_of").alias("_final"))
    rep_of = (
        eligible.select("doc_id").join(exact_map, on="doc_id", how="left")
        .with_columns(pl.coalesce("_r", "doc_id").alias("_r"))
        .join(near_map, on="_r", how="left")
        .select("doc_id", pl.coalesce("_final", "_r").alias("_rep"))
    )
    dropped = license_verdicts.select("doc_id")
    candidates = []
    if "content_hash" in docs.columns:
        by_hash = eligible.select("doc_id", "content_hash").join(rep_of, on="doc_id").unique("content_hash")
        candidates.append(
            dropped.join(docs.select("doc_id", "content_hash"), on="doc_id")
            .join(by_hash.select("content_hash", "_rep"), on="content_hash")
            .select("doc_id", "_rep", pl.lit(2.0).alias("_score"), pl.col("content_hash").alias("_cluster"))
        )
    both_ways = pl.concat([pairs.select("doc_id", pl.col("duplicate_of").alias("_other"), "value"),
                           pairs.select(pl.col("duplicate_of").alias("doc_id"), pl.col("doc_id").alias("_other"),
                                        "value")])
    candidates.append(
        dropped.join(both_ways, on="doc_id")
        .join(rep_of.rename({"doc_id": "_other"}), on="_other")
        .select("doc_id", "_rep", pl.col("value").alias("_score"), pl.lit(None, dtype=pl.String).alias("_cluster"))
    )
    best = (pl.concat(candidates).sort("doc_id", "_score", "_rep", descending=[False, True, False])
            .unique("doc_id", keep="first")
            .join(eligible.select(pl.col("doc_id").alias("_rep"), pl.col("license").alias("_rep_license")),
                  on="_rep"))
    completed = license_verdicts.join(best, on="doc_id", how="left", maintain_order="left")
    return verdict_frame(completed.with_columns(
        pl.when(pl.col("_rep").is_not_null())
        .then(pl.format("{}; its copy {} ({}) represents the cluster in release {} instead", "detail", "_rep",
                        "_rep_license", pl.lit(release)))
        .otherwise(pl.col("detail")).alias("detail"),
        pl.coalesce("duplicate_of", "_rep").alias("duplicate_of"),
        pl.coalesce("cluster_id", "_cluster").alias("cluster_id"),
    ))


def select_release(docs: pl.DataFrame, cfg: CurationConfig, pairs: pl.DataFrame | None = None) -> StageResult:
    """License policy for the release profile, then duplicate clusters (per cluster the best copy the profile
    allows), then the train/validation split, quotas, mixture, token budget and synthetic caps
    (``selection.select``). ``pairs``: verified near pairs (see :func:`near_pairs`). Counts tokens when ``docs``
    has no ``token_count`` yet. ``kept`` has one row per selected (document, epoch) with ``domain``, ``split``
    and ``epoch``; ``metrics["selection"]`` is the card's selection report."""
    if "token_count" not in docs.columns:
        docs = docs.with_columns(count_tokens(docs["text"], cfg.release.tokenizer))
    licensed = release_license_verdicts(docs, cfg.licenses, cfg.release.profile)
    pairs = pl.DataFrame(schema=PAIR_SCHEMA) if pairs is None else pairs
    dedup = dedup_verdicts(docs, licensed.kept, pairs, cfg)
    unique = licensed.kept.join(dedup.select("doc_id"), on="doc_id", how="anti", maintain_order="left")
    # Splits by duplicate cluster over every curated document: copies the release leaves out still link clusters.
    splits = split_assignment(docs, pairs, cfg.release.validation_fraction, cfg.release.seed)
    chosen = select(unique, cfg, splits)
    license_rows = _licensed_copy(docs, licensed.verdicts, licensed.kept, dedup, pairs, cfg.release.name)
    verdicts = pl.concat([license_rows, dedup, chosen.verdicts])
    result = split_by_verdicts(docs, verdicts)
    result.kept = chosen.units
    per_rule = pl.concat([dedup, chosen.verdicts]).group_by("rule").len()
    result.metrics = {**licensed.metrics, **{r: n for r, n in per_rule.iter_rows()}, "selection": chosen.report}
    return result


def reevaluated(previous: pl.DataFrame, verdicts: pl.DataFrame, docs: pl.DataFrame, release: str,
                shipped_before: pl.Series | None = None) -> pl.DataFrame:
    """``dedup.reevaluated`` flag rows: curated documents whose duplicate verdict changed since the previous build
    of the release (``previous``, its ledger; ``shipped_before``, the doc_ids it shipped). A copy it left out as a
    duplicate may now represent its cluster (the copy it duplicated left: its drop was removed, re-curated, failed
    its gate, or it was taken down), and a copy it shipped may now be left out (an earlier drop came back)."""
    dedup_rules = [RULE_EXACT, RULE_NEAR]
    before = previous.filter(pl.col("rule").is_in(dedup_rules) & (pl.col("verdict") == DROP)).select(
        "doc_id", pl.col("rule").alias("_old_rule"), pl.col("duplicate_of").alias("_old_of"))
    now = verdicts.filter(pl.col("verdict") == DROP).select(
        "doc_id", pl.col("rule").alias("_new_rule"), pl.col("duplicate_of").alias("_new_of"))
    shipped = pl.Series("doc_id", [] if shipped_before is None else shipped_before, dtype=pl.String)
    was = pl.format("{} of {}, which is no longer its cluster's representative", "_old_rule", "_old_of")
    changed = pl.concat([
        before.join(now, on="doc_id", how="left").filter(
            (pl.col("_old_rule") != pl.col("_new_rule")).fill_null(True)
            | (pl.col("_old_of") != pl.col("_new_of")).fill_null(True)
        ).with_columns(was.alias("_was")),
        now.filter(pl.col("_new_rule").is_in(dedup_rules) & pl.col("doc_id").is_in(shipped.implode())).select(
            "doc_id", pl.lit(None, dtype=pl.String).alias("_old_rule"), pl.lit(None, dtype=pl.String).alias("_old_of"),
            "_new_rule", "_new_of", pl.lit("shipped as its cluster's representative").alias("_was")),
    ]).join(docs.select("doc_id"), on="doc_id", how="semi")
    outcome = (
        pl.when(pl.col("_new_rule").is_null())
        .then(pl.lit("now it represents its cluster (selected unless the budget says otherwise)"))
        .when(pl.col("_new_rule").is_in(dedup_rules))
        .then(pl.format("now {} of {}", "_new_rule", "_new_of"))
        .otherwise(pl.format("now dropped by {}", "_new_rule"))
    )
    return verdict_frame(changed.select(
        "doc_id",
        pl.lit(FLAG).alias("verdict"),
        pl.lit(RULE_REEVALUATED).alias("rule"),
        pl.format("previous build of release {}: {}; {}", pl.lit(release), "_was", outcome).alias("detail"),
        pl.col("_new_of").alias("duplicate_of"),
    )).sort("doc_id")


def _shard_columns(frame: pl.DataFrame) -> list[str]:
    return [c for c in SHARD_COLUMNS if c in frame.columns]


def _unit_defaults(units: pl.DataFrame) -> pl.DataFrame:
    defaults = {"split": pl.lit("train"), "epoch": pl.lit(0, dtype=pl.Int64), "drop": pl.lit(None, dtype=pl.String),
                "drop_order": pl.lit(0, dtype=pl.Int64)}
    return units.with_columns([e.alias(c) for c, e in defaults.items() if c not in units.columns])


def shard_documents(docs: pl.DataFrame, cfg: ReleaseConfig) -> list[pl.DataFrame]:
    """In-memory form of the shard layout (``selection.shard_plan``): a deterministic seeded order, then shards
    of at most ``shard_max_docs``, one list per split in name order."""
    plan = shard_plan(_unit_defaults(docs), cfg, docs["quality_score"] if cfg.curriculum else None)
    return [rows.sort("_position").select(_shard_columns(rows))
            for _, rows in plan.sort("shard").group_by("shard", maintain_order=True)]


def _curriculum_signal(selected: pl.DataFrame, cfg: ReleaseConfig) -> pl.Series | None:
    if cfg.curriculum is None:
        return None
    column = "token_count" if cfg.curriculum.signal == "length" else cfg.curriculum.signal
    if column not in selected.columns:
        from curation_platform.errors import ConfigError
        raise ConfigError(f"release.curriculum.signal: '{cfg.curriculum.signal}' is not a column of the curated "
                          "documents; use length, quality_score or a quality-signal column")
    return selected[column].cast(pl.Float64)


def _write_shards(ws: Workspace, final_stage: str, selected: pl.DataFrame, cfg: ReleaseConfig,
                  staging: Path, formatting: FormattingConfig | None = None
                  ) -> tuple[list[Path], list[dict[str, Any]]]:
    """``shards/train-NNNNN.parquet`` and ``shards/validation-NNNNN.parquet`` in the order of
    ``selection.shard_plan``, one shard's documents in memory at a time (each read from its drops' curated
    files); a repeated document appears once per epoch. With ``formatting``, chat documents'
    ``text`` is their conversation rendered by the chat template (the text ``token_count`` counted). Returns the paths and the shard index (per shard: split,
    documents, tokens and, with a curriculum, the signal's range)."""
    plan = shard_plan(_unit_defaults(selected), cfg, _curriculum_signal(selected, cfg))
    paths: list[Path] = []
    index: list[dict[str, Any]] = []
    for (name,), rows in plan.sort("split", "_position").group_by("shard", maintain_order=True):
        texts = []
        for drop in rows["drop"].unique(maintain_order=True).to_list():
            view = ws.scan_stage(final_stage, drop)
            schema = view.collect_schema()
            columns = [c for c in SHARD_COLUMNS if c in schema and c not in SELECTION_COLUMNS]
            ids = rows.filter(pl.col("drop") == drop)["doc_id"].unique()
            texts.append(view.select(columns).filter(pl.col("doc_id").is_in(ids.implode())).collect())
        decided = rows.select("doc_id", *[c for c in SELECTION_COLUMNS if c in rows.columns], "_position")
        part = pl.concat(texts, how="diagonal_relaxed")
        if formatting is not None:
            part = part.with_columns(training_text(part, formatting).alias("text"))
        shard = decided.join(part, on="doc_id", how="inner").sort("_position")
        paths.append(write_parquet_atomic(shard.select(_shard_columns(shard)), staging / "shards" / name))
        entry = {"shard": name, "split": rows["split"][0], "documents": rows.height,
                 "tokens": int(rows["token_count"].sum())}
        if cfg.curriculum is not None:
            entry |= {"signal_min": rows["_signal"].min(), "signal_max": rows["_signal"].max()}
        index.append(entry)
    if not paths:  # an empty selection still gets one (empty) shard, which the release gate refuses
        empty = pl.DataFrame(schema={c: (pl.Int64 if c in ("token_count", "epoch") else pl.String)
                                     for c in SHARD_COLUMNS if c not in ("messages", "quality_score")})
        paths.append(write_parquet_atomic(empty, staging / "shards" / "train-00000.parquet"))
    return paths, index


@dataclass
class StagedRelease:
    name: str
    directory: Path
    shards: list[Path]
    selected: pl.DataFrame
    verdicts: pl.DataFrame
    card: dict[str, Any]


def _source_table(docs: pl.DataFrame) -> list[dict[str, Any]]:
    if docs.is_empty():
        return []
    grouped = docs.group_by("source", "drop", "license").agg(
        pl.len().alias("documents"), pl.col("token_count").sum().alias("tokens"), pl.col("provenance").first()
    ).sort("source", "drop", "license")
    rows = []
    for row in grouped.iter_rows(named=True):
        rows.append({
            **{k: row[k] for k in ("source", "drop", "license", "documents", "tokens")},
            "attribution_required": attribution_required(row["license"]),
            "provenance": json.loads(row["provenance"] or "{}"),
        })
    return rows


def build_card(
    name: str, cfg: CurationConfig, selected: pl.DataFrame, stage_counts: list[dict[str, Any]],
    release_verdicts: pl.DataFrame, extra: dict[str, Any],
) -> dict[str, Any]:
    per_rule = (
        release_verdicts.group_by("rule").len().sort("rule") if not release_verdicts.is_empty() else None
    )
    licenses = license_breakdown(selected)
    tokens_by_license = (
        selected.group_by("license").agg(pl.col("token_count").sum()).sort("license") if selected.height else None
    )
    token_map = dict(tokens_by_license.iter_rows()) if tokens_by_license is not None else {}
    for row in licenses:
        row["tokens"] = int(token_map.get(row["license"], 0))
    generators = sorted({
        json.dumps(json.loads(p).get("generator"), sort_keys=True)
        for p in selected["provenance"].unique().to_list() if p and json.loads(p).get("generator")
    }) if selected.height else []
    card = {
        "name": name,
        "profile": cfg.release.profile,
        "documents": selected.height,
        "tokens": int(selected["token_count"].sum()) if selected.height else 0,
        "by_kind": dict(selected.group_by("kind").len().sort("kind").iter_rows()) if selected.height else {},
        "by_language": dict(selected.group_by("language").len().sort("language").iter_rows()) if selected.height else {},
        "config_hash": cfg.hash,
        "code_version": code_version(),
        "tokenizer": cfg.release.tokenizer,
        "licenses": licenses,
        "generators": [json.loads(g) for g in generators],
        "sources": _source_table(selected),
        "stages": stage_counts,
        "release_removals": dict(per_rule.iter_rows()) if per_rule is not None else {},
        # Documents and tokens per language, kind and (when the selection assigns one) domain.
        "languages": card_parts.breakdown(selected, "language"),
        "kinds": card_parts.breakdown(selected, "kind"),
        "domains": card_parts.breakdown(selected, "domain"),
        **({"quality_model": _quality_model_card(cfg)} if cfg.scoring.model else {}),
        **extra,
    }
    card["huggingface"] = card_parts.hf_header(card)
    return card


def _quality_model_card(cfg: CurationConfig) -> dict[str, Any]:
    from curation_platform.quality_model import model_summary

    return {**model_summary(cfg.scoring.model), "model_kinds": cfg.scoring.model_kinds,
            "min_score": cfg.scoring.min_score, "top_fraction": cfg.scoring.top_fraction}


def card_markdown(card: dict[str, Any], images: dict[str, str] | None = None, front_matter: bool = True) -> str:
    """The card as Markdown: the Hugging Face YAML header (unless ``front_matter`` is false, as in the Dagster UI),
    then the sections. ``images`` maps plot names to URLs; by default the PNG files beside the card."""
    images = images if images is not None else {Path(p).stem: p for p in card.get("plots", [])}
    lines = [
        *([card_parts.front_matter(card["huggingface"])] if front_matter and card.get("huggingface") else []),
        f"# Data card: {card['name']}",
        "",
        f"- Documents: **{card['documents']:,}**, tokens: **{card['tokens']:,}** ({card['tokenizer']})",
        f"- License profile: `{card['profile']}`; config hash `{card['config_hash']}`; code version {card['code_version']}",
        "",
        "## Sources",
        "",
        "| source | drop | license | documents | tokens | attribution | provenance |",
        "|---|---|---|---:|---:|---|---|",
    ]
    for s in card["sources"]:
        prov = s["provenance"].get("url") or s["provenance"].get("description", "")
        lines.append(f"| {s['source']} | {s['drop']} | {s['license']} | {s['documents']} | {s['tokens']} | "
                     f"{'required' if s['attribution_required'] else 'no'} | {prov} |")
    lines += ["", "## Licenses", "", "| license | category | documents | tokens | attribution |", "|---|---|---:|---:|---|"]
    for l in card["licenses"]:
        lines.append(f"| {l['license']} | {l.get('category', '')} | {l['documents']} | {l['tokens']} | "
                     f"{'required' if l.get('attribution_required') else 'no'} |")
    if images:
        lines += ["", "## Plots", "", *[f"![{name}]({url})" for name, url in images.items()]]
    for key, title in (("languages", "Languages"), ("kinds", "Kinds"), ("domains", "Domains")):
        if card.get(key):
            lines += ["", f"## {title}", "", *card_parts.table(card[key], first=key[:-1])]
    if card.get("per_drop"):
        lines += ["", "## Released per drop", "", "| drop | curated | released | tokens | left out by the release |",
                  "|---|---:|---:|---:|---|"]
        lines += [f"| {d['drop']} | {d['curated']} | {d['released']} | {d['released_tokens']} | "
                  + ", ".join(f"{rule} {n}" for rule, n in d["left_out"].items()) + " |" for d in card["per_drop"]]
    if card.get("excluded_drops"):
        lines += ["", "## Drops left out", "", "Not fully curated with this configuration when the release was built: "
                  + ", ".join(card["excluded_drops"])]
    if card["generators"]:
        lines += ["", "## Synthetic data generators", ""]
        lines += [f"- {g.get('model')} (terms: {g.get('terms')})" for g in card["generators"]]
    lines += ["", "## Stages (all drops)", "", "| stage | input | kept | dropped | quarantined |", "|---|---:|---:|---:|---:|"]
    for s in card["stages"]:
        lines.append(f"| {s['stage']} | {s['input']} | {s['kept']} | {s['dropped']} | {s['quarantined']} |")
    lines += ["", "## Removals by rule", "", "| stage | rule | documents |", "|---|---|---:|"]
    for r in card.get("rules", []):
        lines.append(f"| {r['stage']} | {r['rule']} | {r['documents']} |")
    for rule, n in card["release_removals"].items():
        lines.append(f"| release | {rule} | {n} |")
    if card.get("contamination"):
        lines += ["", "## Benchmark decontamination", "", "| benchmark | documents removed |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in card["contamination"].items()]
    lines += flagged_words.card_markdown(card.get("flagged_words", {}))
    lines += card_parts.optional_sections(card)
    return "\n".join(lines) + "\n"


def stage_release(ws: Workspace, cfg: CurationConfig, final_stage: str, drops: list[str],
                  stage_counts: list[dict[str, Any]], rules: list[dict[str, Any]],
                  contamination: dict[str, int]) -> StagedRelease:
    """Write the candidate release from the current ``drops`` to the staging area (write step of
    write-audit-publish). Registered drops left out (not current) are listed in the card."""
    name = cfg.release.name
    curriculum = cfg.release.curriculum
    signal = (curriculum.signal,) if curriculum is not None and curriculum.signal != "length" else ()
    docs = curated_metadata(ws, final_stage, drops, cfg.release.tokenizer, signal, cfg.formatting)
    if docs.is_empty():
        from curation_platform.errors import CurationError
        raise CurationError("no curated documents to release: land a drop and run `curate run` first")
    result = select_release(docs, cfg, near_pairs(ws, drops))
    selected = result.kept
    staging = ws.staging_dir(name)
    remove_tree(staging)
    shards, shard_index = _write_shards(ws, final_stage, selected, cfg.release, staging, cfg.formatting)
    # One row per released document: the shard of its first epoch, its split and how many epochs ship.
    shard_of = pl.concat([
        pl.read_parquet(p, columns=["doc_id", "epoch"]).with_columns(
            pl.lit(p.name).alias("release_shard"), pl.lit(p.name.split("-")[0]).alias("split"))
        for p in shards
    ]).group_by("doc_id").agg(pl.col("release_shard").sort_by("epoch").first(), pl.col("split").first(),
                              pl.len().cast(pl.Int64).alias("epochs")).sort("release_shard", "doc_id")
    excluded = [d.name for d in ws.drops() if d.name not in drops]
    report = {**result.metrics["selection"], "shards": shard_index,
              "curriculum": None if curriculum is None else curriculum.model_dump()}
    card = build_card(name, cfg, selected, stage_counts, result.verdicts,
                      {"rules": rules, "contamination": contamination, "shards": [p.name for p in shards],
                       "excluded_drops": excluded, "flagged_words": flagged_words.card_removals(ws, drops),
                       "per_drop": card_parts.per_drop(docs, selected, result.verdicts),
                       "selection": report,
                       "formatting": formatting_card(selected, cfg.formatting, cfg.release.tokenizer),
                       "verification": verification_summary(ws, drops)})
    card["plots"] = [write_bytes_atomic(png, staging / "plots" / f"{plot}.png").relative_to(staging).as_posix()
                     for plot, png in card_parts.card_plots(card, selected).items()]
    write_text_atomic(json.dumps(card, indent=2, sort_keys=True, default=str) + "\n", staging / "data_card.json")
    write_text_atomic(card_markdown(card), staging / "data_card.md")
    write_text_atomic(card_markdown(card), staging / "README.md")  # the dataset card when pushed to the Hub
    write_parquet_atomic(shard_of, staging / "shard_index.parquet")
    # The release's own verdicts (license policy, duplicates, budget), with each document's drop, for the ledger;
    # plus the cascade: documents whose duplicate verdict changed since the previous build of this release.
    previous = (pl.read_parquet(ws.release_ledger_path(name)) if ws.release_ledger_path(name).exists()
                else pl.DataFrame(schema=LEDGER_SCHEMA))
    shipped_index = ws.release_dir(name) / "shard_index.parquet"
    shipped = pl.read_parquet(shipped_index, columns=["doc_id"])["doc_id"] if shipped_index.exists() else None
    cascade = reevaluated(previous, result.verdicts, docs, name, shipped)
    doc_drops = docs.select("doc_id", "drop")
    write_parquet_atomic(pl.concat([result.verdicts, cascade]).join(doc_drops, on="doc_id", how="left"),
                         staging / "release_verdicts.parquet")
    return StagedRelease(name=name, directory=staging, shards=shards, selected=selected,
                         verdicts=result.verdicts, card=card)


def publish_release(ws: Workspace, name: str, run_id: str, config_hash: str) -> Path:
    """Publish the audited staging folder (publish step of write-audit-publish) and return the release's folder.

    Locally the folders are swapped by rename. In object storage (no rename) the staged objects are copied into a
    new immutable version, and a one-object pointer written last makes it current (see ``Workspace.release_dir``):
    a reader sees the previous release, whole, until that PUT completes, and the new one, whole, after it; a publish
    that fails half-way leaves only an unreferenced version, removed by the next publish."""
    staging = ws.staging_dir(name)
    if not staging.exists():
        from curation_platform.errors import CurationError
        raise CurationError(f"release '{name}' has no staged candidate at {staging}")
    target = _publish_version(ws, name, staging) if is_uri(staging) else _publish_by_rename(ws, name, staging)
    verdicts = pl.read_parquet(target / "release_verdicts.parquet")
    ledger = verdicts.with_columns(
        pl.lit("release").alias("stage"), pl.lit(run_id).alias("run_id"), pl.lit(config_hash).alias("config_hash")
    ).select(list(LEDGER_SCHEMA))
    write_parquet_atomic(ledger, ws.release_ledger_path(name))
    return target


def _publish_by_rename(ws: Workspace, name: str, staging: Path) -> Path:
    target = ws.release_dir(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Swap, then delete: the previous release stays whole until the new one is in place.
    previous = target.with_name(f".{name}.previous")
    remove_tree(previous)
    if target.exists():
        move_tree(target, previous)
    move_tree(staging, target)
    remove_tree(previous)
    return target


def _publish_version(ws: Workspace, name: str, staging: Path) -> Path:
    """Copy the staged release to ``releases/.versions/<version>/<name>``, then point ``releases/.current/<name>
    .json`` at it (one PUT, the commit point). The previous version stays (a reader that resolved the pointer just
    before may still be reading it); older versions, versions of failed publishes and a pre-versions
    ``releases/<name>`` folder are removed after the commit."""
    import datetime
    import uuid

    previous = ws.release_dir(name)
    now = datetime.datetime.now(datetime.UTC)
    version = f"{now:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"  # sorts by publish time; unique per publish
    target = ws.lake / "releases" / ".versions" / version / name
    move_tree(staging, target)  # every object copied (shards first, card and shard index last), then staging deleted
    head = {"release": name, "version": version, "path": f"releases/.versions/{version}/{name}",
            "published_at": now.isoformat()}
    write_text_atomic(json.dumps(head, indent=2) + "\n", ws.release_head(name))
    keep = {target, previous}
    for folder in child_folders(ws.lake / "releases" / ".versions"):
        if folder / name not in keep and (folder / name).exists():
            remove_tree(folder / name)
    legacy = ws.lake / "releases" / name
    if legacy not in keep:
        remove_tree(legacy)
    return target
