"""Answers to "what happened to this document?": one record's journey, and one row per input record."""

from __future__ import annotations

import json

import polars as pl

from curation_platform.errors import CurationError
from curation_platform.ledger import document_status
from curation_platform.pipeline import STAGES
from curation_platform.workspace import Workspace

_RECORD_COLUMNS = ["doc_id", "source_id", "drop", "source", "license", "kind", "file", "line", "provenance"]


def _stage_columns(ws: Workspace, stage: str, columns: list[str], where: pl.Expr | None = None) -> pl.DataFrame:
    return ws.read_stage_columns(stage, columns, where=where,
                                 empty={c: pl.String if c == "doc_id" else pl.Float64 for c in columns})


def _records(ws: Workspace, doc_ids: list[str] | None = None) -> pl.DataFrame:
    """Identity columns of every input record, read or quarantined; only those of ``doc_ids`` if given (filtered
    in the scans, so explaining one document does not load every record of the history)."""
    where = None if doc_ids is None else pl.col("doc_id").is_in(pl.Series(doc_ids, dtype=pl.String).implode())
    parts = [_stage_columns(ws, "raw_documents", _RECORD_COLUMNS, where)] if ws.stage_drops("raw_documents") else []
    quarantine = sorted((ws.lake / "quarantine").glob("*.parquet"))
    if quarantine:
        scans = [pl.scan_parquet(f) for f in quarantine]
        q = pl.concat([(s if where is None else s.filter(where)).collect() for s in scans], how="vertical_relaxed")
        parts.append(q.select([c for c in _RECORD_COLUMNS if c in q.columns]))
    return pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame()


def record_table(ws: Workspace, release: str | None) -> pl.DataFrame:
    """One row per input record of every drop: status, deciding stage and rule, duplicate_of, language, quality
    score and release shard (the public `curate ledger export` shape)."""
    shards = release_shard_index(ws, release)
    status = document_status(ws, STAGES, release=release, release_shards=shards)
    if status.is_empty():
        return status
    records = _records(ws).drop("drop", strict=False)
    language = _stage_columns(ws, "language", ["doc_id", "language", "language_score"])
    scores = _stage_columns(ws, "scored", ["doc_id", "quality_score"])
    table = (
        status.join(records, on="doc_id", how="left")
        .join(language, on="doc_id", how="left")
        .join(scores, on="doc_id", how="left")
    )
    columns = ["doc_id", "source_id", "drop", "source", "license", "kind", "status", "stage", "rule", "detail",
               "duplicate_of", "cluster_id", "value", "threshold", "language", "language_score", "quality_score",
               "release_shard", "file", "line"]
    return table.select([c for c in columns if c in table.columns])


def release_shard_index(ws: Workspace, release: str | None) -> pl.DataFrame:
    if release is None or not (ws.release_dir(release) / "shard_index.parquet").exists():
        return pl.DataFrame(schema={"doc_id": pl.String, "release_shard": pl.String})
    return pl.read_parquet(ws.release_dir(release) / "shard_index.parquet").with_columns(
        pl.format("{}/shards/{}", pl.lit(release), pl.col("release_shard")).alias("release_shard")
    )


def all_release_shards(ws: Workspace) -> pl.DataFrame:
    """(doc_id, release_shard) for every published release in the workspace."""
    releases = [name for name in ws.release_names() if (ws.release_dir(name) / "shard_index.parquet").exists()]
    frames = [release_shard_index(ws, name) for name in releases]
    return pl.concat(frames) if frames else release_shard_index(ws, None)


def _represented(ws: Workspace, doc_id: str) -> list[str]:
    """Per release: the copies this document was chosen over (it represents their duplicate cluster there)."""
    lines = []
    for path in sorted((ws.lake / "ledger" / "release").glob("*.parquet")):
        rows = (pl.scan_parquet(path).filter((pl.col("duplicate_of") == doc_id) & (pl.col("verdict") == "drop"))
                .select("doc_id", "rule", "detail").collect().sort("doc_id"))
        for row in rows.iter_rows(named=True):
            lines.append(f"  represents its cluster in release {path.stem} over {row['doc_id']} ({row['rule']}): "
                         f"{row['detail']}")
    return lines


def resolve_doc_id(ws: Workspace, doc_id: str) -> str:
    """The full doc_id that ``doc_id`` names: itself, or the one ledger id it is a unique prefix of (the short ids
    ``curate whatif`` prints). Raises CurationError when there is no ledger, no match, or several matches."""
    ledger_files = sorted((ws.lake / "ledger").glob("*/*.parquet"))
    if not ledger_files:
        raise CurationError(f"no ledger in {ws.root}: run `curate run` first")
    matches = (
        pl.scan_parquet([str(f) for f in ledger_files], missing_columns="insert", extra_columns="ignore")
        .select("doc_id").filter(pl.col("doc_id").str.starts_with(doc_id)).unique().sort("doc_id")
        .collect()["doc_id"].to_list()
    )
    if doc_id in matches:
        return doc_id
    if not matches:
        raise CurationError(f"document {doc_id} is not in the ledger of {ws.root} (no doc_id starts with it)")
    if len(matches) > 1:
        raise CurationError(f"{doc_id} is the start of {len(matches)} doc_ids ({', '.join(matches[:5])}"
                            f"{', ...' if len(matches) > 5 else ''}); give more characters")
    return matches[0]


def document_journey(ws: Workspace, doc_id: str, shards: pl.DataFrame | None = None) -> str:
    """Readable account of one document: identity, every stage's verdict with rule, value and threshold,
    what it duplicates, and which release shards hold it."""
    ledger_files = sorted((ws.lake / "ledger").glob("*/*.parquet"))
    if not ledger_files:
        return f"no ledger in {ws.root}: run `curate run` first"
    rows = (
        pl.scan_parquet([str(f) for f in ledger_files], missing_columns="insert", extra_columns="ignore",
                        include_file_paths="_path")
        .filter(pl.col("doc_id") == doc_id)
        .collect()
    )
    # Release rows name their release (ledger/release/<name>.parquet), so several releases read apart.
    rows = rows.with_columns(
        pl.when(pl.col("stage") == "release")
        .then(pl.format("release {}", pl.col("_path").str.extract(r"([^/\\]+)\.parquet$")))
        .otherwise(pl.col("stage")).alias("_label")
    )
    if rows.is_empty():
        return f"document {doc_id} is not in the ledger of {ws.root}"
    order = {s: i for i, s in enumerate([*STAGES, "release", "takedown"])}
    rows = rows.with_columns(pl.col("stage").replace_strict(order, default=99).alias("_o")).sort("_o", "verdict")
    records = _records(ws, [doc_id])
    lines = [f"document {doc_id}"]
    if records.height:
        r = records.row(0, named=True)
        where = f"{r['file']}" + (f" line {r['line']}" if r.get("line") is not None else "")
        lines += [
            f"  source      {r['source']} (drop {r.get('drop') or rows['drop'][0]}"
            + (f", kind {r['kind']})" if r.get("kind") else ")"),
            f"  source_id   {r['source_id']}  ({where})",
            f"  license     {r['license']}",
        ]
        if r.get("provenance"):
            prov = json.loads(r["provenance"])
            lines.append(f"  provenance  {prov.get('url') or prov.get('description', '')} "
                         f"(collected {prov.get('collected_at', '?')})")
    lines.append("  journey:")
    for row in rows.iter_rows(named=True):
        text = f"    {row['_label']:<16} {row['verdict']:<10}"
        if row["rule"]:
            text += f" {row['rule']}"
        if row["value"] is not None:
            text += f" value={row['value']:g}"
        if row["threshold"]:
            text += f" ({row['threshold']})"
        detail = row["detail"] if row["detail"] and row["verdict"] != "keep" else ""
        # Name the original once, and the cluster only when it is not the original itself.
        if row["duplicate_of"] and row["duplicate_of"] not in detail:
            text += f" duplicate of {row['duplicate_of']}"
        if row.get("cluster_id") and row["cluster_id"] not in text + detail:
            text += f" (cluster {row['cluster_id']})"
        if detail:
            text += f" - {detail}"
        lines.append(text.rstrip())
    originals = [d for d in rows["duplicate_of"].drop_nulls().unique().to_list()]
    if originals:
        known = _records(ws, originals)
        for r in known.iter_rows(named=True):
            lines.append(f"  original    {r['source']} / {r['drop']} / {r['source_id']} ({r['license']})"
                         + (f" [{r['doc_id']}]" if len(originals) > 1 else ""))
    lines += _represented(ws, doc_id)
    shards = all_release_shards(ws) if shards is None else shards
    held = shards.filter(pl.col("doc_id") == doc_id)["release_shard"].to_list()
    lines.append(f"  released in {', '.join(held)}" if held else "  not in any release")
    return "\n".join(lines)
