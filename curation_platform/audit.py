"""What each gate checks, per stage and for the release. ``gates`` runs the suites; this module picks the columns
and aggregates to validate and the bounds from ``curation.yaml``."""

from __future__ import annotations

import polars as pl

from curation_platform.config import CurationConfig
from curation_platform.gates import (
    GateResult, counts_expectations, identity_expectations, max_value_expectation, validate,
)
from curation_platform.ledger import read_ledger
from curation_platform.records import DROP, KEEP, QUARANTINE
from curation_platform.workspace import Workspace

ID_COLUMNS = ["doc_id", "source", "drop", "source_id", "license", "kind"]


def _counts(ws: Workspace, stage: str, upstream: str | None, drop: str, max_removal: float) -> pl.DataFrame:
    ledger = read_ledger(ws, drop).filter(pl.col("verdict").is_in([KEEP, DROP, QUARANTINE]))
    rows = ledger.filter(pl.col("stage") == stage)
    kept = int((rows["verdict"] == KEEP).sum())
    removed = int((rows["verdict"] != KEEP).sum())
    upstream_kept = (
        int(((ledger["stage"] == upstream) & (ledger["verdict"] == KEEP)).sum()) if upstream else rows.height
    )
    output_rows = pl.scan_parquet(ws.stage_path(stage, drop)).select(pl.len()).collect().item()
    return pl.DataFrame({
        "input": [rows.height],
        "accounted": [kept + removed],
        "upstream_kept": [upstream_kept],
        "output_rows": [output_rows],
        "kept": [kept],
        "removal_rate": [removed / rows.height if rows.height else 0.0],
    })


def stage_gate(ws: Workspace, cfg: CurationConfig, stage: str, upstream: str | None, drop: str,
               residual: pl.DataFrame | None = None) -> list[GateResult]:
    """Schema and ids of the stage output, reconciliation and removal rate, plus the stage's own checks on
    ``residual`` (a per-document frame with the columns the stage-specific expectation names)."""
    output = pl.read_parquet(ws.stage_path(stage, drop), columns=ID_COLUMNS)
    results = [validate(f"{stage}.identity", output, identity_expectations(ID_COLUMNS))]
    bound = cfg.gates.max_removal_rate.get(stage, 1.0)
    counts = _counts(ws, stage, upstream, drop, bound)
    import great_expectations as gx

    results.append(validate(
        f"{stage}.reconciliation",
        counts,
        [*counts_expectations(bound), gx.expectations.ExpectColumnPairValuesToBeEqual(column_A="kept", column_B="output_rows")],
    ))
    if residual is not None:
        results.append(validate(f"{stage}.residual", residual,
                                [max_value_expectation(c, 0) for c in residual.columns if c != "doc_id"]))
    return results


def cluster_sizes(ws: Workspace, drop: str) -> pl.DataFrame:
    """Per kept document of the near-dedup stage: itself plus the documents removed as its near duplicates."""
    ledger = read_ledger(ws, drop).filter((pl.col("stage") == "near_deduped") & (pl.col("verdict") == DROP))
    return ledger.group_by("duplicate_of").len().select(
        pl.col("duplicate_of").alias("doc_id"), (pl.col("len") + 1).alias("cluster_size")
    )


def near_dedup_gate(ws: Workspace, cfg: CurationConfig, drop: str) -> GateResult:
    sizes = cluster_sizes(ws, drop)
    if sizes.is_empty():
        sizes = pl.DataFrame({"doc_id": ["-"], "cluster_size": [1]})
    return validate("near_deduped.cluster_size", sizes,
                    [max_value_expectation("cluster_size", cfg.near_dedup.max_cluster_size)])


def release_gate(cfg: CurationConfig, staging_dir, residual: pl.DataFrame) -> list[GateResult]:
    """The audit step of write-audit-publish, over the staged shards: ids, licenses inside the profile, and the
    per-document ``residual`` columns (benchmark overlap, PII) at zero."""
    import great_expectations as gx

    from curation_platform.licenses import license_allowed

    shards = pl.read_parquet(str(staging_dir / "shards" / "*.parquet"), columns=ID_COLUMNS)
    profile = cfg.licenses.profiles[cfg.release.profile]
    allowed = shards.select("doc_id", "license").with_columns(
        license_allowed(shards["license"], profile).cast(pl.Int8).alias("license_allowed")
    )
    return [
        # An empty candidate would replace the previous release with nothing.
        validate("release.identity", shards, [gx.expectations.ExpectTableRowCountToBeBetween(min_value=1),
                                              *identity_expectations(ID_COLUMNS)]),
        validate("release.license_policy", allowed,
                 [gx.expectations.ExpectColumnValuesToBeInSet(column="license_allowed", value_set=[1])]),
        validate("release.residual", residual, [max_value_expectation(c, 0) for c in residual.columns if c != "doc_id"]),
    ]


# Residue each gate re-scans for independently: the stage's own output must leave these at zero.
_RESIDUE_BY_STAGE = {"pii_redacted": ("residual_pii",), "decontaminated": ("benchmark_overlap",)}


def residue(docs: pl.DataFrame, cfg: CurationConfig, checks: tuple[str, ...]) -> pl.DataFrame:
    """Per document (``doc_id``, ``text`` in ``docs``): remaining PII hits and/or benchmark items it still contains
    (re-scanned by ``benchmark_residue``'s own DuckDB implementation, not by the stage's code)."""
    from curation_platform.benchmark_residue import benchmark_items, contaminating_items
    from curation_platform.ops.pii import scan_pii

    columns = {"doc_id": docs["doc_id"]}
    if "residual_pii" in checks:
        columns["residual_pii"] = scan_pii(docs["text"], cfg.pii)["total"].cast(pl.Int64)
    if "benchmark_overlap" in checks:
        columns["benchmark_overlap"] = contaminating_items(
            docs["text"], benchmark_items(cfg.decontamination), cfg.decontamination).cast(pl.Int64)
    return pl.DataFrame(columns, schema={"doc_id": pl.String, **{c: pl.Int64 for c in checks}})


def stage_residue(ws: Workspace, cfg: CurationConfig, stage: str, drop: str) -> pl.DataFrame | None:
    """The residue frame a stage's gate validates, or None for stages without one."""
    checks = _RESIDUE_BY_STAGE.get(stage)
    if checks is None:
        return None
    return residue(pl.read_parquet(ws.stage_path(stage, drop), columns=["doc_id", "text"]), cfg, checks)


def release_residue(cfg: CurationConfig, staging_dir) -> pl.DataFrame:
    """PII and benchmark overlap of every staged shard, one shard's text in memory at a time."""
    checks = ("benchmark_overlap", "residual_pii")
    return pl.concat([
        residue(pl.read_parquet(path, columns=["doc_id", "text"]), cfg, checks)
        for path in sorted((staging_dir / "shards").glob("*.parquet"))
    ])
