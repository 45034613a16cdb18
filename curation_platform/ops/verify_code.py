"""Verification of generated code: every synthetic code record with tests runs against them in the sandbox.

A record is a candidate when it is synthetic (its drop's kind is ``synthetic``, or its manifest names a
``generator``), carries ``tests`` (the record's ``tests`` field) and is Python (``code_language`` python or
unset). Its ``text`` runs first, then its tests, in one namespace (see ``curation_platform.sandbox``). Failures are
dropped with ``verification.failed``, ``verification.timeout`` or ``verification.resource`` and the runner's
output (its tail) in the ledger detail; passes get a ``verification.passed`` flag row so the card counts come from
the ledger. Non-synthetic code and records without tests pass untouched; synthetic records with tests in another
language pass with a ``verification.unsupported_language`` flag row.
"""

from __future__ import annotations

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from curation_platform.records import DROP, FLAG, StageResult, split_by_verdicts, verdict_frame
from curation_platform.sandbox import PASSED, SandboxConfig, run_candidates

RULE_PREFIX = "verification."
RULE_PASSED, RULE_UNSUPPORTED = "verification.passed", "verification.unsupported_language"
OUTCOME_RULES = ("verification.failed", "verification.timeout", "verification.resource")


_OUTCOME_WORDS = {"failed": "tests failed", "timeout": "timed out", "resource": "stopped by a sandbox limit"}


class VerificationConfig(BaseModel):
    """Which generated code is run against its tests, and the sandbox limits of one run."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    languages: list[str] = Field(default_factory=lambda: ["python"])  # the sandbox runs Python only
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)


def candidates(docs: pl.DataFrame) -> pl.Expr:
    """Rows that are synthetic and carry non-empty tests (whatever their language)."""
    synthetic = (pl.col("kind") == "synthetic") | pl.col("provenance").str.json_path_match("$.generator").is_not_null()
    has_tests = pl.col("tests").str.strip_chars().str.len_chars() > 0 if "tests" in docs.columns else pl.lit(False)
    return (synthetic & has_tests).fill_null(False)


def verify_code(docs: pl.DataFrame, cfg: VerificationConfig) -> StageResult:
    """Run every candidate (see the module docstring) and drop the ones whose tests do not pass.

    In: documents with ``doc_id``, ``kind``, ``provenance``, ``text``, ``code_language`` and optionally ``tests``.
    Out: the passing and untouched documents, drop rows for failures, flag rows for passes and unsupported ones.
    """
    if not cfg.enabled or docs.is_empty():
        return StageResult(kept=docs, metrics={"verification_run": 0})
    chosen = docs.filter(candidates(docs))
    language = pl.col("code_language").fill_null("python")
    runnable = chosen.filter(language.is_in(cfg.languages))
    unsupported = chosen.filter(~language.is_in(cfg.languages))
    results = run_candidates(list(zip(runnable["text"].to_list(), runnable["tests"].to_list())), cfg.sandbox)
    outcomes = runnable.select(
        "doc_id",
        pl.Series("outcome", [r.outcome for r in results], dtype=pl.String),
        pl.Series("output", [r.output for r in results], dtype=pl.String),
        pl.Series("returncode", [r.returncode for r in results], dtype=pl.Int64),
    )
    limits = cfg.sandbox
    threshold = (f"tests pass within {limits.timeout_seconds:g} s wall, {limits.cpu_seconds} s CPU, "
                 f"{limits.memory_mb} MB, {limits.file_size_mb} MB files, no network")
    run_rows = outcomes.select(
        "doc_id",
        pl.when(pl.col("outcome") == PASSED).then(pl.lit(FLAG)).otherwise(pl.lit(DROP)).alias("verdict"),
        (pl.lit(RULE_PREFIX) + pl.col("outcome")).alias("rule"),
        pl.col("returncode").cast(pl.Float64).alias("value"),
        pl.lit(threshold).alias("threshold"),
        pl.when(pl.col("outcome") == PASSED).then(pl.lit("tests passed in the sandbox"))
        .otherwise(pl.format("{} in the sandbox: {}", pl.col("outcome").replace(_OUTCOME_WORDS), "output"))
        .alias("detail"),
    )
    unsupported_rows = unsupported.select(
        "doc_id", pl.lit(FLAG).alias("verdict"), pl.lit(RULE_UNSUPPORTED).alias("rule"),
        pl.format("tests not run: the sandbox runs {}, not {}", pl.lit(", ".join(cfg.languages)),
                  "code_language").alias("detail"),
    )
    counts = dict(outcomes.group_by("outcome").len().iter_rows())
    metrics = {"verification_run": runnable.height, "verification_unsupported": unsupported.height,
               **{f"verification_{o}": int(counts.get(o, 0)) for o in ("passed", "failed", "timeout", "resource")}}
    return split_by_verdicts(docs, pl.concat([verdict_frame(run_rows), verdict_frame(unsupported_rows)]), metrics)


def verification_summary(ws, drops: list[str]) -> dict[str, int]:
    """The card's ``verification`` section: generated code run against its tests in the given drops, and how it
    ended, counted from their ``filtered`` ledgers (``ws``: the Workspace)."""
    paths = [p for drop in drops if (p := ws.ledger_path("filtered", drop)).exists()]
    counts: dict[str, int] = {}
    if paths:
        rules = (pl.scan_parquet(paths).filter(pl.col("rule").str.starts_with(RULE_PREFIX))
                 .group_by("rule").len().collect())
        counts = dict(rules.iter_rows())
    outcomes = {rule.removeprefix(RULE_PREFIX): int(counts.get(rule, 0)) for rule in (RULE_PASSED, *OUTCOME_RULES)}
    return {"tests_run": sum(outcomes.values()), **outcomes,
            "unsupported_language": int(counts.get(RULE_UNSUPPORTED, 0))}
