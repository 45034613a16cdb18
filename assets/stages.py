"""One partitioned asset and one blocking gate per per-drop stage, built from the engine's stage list."""



import dagster as dg

from assets.partitions import drops
from assets.progress import notify
from assets.resources import CurationResource
from curation_platform.advice import filtered_gate_advice
from curation_platform.audit import near_dedup_gate, stage_gate, stage_residue
from curation_platform.gates import GateResult
from curation_platform.pipeline import STAGE_DESCRIPTIONS, STAGES, UPSTREAM, filter_profile, run_stage
from curation_platform.reporting import markdown_table

GROUPS = {
    "raw_documents": "ingest",
    "url_filtered": "ingest",
    "normalized": "curate",
    "language": "curate",
    "line_deduped": "curate",
    "quality_signals": "curate",
    "filtered": "curate",
    "scored": "curate",
    "pii_redacted": "safety",
    # Decontamination is deduplication against benchmarks; grouping it here keeps the group graph a chain.
    "exact_deduped": "dedup",
    "near_deduped": "dedup",
    "decontaminated": "dedup",
}


def _stage_asset(stage: str) -> dg.AssetsDefinition:
    upstream = UPSTREAM.get(stage)

    @dg.asset(
        name=stage,
        partitions_def=drops,
        deps=[upstream] if upstream else [],
        group_name=GROUPS[stage],
        description=STAGE_DESCRIPTIONS[stage],
        kinds={"polars", "parquet"},
    )
    def _asset(context: dg.AssetExecutionContext, curation: CurationResource) -> dg.MaterializeResult:
        summary = run_stage(curation.ws(), curation.cfg(), stage, context.partition_key, context.run_id)
        notify(stage, context.partition_key, summary)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": summary.kept,
                "input": summary.input,
                "dropped": summary.dropped,
                "quarantined": summary.quarantined,
                "removal_rate": round(summary.removal_rate, 4),
                "removed_per_rule": dg.MetadataValue.json(summary.per_rule),
                "stage_metrics": dg.MetadataValue.json(summary.metrics),
                "preview": dg.MetadataValue.md(markdown_table(summary.preview)),
                "path": dg.MetadataValue.path(str(curation.ws().stage_path(stage, context.partition_key))),
            }
        )

    return _asset


def check_result(results: list[GateResult], advice: str = "") -> dg.AssetCheckResult:
    """The check result of a gate. When the removal rate failed and ``advice`` says why in the user's words, the
    description is the advice plus any other failure; otherwise the raw expectation failures (they stay in the
    metadata either way)."""
    failures = [f"{r.name}: {f}" for r in results for f in r.failures]
    return dg.AssetCheckResult(
        passed=not failures,
        description=(
            "\n".join([advice, *[f for f in failures if "removal_rate" not in f]]) if advice
            else "; ".join(failures)) if failures else f"{len(results)} suites passed",
        metadata={
            "suites": dg.MetadataValue.json({r.name: {"passed": r.passed, **r.checked} for r in results}),
            "failures": dg.MetadataValue.md("\n".join(f"- {f}" for f in failures) or "none"),
        },
    )


def _stage_gate(stage: str) -> dg.AssetChecksDefinition:
    upstream = UPSTREAM.get(stage)

    @dg.asset_check(
        asset=stage,
        name="gate",
        blocking=True,
        partitions_def=drops,
        description="Great Expectations: schema and ids, reconciliation, removal rate"
        + {"pii_redacted": ", residual PII rate and re-scan", "decontaminated": ", zero benchmark overlap",
           "near_deduped": ", duplicate-cluster size"}.get(stage, ""),
    )
    def _check(context: dg.AssetCheckExecutionContext, curation: CurationResource) -> dg.AssetCheckResult:
        drop = context.partition_key
        ws, cfg = curation.ws(), curation.cfg()
        results = stage_gate(ws, cfg, stage, upstream, drop, stage_residue(ws, cfg, stage, drop))
        if stage == "near_deduped":
            results.append(near_dedup_gate(ws, cfg, drop))
        too_many_removed = any("removal_rate" in f for r in results for f in r.failures)
        advice = (filtered_gate_advice(ws, cfg, drop, filter_profile(ws, cfg, drop))
                  if too_many_removed and stage == "filtered" else "")
        return check_result(results, advice)

    return _check


stage_assets = [_stage_asset(stage) for stage in STAGES]
stage_checks = [_stage_gate(stage) for stage in STAGES]
