"""`curate whatif` beyond filter rules: what changing a stage's numeric threshold would add back or remove,
computed from what the run stored (ledger values and stage columns), never by re-running a stage.

Each previewable setting names its stage, the per-document value it compares and how: for ``language.min_score``
the fastText score (kept when ``score >= threshold``), for ``pii.max_hits_per_doc`` the PII hits (kept when
``hits <= threshold``), for ``near_dedup.verify_threshold`` the verified Jaccard of a removed near duplicate (kept
when ``jaccard < threshold``). Score selection (``scoring.min_score``, ``scoring.top_fraction`` and their
``scoring.per_source.NAME.*`` / ``scoring.per_domain.NAME.*`` forms) is previewed by applying the changed selection
to every document that reached the ``scored`` stage, per drop, with its stored ``quality_score`` (the ledger value
for documents selection dropped).
Settings whose effect was never measured (n-gram sizes, LSH bands) are listed with the reason they cannot be
previewed.
"""

from __future__ import annotations

import re

import polars as pl

from curation_platform.config import CurationConfig
from curation_platform.errors import CurationError
from curation_platform.ledger import read_ledger
from curation_platform.workspace import Workspace

# Setting -> (stage, comparison that keeps a document).
PREVIEWABLE = {
    "language.min_score": ("language", ">="),
    "pii.max_hits_per_doc": ("pii_redacted", "<="),
    "near_dedup.verify_threshold": ("near_deduped", "<"),
    "scoring.min_score": ("scored", ">="),
    "scoring.top_fraction": ("scored", "top"),
}
SCORE_SETTING = re.compile(r"^scoring\.(?:(?P<level>per_source|per_domain)\.(?P<name>[^.]+)\.)?"
                           r"(?P<key>min_score|top_fraction)$")
# Numeric settings that cannot be previewed from stored data, and why.
NOT_PREVIEWABLE = {
    **{f"near_dedup.{k}": "MinHash signatures and LSH candidates are not stored; they change with it"
       for k in ("num_perm", "bands", "rows", "ngram", "seed", "target_jaccard")},
    "near_dedup.max_cluster_size": "it is a gate bound, not a removal threshold",
    **{f"decontamination.{k}": "benchmark n-gram overlaps are stored only for removed documents"
       for k in ("ngram", "min_ngram", "max_corpus_doc_frac", "common_ngram_min_docs", "copied_item_min_frac")},
    "ingest.max_record_bytes": "records are sized only while a drop is read",
    "ingest.min_text_chars": "records are measured only while a drop is read",
}

SCHEMA = {"drop": pl.String, "rule": pl.String, "added": pl.Int64, "removed": pl.Int64,
          "example_added": pl.List(pl.String), "example_removed": pl.List(pl.String)}


def _stage_column(ws: Workspace, stage: str, columns: list[str]) -> pl.DataFrame:
    return ws.read_stage_columns(stage, columns)


def _documents(ws: Workspace, cfg: CurationConfig, setting: str) -> pl.DataFrame:
    """(doc_id, drop, value, kept_now, applies) for every document that reached the setting's stage."""
    stage = PREVIEWABLE[setting][0]
    ledger = read_ledger(ws, stage=stage)
    decided = ledger.filter(pl.col("verdict").is_in(["keep", "drop"])).select(
        "doc_id", "drop", (pl.col("verdict") == "keep").alias("kept_now"), "rule", "value")
    applies = pl.lit(True)
    if setting == "language.min_score":
        kept = _stage_column(ws, "language", ["doc_id", "language_score"])
        raw = _stage_column(ws, "raw_documents", ["doc_id", "source", "kind"])
        decided = decided.join(kept, on="doc_id", how="left").join(raw, on="doc_id", how="left")
        value = pl.when(pl.col("kept_now")).then(pl.col("language_score").cast(pl.Float64)).otherwise(pl.col("value"))
        # Code is never dropped here, a wrong language stays dropped, and per-source rules keep their own score.
        applies = ((pl.col("kind") != "code") & (pl.col("kept_now") | (pl.col("rule") == "language.low_score"))
                   & ~pl.col("source").is_in(list(cfg.language.per_source)))
    elif setting == "pii.max_hits_per_doc":
        hits = ledger.filter(pl.col("verdict") == "redact").group_by("doc_id").agg(pl.col("value").sum().alias("hits"))
        decided = decided.join(hits, on="doc_id", how="left")
        value = pl.when(pl.col("kept_now")).then(pl.col("hits").fill_null(0.0)).otherwise(pl.col("value"))
        applies = pl.col("kept_now") | (pl.col("rule") == "pii.too_many_hits")
    elif setting == "near_dedup.verify_threshold":
        value = pl.col("value")
        applies = ~pl.col("kept_now") & (pl.col("rule") == "near_dedup.duplicate")
    return decided.select("doc_id", "drop", value.alias("value"), "kept_now", applies.fill_null(False).alias("applies"))


def _score_whatif(ws: Workspace, cfg: CurationConfig, setting: str, value: float) -> pl.DataFrame:
    """Per drop, documents a changed score selection would add back or remove at the ``scored`` stage."""
    from curation_platform.ops.score import ScoreSelection, selection_verdicts
    from curation_platform.selection import domain_expr

    match = SCORE_SETTING.match(setting)
    scoring = cfg.scoring.model_copy(deep=True)
    try:
        if match["level"]:
            levels = getattr(scoring, match["level"])
            levels[match["name"]] = levels.get(match["name"], ScoreSelection()).model_copy(
                update={match["key"]: value})
            ScoreSelection.model_validate(levels[match["name"]].model_dump())
        else:
            setattr(scoring, match["key"], value)
            type(scoring).model_validate(scoring.model_dump())
    except ValueError as exc:
        raise CurationError(f"{setting}={value:g} is not a valid setting: {str(exc).splitlines()[-1].strip()}"
                            ) from None
    ledger = read_ledger(ws, stage="scored")
    decided = ledger.filter(pl.col("verdict").is_in(["keep", "drop"])).select(
        "doc_id", "drop", (pl.col("verdict") == "keep").alias("kept_now"), "value")
    kept = _stage_column(ws, "scored", ["doc_id", "quality_score"])
    # The stage's input (the upstream output) carries every document's source and kind, kept or not.
    inputs = _stage_column(ws, "filtered", ["doc_id", "source", "kind", "language", "code_language"])
    docs = (decided.join(kept, on="doc_id", how="left").join(inputs, on="doc_id", how="left")
            .with_columns(quality_score=pl.when(pl.col("kept_now")).then(pl.col("quality_score").cast(pl.Float64))
                          .otherwise(pl.col("value")))
            .with_columns(domain_expr(cfg).alias("domain")))
    dropped = pl.concat([selection_verdicts(part, scoring).select("doc_id")
                         for part in docs.partition_by("drop")] or [pl.DataFrame(schema={"doc_id": pl.String})])
    keeps = ~pl.col("doc_id").is_in(dropped["doc_id"].implode())
    added, removed = ~pl.col("kept_now") & keeps, pl.col("kept_now") & ~keeps
    return _per_drop(docs, setting, added, removed)


def _per_drop(docs: pl.DataFrame, setting: str, added: pl.Expr, removed: pl.Expr) -> pl.DataFrame:
    """Per drop, how many documents the change adds back and removes, with up to three examples of each."""
    return docs.sort("doc_id").group_by("drop", maintain_order=True).agg(
        pl.lit(setting).alias("rule"),
        added.sum().cast(pl.Int64).alias("added"),
        removed.sum().cast(pl.Int64).alias("removed"),
        pl.col("doc_id").filter(added).head(3).alias("example_added"),
        pl.col("doc_id").filter(removed).head(3).alias("example_removed"),
    ).select(list(SCHEMA)).sort("drop")


def current_value(cfg: CurationConfig, setting: str) -> float:
    section, _, key = setting.partition(".")
    return float(getattr(getattr(cfg, section), key))


def threshold_whatif(ws: Workspace, cfg: CurationConfig, setting: str, value: float) -> pl.DataFrame:
    """Per drop, documents that ``setting = value`` would add back or remove at its stage (columns as
    ``ops.filters.whatif``: drop, rule, added, removed, example_added, example_removed). Raises CurationError
    for a setting that cannot be previewed, saying why."""
    if SCORE_SETTING.match(setting):
        return _score_whatif(ws, cfg, setting, value)
    if setting in NOT_PREVIEWABLE:
        raise CurationError(f"{setting} cannot be previewed from stored data ({NOT_PREVIEWABLE[setting]}); "
                            "change it in curation.yaml and run `curate run` (affected drops are curated again)")
    if setting == "near_dedup.verify_threshold" and value < current_value(cfg, setting):
        raise CurationError(f"lowering {setting} below {current_value(cfg, setting):g} cannot be previewed: pairs "
                            "under the current threshold were never stored; raising it can")
    keep_if = PREVIEWABLE[setting][1]
    docs = _documents(ws, cfg, setting)
    v = pl.col("value")
    keeps = {">=": v >= value, "<=": v <= value, "<": v < value}[keep_if].fill_null(True)
    added = pl.col("applies") & ~pl.col("kept_now") & keeps
    removed = pl.col("applies") & pl.col("kept_now") & ~keeps
    return _per_drop(docs, setting, added, removed)
