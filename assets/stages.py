"""One partitioned asset and one blocking gate per per-drop stage, built from the engine's stage list."""



import warnings

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.partitions import drops
from assets.progress import notify
from assets.resources import CurationResource, refresh_workspace_catalog
from curation_platform.audit import near_dedup_gate, stage_gate, stage_residue
from curation_platform.gates import GateResult
from curation_platform.pipeline import STAGE_DESCRIPTIONS, STAGES, UPSTREAM, run_stage
from curation_platform.reporting import markdown_table

GROUPS = {
    "raw_documents": "ingest",
    "normalized": "curate",
    "language": "curate",
    "quality_signals": "curate",
    "filtered": "curate",
    "scored": "curate",
    "pii_redacted": "safety",
    # Decontamination is deduplication against benchmarks; grouping it here keeps the group graph a chain.
    "exact_deduped": "dedup",
    "near_deduped": "dedup",
    "decontaminated": "dedup",
}


def _gate_spec(stage: str) -> dg.AssetCheckSpec:
    with warnings.catch_warnings():
        # A per-partition check spec is a Dagster preview feature; the notice is for us, not for `curate` users.
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            name="gate",
            asset=stage,
            blocking=True,
            partitions_def=drops,
            description="Great Expectations: schema and ids, reconciliation, removal rate"
            + {"pii_redacted": ", zero residual PII", "decontaminated": ", zero benchmark overlap",
               "near_deduped": ", duplicate-cluster size"}.get(stage, ""),
        )


def _gate(ws, cfg, stage: str, drop: str) -> list[GateResult]:
    results = stage_gate(ws, cfg, stage, UPSTREAM.get(stage), drop, stage_residue(ws, cfg, stage, drop))
    if stage == "near_deduped":
        results.append(near_dedup_gate(ws, cfg, drop))
    return results


def _stage_asset(stage: str) -> dg.AssetsDefinition:
    upstream = UPSTREAM.get(stage)

    # The gate runs in the asset's own step (a blocking check spec): one Dagster step per stage instead of two
    # halves the per-drop orchestration cost, and a failed gate still stops every asset below it.
    @dg.asset(
        name=stage,
        partitions_def=drops,
        deps=[upstream] if upstream else [],
        group_name=GROUPS[stage],
        description=STAGE_DESCRIPTIONS[stage],
        kinds={"polars", "parquet"},
        check_specs=[_gate_spec(stage)],
    )
    def _asset(context: dg.AssetExecutionContext, curation: CurationResource,
               duckdb: DuckDBResource) -> dg.MaterializeResult:
        ws, cfg, drop = curation.ws(), curation.cfg(), context.partition_key
        summary = run_stage(ws, cfg, stage, drop, context.run_id)
        gate = check_result(_gate(ws, cfg, stage, drop))
        refresh_workspace_catalog(duckdb, ws)
        notify(stage, drop, summary)
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
                "path": dg.MetadataValue.path(str(ws.stage_path(stage, drop))),
            },
            check_results=[gate],
        )

    return _asset


def check_result(results: list[GateResult]) -> dg.AssetCheckResult:
    failures = [f"{r.name}: {f}" for r in results for f in r.failures]
    return dg.AssetCheckResult(
        passed=not failures,
        description="; ".join(failures) if failures else f"{len(results)} suites passed",
        metadata={
            "suites": dg.MetadataValue.json({r.name: {"passed": r.passed, **r.checked} for r in results}),
            "failures": dg.MetadataValue.md("\n".join(f"- {f}" for f in failures) or "none"),
        },
    )


stage_assets = [_stage_asset(stage) for stage in STAGES]
