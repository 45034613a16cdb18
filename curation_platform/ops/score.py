"""Quality score per document: a transparent weighted blend of stored signals, in [0, 1].

Each feature maps one signal linearly onto [0, 1] between ``bad`` and ``good`` (either order, so a signal where
lower is better works too) and the score is the weighted mean over the features a document has. The score orders
documents for dedup keep rules and budgeted selection; ``min_score`` can also drop documents outright.
"""

from __future__ import annotations

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from curation_platform.records import StageResult
from curation_platform.rules import Rule, apply_rules


class ScoreFeature(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signal: str
    bad: float
    good: float
    weight: float = 1.0
    kinds: list[str] | None = None

    @model_validator(mode="after")
    def _distinct_ends(self) -> "ScoreFeature":
        if self.bad == self.good:
            raise ValueError(f"score feature {self.signal}: bad and good must differ (both {self.bad})")
        return self


def _prose(signal: str, bad: float, good: float, weight: float = 1.0) -> ScoreFeature:
    return ScoreFeature(signal=signal, bad=bad, good=good, weight=weight, kinds=["web", "text", "synthetic", "chat"])


class ScoreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Features in the spirit of the Gopher and FineWeb heuristics: confident language, real words, little
    # repetition, enough length, lines that end like sentences.
    features: list[ScoreFeature] = Field(
        default_factory=lambda: [
            _prose("language_score", 0.65, 1.0, 2.0),
            _prose("alpha_word_frac", 0.8, 1.0),
            _prose("stop_word_count", 2, 30),
            _prose("dup_line_frac", 0.3, 0.0),
            _prose("top_2gram_char_frac", 0.2, 0.02),
            _prose("word_count", 50, 500),
            _prose("line_punct_ratio", 0.12, 0.9),
            ScoreFeature(signal="code_alnum_frac", bad=0.25, good=0.75, kinds=["code"]),
            ScoreFeature(signal="code_max_line_length", bad=1000, good=100, kinds=["code"]),
        ]
    )
    # Documents scoring below this are dropped with rule ``score.min_quality`` (0 keeps everything).
    min_score: float = 0.0


def _feature_expr(feature: ScoreFeature) -> tuple[pl.Expr, pl.Expr]:
    """(value in [0,1] or null, weight or 0) for one feature."""
    span = feature.good - feature.bad
    signal = pl.col(feature.signal).cast(pl.Float64).fill_nan(None)
    value = ((signal - feature.bad) / span).clip(0.0, 1.0)
    applies = signal.is_not_null()
    if feature.kinds is not None:
        applies = applies & pl.col("kind").is_in(feature.kinds)
    return (
        pl.when(applies).then(value * feature.weight).otherwise(0.0),
        pl.when(applies).then(pl.lit(feature.weight)).otherwise(0.0),
    )


def quality_score_expr(cfg: ScoreConfig, columns: list[str]) -> pl.Expr:
    """Weighted mean of the features whose signal column exists; documents with no feature score 0.5."""
    parts = [_feature_expr(f) for f in cfg.features if f.signal in columns]
    if not parts:
        return pl.lit(0.5).alias("quality_score")
    numerator = pl.sum_horizontal([p[0] for p in parts])
    denominator = pl.sum_horizontal([p[1] for p in parts])
    return pl.when(denominator > 0).then(numerator / denominator).otherwise(0.5).round(6).alias("quality_score")


def score_documents(docs: pl.DataFrame, cfg: ScoreConfig) -> StageResult:
    """Add ``quality_score`` and drop documents under ``min_score``."""
    scored = docs.with_columns(quality_score_expr(cfg, docs.columns))
    rule = Rule(name="score.min_quality", signal="quality_score", keep_if=">=", threshold=cfg.min_score)
    result = apply_rules(scored, [rule])
    described = scored["quality_score"].describe() if scored.height else None
    result.metrics["score_mean"] = float(scored["quality_score"].mean()) if scored.height else None
    result.metrics["score_quantiles"] = (
        {str(r[0]): r[1] for r in described.iter_rows() if r[0] in ("min", "25%", "50%", "75%", "max")}
        if described is not None
        else {}
    )
    return result
