"""Quality score per document in [0, 1], and selection by score (drop verdicts of the ``scored`` stage).

``quality_score`` is the configured classifier's probability of the positive (high-quality) class for the kinds in
``model_kinds`` when ``scoring.model`` names one (``curation_platform.quality_model``), else the heuristic blend;
the blend is always kept as ``heuristic_score`` beside the signal columns it is made of. The blend maps each
feature's signal linearly onto [0, 1] between ``bad`` and ``good`` (either order) and takes the weighted mean over
the features a document has.

Selection: ``min_score`` drops documents under a threshold (rule ``scoring.min_score``) and ``top_fraction``
keeps the best-scored ``ceil(top_fraction * n)`` documents of a group (rule ``scoring.top_fraction``; ties by
``doc_id``). Both are per drop, like every verdict of this stage (streaming-friendly: a new drop never changes an
earlier drop's verdicts), and can be set per source (``per_source``) or per domain (``per_domain``), the source
setting winning; a group for ``top_fraction`` is the documents of the drop that share the setting's source, or
domain, or the whole drop for the global setting.
"""

from __future__ import annotations

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from curation_platform.records import DROP, StageResult, split_by_verdicts, verdict_frame


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
    # A quality model directory (``curate quality train``), a path or pkg://; None scores with the blend above.
    # The shipped default: pkg://curation_platform/resources/quality (see the README before enabling it).
    model: str | None = None
    # Kinds the model scores; other kinds keep the heuristic score (the default model knows prose, not code).
    model_kinds: list[str] = Field(default_factory=lambda: ["web", "text", "synthetic"])
    # Documents scoring below this are dropped with rule ``scoring.min_score`` (0 keeps everything).
    min_score: float = Field(default=0.0, ge=0, le=1)
    # Keep the best-scored fraction of each drop's documents (rule ``scoring.top_fraction``; 1 keeps everything).
    top_fraction: float = Field(default=1.0, gt=0, le=1)
    per_source: dict[str, "ScoreSelection"] = Field(default_factory=dict)
    per_domain: dict[str, "ScoreSelection"] = Field(default_factory=dict)


class ScoreSelection(BaseModel):
    """Selection settings for one source or domain; an unset field falls back to the next level."""

    model_config = ConfigDict(extra="forbid")

    min_score: float | None = Field(default=None, ge=0, le=1)
    top_fraction: float | None = Field(default=None, gt=0, le=1)


ScoreConfig.model_rebuild()


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


def _setting(cfg: ScoreConfig, key: str) -> tuple[pl.Expr, pl.Expr]:
    """(effective value, group key) of ``min_score`` or ``top_fraction`` per document: per source, else per
    domain, else global."""
    by_source = {s: getattr(v, key) for s, v in cfg.per_source.items() if getattr(v, key) is not None}
    by_domain = {d: getattr(v, key) for d, v in cfg.per_domain.items() if getattr(v, key) is not None}
    source_value = pl.col("source").replace_strict(by_source, default=None, return_dtype=pl.Float64)
    domain_value = pl.col("domain").replace_strict(by_domain, default=None, return_dtype=pl.Float64)
    value = pl.coalesce(source_value, domain_value, pl.lit(float(getattr(cfg, key))))
    group = (pl.when(source_value.is_not_null()).then(pl.lit("source:") + pl.col("source"))
             .when(domain_value.is_not_null()).then(pl.lit("domain:") + pl.col("domain"))
             .otherwise(pl.lit("drop")))
    return value, group


def selection_verdicts(scored: pl.DataFrame, cfg: ScoreConfig) -> pl.DataFrame:
    """Drop verdicts of score selection for documents with ``doc_id``, ``source``, ``domain``, ``quality_score``:
    ``scoring.min_score`` first, then ``scoring.top_fraction`` (value: the score; threshold: the bound, for a top
    fraction the lowest score it keeps)."""
    min_score, _ = _setting(cfg, "min_score")
    fraction, group = _setting(cfg, "top_fraction")
    ranked = scored.select("doc_id", "quality_score", min_score.alias("min_score"), fraction.alias("fraction"),
                           group.alias("group")).sort(["quality_score", "doc_id"], descending=[True, False])
    ranked = ranked.with_columns(position=pl.int_range(pl.len()).over("group"), size=pl.len().over("group"))
    in_top = pl.col("position") < (pl.col("fraction") * pl.col("size") - 1e-9).ceil()
    ranked = ranked.with_columns(cutoff=pl.col("quality_score").filter(in_top).min().over("group"))
    failed = (
        ranked.filter((pl.col("quality_score") < pl.col("min_score")) | ~in_top)
        .select(
            "doc_id",
            verdict=pl.lit(DROP),
            rule=pl.when(pl.col("quality_score") < pl.col("min_score")).then(pl.lit("scoring.min_score"))
            .otherwise(pl.lit("scoring.top_fraction")),
            value=pl.col("quality_score"),
            threshold=pl.when(pl.col("quality_score") < pl.col("min_score"))
            .then(pl.format("< {}", pl.col("min_score")))
            .otherwise(pl.format("< {} (top {} of {} in {})", pl.col("cutoff"), pl.col("fraction"),
                                 pl.col("size"), pl.col("group"))),
        )
    )
    return verdict_frame(failed.sort("doc_id"))


def score_documents(docs: pl.DataFrame, cfg: ScoreConfig, domain: pl.Expr | None = None) -> StageResult:
    """Add ``quality_score`` (the model's probability, or the heuristic blend) and ``heuristic_score``, then drop
    documents by ``min_score`` and ``top_fraction``. ``domain`` is the expression that names each document's
    domain (``selection.domain_expr``; default its kind)."""
    scored = docs.with_columns(quality_score_expr(cfg, docs.columns).alias("heuristic_score"))
    scored = scored.with_columns(quality_score=model_scores(scored, cfg) if cfg.model else pl.col("heuristic_score"))
    keyed = scored.with_columns((domain if domain is not None else pl.col("kind")).alias("domain"))
    if "source" not in keyed.columns:
        keyed = keyed.with_columns(source=pl.lit(None, pl.String))
    verdicts = selection_verdicts(keyed, cfg)
    metrics: dict = {"scorer": cfg.model or "heuristic"}
    metrics["score_mean"] = float(scored["quality_score"].mean()) if scored.height else None
    described = scored["quality_score"].describe() if scored.height else None
    metrics["score_quantiles"] = (
        {str(r[0]): r[1] for r in described.iter_rows() if r[0] in ("min", "25%", "50%", "75%", "max")}
        if described is not None
        else {}
    )
    deciding = verdicts.group_by("rule").len().sort("rule")
    metrics["dropped_per_rule"] = dict(zip(deciding["rule"], deciding["len"]))
    return split_by_verdicts(scored, verdicts, metrics)


def model_scores(docs: pl.DataFrame, cfg: ScoreConfig) -> pl.Series:
    """The model's P(high quality) for documents of ``model_kinds`` (one batch call), the heuristic elsewhere."""
    from curation_platform.quality_model import load_model

    model = load_model(cfg.model)
    applies = docs["kind"].is_in(cfg.model_kinds) & docs["text"].is_not_null()
    proba = model.predict_proba(docs.filter(applies)["text"])
    scores = docs["heuristic_score"].cast(pl.Float64).to_numpy().copy()
    scores[applies.to_numpy()] = proba
    return pl.Series("quality_score", scores, dtype=pl.Float64)
