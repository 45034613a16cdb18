"""The ledger: every verdict on every document, and the questions users ask of it.

One Parquet file per stage and drop (``ledger/<stage>/<drop>.parquet``). Every document that enters a stage has
exactly one deciding row there (``keep``, ``drop`` or ``quarantine``), plus optional annotation rows (``redact``,
``flag``). So for every drop and stage: documents in = kept + dropped + quarantined, and one stage's kept
documents are the next stage's input. ``reconcile`` proves both.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from curation_platform.records import DROP, KEEP, QUARANTINE, VERDICT_SCHEMA, verdict_frame
from curation_platform.workspace import Workspace, write_text_atomic

# Where and when a verdict was given, then the verdict itself (the operators' VERDICT_SCHEMA).
LEDGER_SCHEMA: dict[str, pl.DataType] = {
    "drop": pl.String,
    "stage": pl.String,
    **VERDICT_SCHEMA,
    "run_id": pl.String,
    "config_hash": pl.String,
}

DECIDING = (KEEP, DROP, QUARANTINE)


def ledger_rows(
    *, stage: str, drop: str, input_ids: pl.Series, verdicts: pl.DataFrame, run_id: str, config_hash: str
) -> pl.DataFrame:
    """Verdict rows of one stage on one drop, completed with a ``keep`` row for every document not removed."""
    # Verdict rows in the input's row order (a stable sort: a document's own rows keep their order), so the ledger
    # is the same whether the operator saw the drop whole or batch by batch, in this process or on Ray workers.
    position = pl.DataFrame({"doc_id": input_ids}).with_row_index("_position").unique(
        "doc_id", keep="first", maintain_order=True)
    verdicts = (verdict_frame(verdicts).join(position, on="doc_id", how="left", maintain_order="left")
                .sort("_position", nulls_last=True, maintain_order=True).drop("_position"))
    removed = verdicts.filter(pl.col("verdict").is_in([DROP, QUARANTINE]))["doc_id"]
    keeps = verdict_frame(
        pl.DataFrame({"doc_id": input_ids}).filter(~pl.col("doc_id").is_in(removed.implode())).with_columns(
            verdict=pl.lit(KEEP)
        )
    )
    return pl.concat([verdicts, keeps]).with_columns(
        pl.lit(drop).alias("drop"),
        pl.lit(stage).alias("stage"),
        pl.lit(run_id).alias("run_id"),
        pl.lit(config_hash).alias("config_hash"),
    ).select(list(LEDGER_SCHEMA))


def _ledger_files(ws: Workspace, drop: str | None = None, stage: str | None = None) -> list[Path]:
    """The per-drop stages' ledger files (not the releases'), in path order."""
    return sorted(
        f for f in (ws.lake / "ledger").glob(f"{stage or '*'}/{drop or '*'}.parquet") if f.parent.name != "release"
    )


def read_ledger(ws: Workspace, drop: str | None = None, release: str | None = None,
                stage: str | None = None) -> pl.DataFrame:
    """Ledger rows of the per-drop stages (or one ``stage``) of one drop or all drops, plus one release's verdicts
    if named."""
    files = _ledger_files(ws, drop, stage)
    if release is not None and ws.release_ledger_path(release).exists():
        files.append(ws.release_ledger_path(release))
    if not files:
        return pl.DataFrame(schema=LEDGER_SCHEMA)
    # Diagonal: ledgers written before a column was added read with that column null.
    return pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")


def ledger_summary(ws: Workspace, drop: str, files: list[Path] | None = None) -> dict[str, dict]:
    """Per stage of the drop's ledger: the configuration hashes it ran with, its deciding counts (``input``,
    ``kept``, ``dropped``, ``quarantined``, ``distinct_docs``) and its removals per rule (``[rule, documents]``).

    Read from the ledger files once per version of them and cached in ``cache/ledger/<drop>.json``, keyed by each
    file's size and modification time: `curate run`, `curate status` and every release look at each drop of the
    history, and reading all its ledgers each time made them grow with the history (a run with nothing to do took
    3.5 s at 40 tiny drops against 1.5 s at 2). ``files``: the drop's ledger files, when the caller listed them."""
    files = _ledger_files(ws, drop) if files is None else files
    stamp = {f.parent.name: [stat.st_mtime_ns, stat.st_size] for f in files for stat in (f.stat(),)}
    cache = ws.cache_path("ledger", drop).with_suffix(".json")
    if cache.exists():
        try:
            stored = json.loads(cache.read_text())
        except ValueError:  # a damaged cache is rebuilt
            stored = {}
        if stored.get("stamp") == stamp:
            return stored["stages"]
    stages = {}
    for f in files:
        rows = pl.read_parquet(f, columns=["doc_id", "verdict", "rule", "config_hash"])
        counts = rows.filter(pl.col("verdict").is_in(DECIDING)).select(
            pl.len().alias("input"),
            *((pl.col("verdict") == verdict).sum().alias(name)
              for name, verdict in (("kept", KEEP), ("dropped", DROP), ("quarantined", QUARANTINE))),
            pl.col("doc_id").n_unique().alias("distinct_docs"),
        ).row(0, named=True)
        removed = rows.filter(pl.col("verdict").is_in([DROP, QUARANTINE])).group_by("rule").len().sort("rule")
        stages[f.parent.name] = {
            "hashes": sorted(rows["config_hash"].unique().to_list(), key=str), **counts,
            "removed_by_rule": [list(row) for row in removed.iter_rows()],
        }
    write_text_atomic(json.dumps({"stamp": stamp, "stages": stages}, sort_keys=True), cache)
    return stages


_COUNTS = ["input", "kept", "dropped", "quarantined"]


def stage_counts(ws: Workspace, drop: str, stages: list[str]) -> pl.DataFrame:
    """Per stage: documents in, kept, dropped, quarantined (deciding rows only), in pipeline order."""
    summary = ledger_summary(ws, drop)
    rows = [{"stage": s, **{c: summary[s][c] for c in [*_COUNTS, "distinct_docs"]}}
            for s in stages if s in summary and summary[s]["input"]]
    return pl.DataFrame(rows, schema={"stage": pl.String, **{c: pl.UInt32 for c in [*_COUNTS, "distinct_docs"]}})


def _summaries(ws: Workspace) -> list[dict[str, dict]]:
    """``ledger_summary`` of every drop with a ledger (the ledger folder listed once)."""
    by_drop: dict[str, list[Path]] = {}
    for f in _ledger_files(ws):
        by_drop.setdefault(f.stem, []).append(f)
    return [ledger_summary(ws, drop, files) for drop, files in sorted(by_drop.items())]


def reconcile(ws: Workspace, drop: str, stages: list[str], read_count: int | None = None) -> list[str]:
    """Problems with the drop's counts (an empty list means they reconcile).

    Checks: each document has exactly one deciding row per stage it entered; input = kept + dropped +
    quarantined; a stage's input is exactly the previous stage's kept set; and the first stage saw
    ``read_count`` records when given.
    """
    problems: list[str] = []
    ledger = read_ledger(ws, drop).filter(pl.col("verdict").is_in(DECIDING))
    previous_kept: pl.Series | None = None
    for stage in stages:
        rows = ledger.filter(pl.col("stage") == stage)
        if rows.is_empty() and previous_kept is None:
            break
        if rows.height != rows["doc_id"].n_unique():
            problems.append(f"{drop}/{stage}: some documents have more than one deciding verdict")
        if previous_kept is not None:
            entered = set(rows["doc_id"].to_list())
            expected = set(previous_kept.to_list())
            if entered != expected:
                problems.append(
                    f"{drop}/{stage}: {len(expected - entered)} documents kept upstream never reached this stage, "
                    f"{len(entered - expected)} appeared from nowhere"
                )
        previous_kept = rows.filter(pl.col("verdict") == KEEP)["doc_id"]
    first = ledger.filter(pl.col("stage") == stages[0])
    if read_count is not None and first.height != read_count:
        problems.append(f"{drop}: read {read_count} records but the ledger accounts for {first.height}")
    return problems


def document_status(
    ws: Workspace, stages: list[str], release: str | None = None, release_shards: pl.DataFrame | None = None
) -> pl.DataFrame:
    """One row per input record of every drop: its final status and the stage and rule that decided it.

    ``release_shards`` (doc_id, release_shard) marks released documents; release-stage verdicts (license policy,
    budget) are read from the ledger's ``release`` stage.
    """
    ledger = read_ledger(ws, release=release)
    if ledger.is_empty():
        return pl.DataFrame()
    position = {s: i for i, s in enumerate([*stages, "release", "takedown"])}
    deciding = ledger.filter(pl.col("verdict").is_in([DROP, QUARANTINE])).with_columns(
        pl.col("stage").replace_strict(position, default=len(position)).alias("position")
    )
    first_removal = deciding.sort("position", "rule").group_by("doc_id", maintain_order=True).first()
    entered = (
        ledger.filter(pl.col("stage") == stages[0])
        .select("doc_id", "drop")
        .unique(subset="doc_id", keep="first", maintain_order=True)
    )
    status = entered.join(
        first_removal.select("doc_id", "verdict", "stage", "rule", "detail", "duplicate_of", "cluster_id", "value",
                            "threshold"),
        on="doc_id",
        how="left",
    ).with_columns(
        pl.when(pl.col("verdict") == QUARANTINE)
        .then(pl.lit("quarantined"))
        .when(pl.col("verdict") == DROP)
        .then(pl.lit("dropped"))
        .otherwise(pl.lit("kept"))
        .alias("status")
    ).drop("verdict")
    if release_shards is not None and not release_shards.is_empty():
        status = status.join(release_shards.select("doc_id", "release_shard"), on="doc_id", how="left")
    else:
        status = status.with_columns(pl.lit(None, dtype=pl.String).alias("release_shard"))
    return status


def export_parquet(frame: pl.DataFrame, out: Path) -> Path:
    from curation_platform.workspace import write_parquet_atomic

    return write_parquet_atomic(frame, Path(out))


def rule_counts(ws: Workspace) -> list[dict]:
    """Documents removed per (stage, rule) over every drop, for the data card."""
    totals: dict[tuple[str, str], int] = {}
    for summary in _summaries(ws):
        for stage, entry in summary.items():
            for rule, documents in entry["removed_by_rule"]:
                totals[(stage, rule)] = totals.get((stage, rule), 0) + documents
    ordered = sorted(totals.items(), key=lambda item: (item[0][0], item[0][1] or ""))
    return [{"stage": s, "rule": r, "documents": n} for (s, r), n in ordered]


def all_stage_counts(ws: Workspace, stages: list[str]) -> list[dict]:
    """Input, kept, dropped, quarantined per stage summed over every drop, in pipeline order."""
    summaries = _summaries(ws)
    totals = {s: {c: sum(m[s][c] for m in summaries if s in m) for c in _COUNTS} for s in stages}
    return [{"stage": s, **totals[s]} for s in stages if totals[s]["input"]]
