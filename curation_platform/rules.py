"""Rules as data, and the one applicator that turns them into verdicts for every stage that filters.

A rule names a signal column, a comparison and a threshold: ``Rule(name="gopher_quality.min_words",
signal="word_count", keep_if=">=", threshold=50)`` keeps documents with at least 50 words and drops the rest
with the stable rule name, the measured value and the broken bound in the ledger.
"""

from __future__ import annotations

from typing import Literal

import polars as pl
from pydantic import BaseModel, Field

from curation_platform.records import DROP, StageResult, split_by_verdicts

Comparison = Literal[">=", ">", "<=", "<", "==", "!="]

_NEGATION = {">=": "<", ">": "<=", "<=": ">", "<": ">=", "==": "!=", "!=": "=="}


class Rule(BaseModel):
    """Keep a document when ``signal keep_if threshold`` holds; otherwise drop it under ``name``."""

    name: str
    signal: str
    keep_if: Comparison
    threshold: float
    kinds: list[str] | None = Field(default=None, description="document kinds the rule applies to; None = all")
    reference: str = ""
    enabled: bool = True

    def keeps(self) -> pl.Expr:
        # NaN compares as larger than everything in Polars; treat it as a missing signal instead.
        col, t = pl.col(self.signal).cast(pl.Float64).fill_nan(None), self.threshold
        expr = {
            ">=": col >= t,
            ">": col > t,
            "<=": col <= t,
            "<": col < t,
            "==": col == t,
            "!=": col != t,
        }[self.keep_if]
        # A missing signal never drops a document: the rule does not apply to it.
        expr = expr.fill_null(True)
        if self.kinds is not None:
            expr = expr | ~pl.col("kind").is_in(self.kinds)
        return expr

    @property
    def broken_bound(self) -> str:
        return f"{_NEGATION[self.keep_if]} {self.threshold:g}"


def rule_failures(docs: pl.DataFrame, rules: list[Rule]) -> pl.DataFrame:
    """Long frame of (doc_id, rule, value, threshold) for every rule each document breaks, in rule order."""
    active = [r for r in rules if r.enabled]
    if not active or docs.is_empty():
        return pl.DataFrame(
            schema={"doc_id": pl.String, "rule": pl.String, "rule_order": pl.Int64, "value": pl.Float64,
                    "threshold": pl.String}
        )
    parts = [
        docs.filter(~rule.keeps()).select(
            "doc_id",
            pl.lit(rule.name).alias("rule"),
            pl.lit(order, dtype=pl.Int64).alias("rule_order"),
            pl.col(rule.signal).cast(pl.Float64).alias("value"),
            pl.lit(rule.broken_bound).alias("threshold"),
        )
        for order, rule in enumerate(active)
    ]
    return pl.concat(parts)


def apply_rules(docs: pl.DataFrame, rules: list[Rule], stage_metrics: dict | None = None) -> StageResult:
    """Drop every document that breaks a rule. The deciding rule is the first broken one in config order;
    ``detail`` lists every rule the document broke, so ``curate explain`` shows the whole picture."""
    missing = sorted({r.signal for r in rules if r.enabled} - set(docs.columns))
    if missing:
        raise KeyError(f"rules refer to signals that were not computed: {', '.join(missing)}")
    failures = rule_failures(docs, rules)
    verdicts = (
        failures.sort("doc_id", "rule_order")
        .group_by("doc_id", maintain_order=True)
        .agg(
            pl.col("rule").first(),
            pl.col("value").first(),
            pl.col("threshold").first(),
            pl.format("broke {}", pl.col("rule").str.join(", ")).alias("detail"),
        )
        .with_columns(pl.lit(DROP).alias("verdict"))
    )
    per_rule = failures.group_by("rule").len().sort("rule")
    deciding = verdicts.group_by("rule").len().sort("rule")
    metrics = {
        "broken_per_rule": dict(zip(per_rule["rule"], per_rule["len"])),
        "dropped_per_rule": dict(zip(deciding["rule"], deciding["len"])),
        **(stage_metrics or {}),
    }
    return split_by_verdicts(docs, verdicts, metrics)
