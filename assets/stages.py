"""One partitioned asset and one blocking gate per per-drop stage, built from the engine's stage list."""



import warnings

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.partitions import drops
from assets.progress import notify
from assets.resources import CurationRay, CurationResource, refresh_workspace_catalog
from curation_platform.advice import filtered_gate_advice
from curation_platform.audit import near_dedup_gate, stage_gate, stage_residue
from curation_platform.gates import GateResult
from curation_platform.pipeline import (FINAL_STAGE, RAY_STAGES, STAGE_DESCRIPTIONS, STAGES, UPSTREAM, filter_profile,
                                         run_stage)
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
            + {"pii_redacted": ", residual PII rate and re-scan", "decontaminated": ", zero benchmark overlap",
               "near_deduped": ", duplicate-cluster size", "scored": ", scores in [0, 1] above min_score"}.get(stage, ""),
        )


def _gate(ws, cfg, stage: str, drop: str) -> dg.AssetCheckResult:
    results = stage_gate(ws, cfg, stage, UPSTREAM.get(stage), drop, stage_residue(ws, cfg, stage, drop))
    if stage == "near_deduped":
        results.append(near_dedup_gate(ws, cfg, drop))
    # A first drop that the filters empty gets advice in the user's words (rules, whatif, profile).
    too_many_removed = stage == "filtered" and any("removal_rate" in f for r in results for f in r.failures)
    advice = filtered_gate_advice(ws, cfg, drop, filter_profile(ws, cfg, drop)) if too_many_removed else ""
    return check_result(results, advice)


def _stage_asset(stage: str) -> dg.AssetsDefinition:
    upstream = UPSTREAM.get(stage)

    # The gate runs in the asset's own step (a blocking check spec): one Dagster step per stage instead of two
    # halves the per-drop orchestration cost, and a failed gate still stops every asset below it.
    asset = dg.asset(
        name=stage,
        partitions_def=drops,
        deps=[upstream] if upstream else [],
        group_name=GROUPS[stage],
        description=STAGE_DESCRIPTIONS[stage],
        kinds={"polars", "parquet"},
        check_specs=[_gate_spec(stage)],
    )
    if stage in RAY_STAGES:
        # The `ray` resource (dagster-ray) starts or connects Ray for the step when engine.executor is ray.
        @asset
        def _ray_asset(context: dg.AssetExecutionContext, curation: CurationResource, duckdb: DuckDBResource,
                       ray: CurationRay) -> dg.MaterializeResult:
            return _materialize(context, curation, duckdb)

        return _ray_asset

    @asset
    def _asset(context: dg.AssetExecutionContext, curation: CurationResource,
               duckdb: DuckDBResource) -> dg.MaterializeResult:
        return _materialize(context, curation, duckdb)

    return _asset


def _materialize(context: dg.AssetExecutionContext, curation: CurationResource,
                 duckdb: DuckDBResource) -> dg.MaterializeResult:
    """Run the stage for the partition's drop, gate it, and report counts and metrics as asset metadata."""
    stage = context.asset_key.to_user_string()
    ws, cfg, drop = curation.ws(), curation.cfg(), context.partition_key
    summary = run_stage(ws, cfg, stage, drop, context.run_id)
    gate = _gate(ws, cfg, stage, drop)
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
            **(_profile_metadata(ws, cfg, drop) if stage == FINAL_STAGE else {}),
        },
        check_results=[gate],
    )


def _profile_metadata(ws, cfg, drop: str) -> dict[str, object]:
    """The drop's profile on its final asset: Markdown with the plots embedded, and the headline numbers."""
    from curation_platform.plots import data_uri
    from curation_platform.profile import profile_dir, profile_markdown, write_drop_profile

    profile = write_drop_profile(ws, FINAL_STAGE, STAGES, drop, cfg.release.tokenizer, cfg.formatting)
    data, dist = profile.data, profile.data["distributions"]
    numbers = {
        "tokens": data["tokens"],
        "characters": data["characters"],
        "median_characters": dist["characters"].get("p50"),
        "median_tokens": dist["tokens"].get("p50"),
        "mean_quality_score": dist["quality_score"].get("mean"),
        "chat_conflicting_prompts": data["chat_conflicts"]["prompts"],
    }
    images = {name: data_uri(png) for name, png in profile.plots.items()}
    return {
        "profile": dg.MetadataValue.md(profile_markdown(data, images)),
        **{k: v for k, v in numbers.items() if v is not None},
        "profile_path": dg.MetadataValue.path(str(profile_dir(ws, drop))),
    }


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


stage_assets = [_stage_asset(stage) for stage in STAGES]
