"""The release: stage a candidate, audit it with a blocking gate, then publish and version it with DVC."""

from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.progress import notify
from assets.resources import CurationResource, refresh_workspace_catalog
from assets.stages import check_result
from curation_platform.audit import release_gate, release_residue
from curation_platform.ledger import all_stage_counts, rule_counts
from curation_platform.pipeline import FINAL_STAGE, STAGES, drop_state
from curation_platform.release import card_markdown, publish_release, stage_release
from curation_platform.versioning import version_release


@dg.asset(
    deps=[FINAL_STAGE],
    group_name="release",
    description="Write step: select curated documents under the license profile, quotas, mixture, token budget "
    "and synthetic caps, split train/validation, cut shards, write the data card to the staging area.",
    kinds={"parquet"},
)
def release_candidate(context: dg.AssetExecutionContext, curation: CurationResource) -> dg.MaterializeResult:
    ws, cfg = curation.ws(), curation.cfg()
    rules = rule_counts(ws)
    contamination = {r["rule"].split(".", 1)[1]: r["documents"] for r in rules if r["stage"] == "decontaminated"}
    # Only drops whose every stage ran with this configuration; interrupted or failed ones wait.
    current = [d.name for d in ws.drops() if drop_state(ws, cfg, d.name) == "current"]
    for drop in ws.drops():
        if drop.name not in current:
            context.log.warning(f"drop {drop.name} is not fully curated; it is left out of this release")
    staged = stage_release(ws, cfg, FINAL_STAGE, current, all_stage_counts(ws, STAGES), rules, contamination)
    notify("release_candidate", cfg.release.name, staged)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": staged.card["documents"],
            "tokens": staged.card["tokens"],
            "shards": len(staged.shards),
            "selection": dg.MetadataValue.json({k: staged.card["selection"][k] for k in ("domains", "splits", "synthetic")}),
            "staging": dg.MetadataValue.path(str(staged.directory)),
        }
    )


@dg.asset_check(asset=release_candidate, name="gate", blocking=True,
                description="Great Expectations: ids, licenses inside the profile, zero benchmark overlap, zero PII, "
                "synthetic shares within their caps, domains as mapped, token budget, no train/validation leak")
def release_candidate_gate(curation: CurationResource) -> dg.AssetCheckResult:
    ws, cfg = curation.ws(), curation.cfg()
    staging = ws.staging_dir(cfg.release.name)
    return check_result(release_gate(cfg, staging, release_residue(cfg, staging)))


@dg.asset(
    deps=[release_candidate],
    group_name="release",
    description="Publish step: move the audited candidate into the releases folder under its name and version it with DVC.",
    kinds={"dvc"},
)
def release(context: dg.AssetExecutionContext, curation: CurationResource,
            duckdb: DuckDBResource) -> dg.MaterializeResult:
    ws, cfg = curation.ws(), curation.cfg()
    target = publish_release(ws, cfg.release.name, context.run_id, cfg.hash)
    import json

    from curation_platform.plots import data_uri

    card_json = json.loads((target / "data_card.json").read_text(encoding="utf-8"))
    # The UI shows the card with its plots embedded (no file to serve) and without the Hugging Face YAML header.
    plots = {Path(p).stem: data_uri((target / p).read_bytes()) for p in card_json.get("plots", [])}
    card = card_markdown(card_json, plots, front_matter=False)
    version = {}
    if cfg.versioning.enabled:
        meta = {
            "profile": card_json["profile"],
            "documents": card_json["documents"],
            "tokens": card_json["tokens"],
            "config_hash": card_json["config_hash"],
            "code_version": card_json["code_version"],
            "licenses": card_json["licenses"],
            "generators": card_json["generators"],
            "sources": [{k: s[k] for k in ("source", "drop", "license", "documents", "provenance")}
                        for s in card_json["sources"]],
        }
        version = version_release(target, meta, cfg.versioning, ws.root)
    refresh_workspace_catalog(duckdb, ws)
    notify("release", cfg.release.name, {"path": str(target), **version})
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": card_json["documents"],
            "tokens": card_json["tokens"],
            "path": dg.MetadataValue.path(str(target)),
            "data_card": dg.MetadataValue.md(card),
            "data_card_json": dg.MetadataValue.json(card_json),
            "sources": len({s["source"] for s in card_json["sources"]}),
            "drops_released": sum(1 for d in card_json.get("per_drop", []) if d["released"]),
            "dvc": dg.MetadataValue.json(version),
        }
    )
