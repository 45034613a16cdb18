"""The per-drop pipeline: load a stage's input, call its operator, write its output, index and ledger.

This is the one place that knows the stage order and where each stage's data lives. The Dagster assets call
``run_stage`` and nothing else, so the whole pipeline also runs (and is tested) without Dagster.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import polars as pl

from curation_platform.config import CurationConfig
from curation_platform.ledger import ledger_rows
from curation_platform.manifest import load_manifest
from curation_platform.ops import dedup_exact, dedup_minhash
from curation_platform.ops.decontaminate import benchmark_ngram_index, decontaminate, load_benchmarks
from curation_platform.ops.filters import filter_documents
from curation_platform.ops.language import identify_language
from curation_platform.ops.line_dedup import line_dedup
from curation_platform.ops.normalize import normalize
from curation_platform.ops.pii import redact_pii
from curation_platform.ops.quality_signals import quality_signals
from curation_platform.ops.score import score_documents
from curation_platform.ops.url_filter import filter_urls
from curation_platform.readers import read_drop
from curation_platform.errors import CurationError
from curation_platform.ops.dedup_exact import IndexPart
from curation_platform.outofcore import OutOfCore
from curation_platform.records import QUARANTINE, DropInput, ParquetDropInput, StageResult, verdict_frame
from curation_platform.takedown import read_takedowns
from curation_platform.workspace import Workspace, file_lock, write_parquet_atomic

# Scoring runs before dedup so the keep rule that picks each duplicate cluster's representative can use the score.
STAGES: list[str] = [
    "raw_documents",
    "url_filtered",
    "normalized",
    "language",
    "line_deduped",
    "quality_signals",
    "filtered",
    "scored",
    "pii_redacted",
    "exact_deduped",
    "near_deduped",
    "decontaminated",
]
UPSTREAM: dict[str, str] = {stage: STAGES[i - 1] for i, stage in enumerate(STAGES) if i > 0}
# Stages that need the whole drop at once: they get a DropInput (batches, random access) instead of a frame and
# work out of core.
DROP_GLOBAL_STAGES = ("line_deduped", "exact_deduped", "near_deduped")
FINAL_STAGE = STAGES[-1]

STAGE_DESCRIPTIONS: dict[str, str] = {
    "raw_documents": "Parse the drop's files into canonical records; quarantine unreadable records with file, line, reason.",
    "url_filtered": "Domain and URL blocklists (UT1) and banned words in the URL (FineWeb); allow-lists per source.",
    "normalized": "ftfy Unicode repair, NFC, whitespace and control characters, HTML to main-content text.",
    "language": "fastText lid.176 language label and score; allowed languages and minimum score per source.",
    "line_deduped": "Lines repeated across many documents of the corpus (boilerplate) removed; too-short leftovers dropped.",
    "quality_signals": "Gopher, Gopher repetition, C4, FineWeb, code, chat and flagged-word signals as columns, computed once.",
    "filtered": "Threshold rules from curation.yaml applied per document kind; every drop names its rule.",
    "scored": "Quality score per document from the stored signals.",
    "pii_redacted": "Emails, phones, IPs, cards, IBANs, SSNs and secrets replaced by typed placeholders.",
    "exact_deduped": "XXH3-128 of normalized content: exact-duplicate clusters against the index of every other drop.",
    "near_deduped": "MinHash LSH over word 5-grams against the index of every other drop; pairs verified by exact "
                    "Jaccard; clusters recorded for the release to pick representatives.",
    "decontaminated": "Word 13-gram evidence per item of registered benchmarks (HumanEval bundled).",
}


@dataclass
class StageSummary:
    stage: str
    drop: str
    input: int
    kept: int
    dropped: int
    quarantined: int
    per_rule: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    preview: pl.DataFrame | None = None

    @property
    def removal_rate(self) -> float:
        return 0.0 if self.input == 0 else (self.dropped + self.quarantined) / self.input


@functools.lru_cache(maxsize=4)
def _benchmark_index(config_json: str) -> pl.DataFrame:
    cfg = CurationConfig.model_validate_json(config_json).decontamination
    return benchmark_ngram_index(load_benchmarks(cfg), cfg)


def benchmark_index(cfg: CurationConfig) -> pl.DataFrame:
    """The n-gram index of every registered benchmark, built once per process and configuration."""
    return _benchmark_index(cfg.model_dump_json())


def _ingest(ws: Workspace, cfg: CurationConfig, drop: str) -> tuple[pl.DataFrame, StageResult, int]:
    entry = ws.drop(drop)
    drop_dir = Path(entry.path)
    load_manifest(drop_dir, cfg.licenses)  # reject the whole drop early with one clear message
    ingested = read_drop(drop_dir, cfg.ingest, drop=drop)
    quarantine = ingested.quarantine
    write_parquet_atomic(quarantine, ws.quarantine_path(drop))
    verdicts = verdict_frame(
        quarantine.select(
            "doc_id",
            pl.lit(QUARANTINE).alias("verdict"),
            pl.lit("ingest.quarantined").alias("rule"),
            pl.format("{} line {}: {}", pl.col("file"), pl.col("line").cast(pl.String).fill_null("-"),
                      pl.col("reason")).alias("detail"),
        )
    )
    all_ids = pl.concat([ingested.records["doc_id"], quarantine["doc_id"]])
    result = StageResult(kept=ingested.records, verdicts=verdicts, metrics={"read": ingested.read_count})
    return pl.DataFrame({"doc_id": all_ids}), result, ingested.read_count


def _out_of_core(ws: Workspace, cfg: CurationConfig) -> OutOfCore:
    """The ``engine`` settings of the drop-global stages (spilling under the workspace by default)."""
    engine = cfg.engine
    return OutOfCore(batch_rows=engine.batch_rows, memory_limit=engine.memory_limit,
                     spill_dir=engine.spill_dir or str(ws.spill_dir), threads=engine.threads)


def drop_input(ws: Workspace, cfg: CurationConfig, stage: str, drop: str) -> ParquetDropInput:
    """A drop-global stage's input: its upstream stage output, read in batches of ``engine.batch_rows``, with
    the drop's order (a keep-rule key) as a column."""
    path = ws.stage_path(UPSTREAM[stage], drop)
    if not path.exists():
        raise CurationError(f"stage '{UPSTREAM[stage]}' has no output for drop '{drop}' yet ({path}); "
                            "materialize it first")
    return ParquetDropInput(path, drop, cfg.engine.batch_rows,
                            with_columns={"drop_order": pl.lit(ws.drop(drop).order, dtype=pl.Int64)})


def _index_parts(ws: Workspace, index: str, drop: str) -> list[IndexPart]:
    """Every other drop's index file, with the drop and order its entries do not store."""
    return [IndexPart(path, entry.name, entry.order) for path, entry in ws.index_files(index, exclude=drop)]


def _index_content(ws: Workspace, rows: pl.DataFrame) -> pl.DataFrame:
    """Content columns of the listed (doc_id, drop) documents as they entered dedup (a drop's dedup input);
    documents no longer there (their drop was re-curated or removed) are simply absent."""
    frames = []
    for (drop,), group in rows.group_by("drop"):
        path = ws.stage_path(UPSTREAM["exact_deduped"], drop) if drop else None
        if path is None or not path.exists():
            continue
        columns = [c for c in ("doc_id", "text", "messages") if c in pl.read_parquet_schema(path)]
        # Prefiltered: the doc_id column is scanned first, text is decoded only for the few matching rows.
        frames.append(pl.scan_parquet(path, parallel="prefiltered").select(columns)
                      .filter(pl.col("doc_id").is_in(group["doc_id"].implode())).collect())
    if not frames:
        return pl.DataFrame(schema={"doc_id": pl.String, "text": pl.String})
    return pl.concat(frames, how="diagonal_relaxed")


# Both dedup stages record the drop's duplicate clusters against every other drop's index entries (whatever their
# state: the release only acts on pairs whose documents are both curated, so each pair is recorded by whichever of
# its drops ran later) and block the content of taken-down documents. The index files are queried in place.


def _exact_dedup(ws: Workspace, cfg: CurationConfig, drop: str, docs: DropInput) -> StageResult:
    blocked = read_takedowns(ws).select("doc_id", "content_hash")
    result, entries = dedup_exact.exact_duplicates(
        docs, _index_parts(ws, "exact", drop), cfg.exact_dedup, blocked=blocked, ooc=_out_of_core(ws, cfg))
    _write_index(ws, "exact", drop, entries)
    return result


def _near_dedup(ws: Workspace, cfg: CurationConfig, drop: str, docs: DropInput) -> StageResult:
    takedowns = read_takedowns(ws)
    # Taken-down documents stay comparable through their band keys kept in the takedown list.
    removed = takedowns.filter(pl.col("band_keys").is_not_null()).select(
        "doc_id", "drop", "drop_order", "band_keys", "params")
    parts = _index_parts(ws, "near", drop) + ([IndexPart(removed)] if removed.height else [])
    result, entries = dedup_minhash.near_duplicates(
        docs, parts, cfg.near_dedup, index_content=lambda rows: _index_content(ws, rows),
        blocked_ids=takedowns["doc_id"], ooc=_out_of_core(ws, cfg))
    _write_index(ws, "near", drop, entries)
    return result


def _write_index(ws: Workspace, index_name: str, drop: str, entries: pl.DataFrame) -> None:
    # Under the registry lock, so a takedown running now cannot be undone by this write.
    with file_lock(ws.root / "registry" / ".lock"):
        if ws.takedowns_path.exists():  # taken-down documents never re-enter the index
            entries = entries.join(pl.read_parquet(ws.takedowns_path, columns=["doc_id"]), on="doc_id", how="anti")
        # Re-materializing a drop replaces its own entries (idempotent).
        write_parquet_atomic(entries, ws.index_path(index_name, drop))


def _line_dedup(ws: Workspace, cfg: CurationConfig, drop: str, docs: DropInput) -> StageResult:
    order = ws.drop(drop).order
    # Only curated drops count: a stale drop, or one whose gate failed, removes no line from later drops.
    earlier = [ws.index_path("lines", d.name) for d in ws.drops()
               if d.order < order and drop_state(ws, cfg, d.name) == "current"]
    result, entries = line_dedup(docs, earlier, cfg.line_dedup, ooc=_out_of_core(ws, cfg))
    with file_lock(ws.root / "registry" / ".lock"):
        write_parquet_atomic(entries, ws.index_path("lines", drop))
    return result


def filter_profile(ws: Workspace, cfg: CurationConfig, drop: str) -> str | None:
    """The filter profile of a drop: its manifest's ``filter_profile``, else ``filters.sources`` for its source."""
    from curation_platform.errors import CurationError

    drop_dir = Path(ws.drop(drop).path)
    manifest = load_manifest(drop_dir) if (drop_dir / "manifest.yaml").exists() else None
    source = manifest.source if manifest else ""
    try:
        return cfg.filters.profile_for(source, manifest.filter_profile if manifest else None)
    except KeyError as exc:
        raise CurationError(f"drop '{drop}': {exc.args[0]}; fix filter_profile in {drop_dir / 'manifest.yaml'}"
                            ) from None


# The operator behind each stage after ingest: (workspace, config, drop, documents) -> StageResult.
_OPERATORS: dict[str, Callable[[Workspace, CurationConfig, str, pl.DataFrame], StageResult]] = {
    "url_filtered": lambda ws, cfg, drop, docs: filter_urls(docs, cfg.url_filter),
    "normalized": lambda ws, cfg, drop, docs: normalize(docs, cfg.normalize),
    "language": lambda ws, cfg, drop, docs: identify_language(docs, cfg.language),
    "line_deduped": _line_dedup,
    "quality_signals": lambda ws, cfg, drop, docs: quality_signals(docs, cfg.signals),
    "filtered": lambda ws, cfg, drop, docs: filter_documents(docs, cfg.filters, filter_profile(ws, cfg, drop)),
    "scored": lambda ws, cfg, drop, docs: score_documents(docs, cfg.scoring),
    "pii_redacted": lambda ws, cfg, drop, docs: redact_pii(docs, cfg.pii),
    "exact_deduped": _exact_dedup,
    "near_deduped": _near_dedup,
    "decontaminated": lambda ws, cfg, drop, docs: decontaminate(docs, benchmark_index(cfg), cfg.decontamination),
}


def run_stage(ws: Workspace, cfg: CurationConfig, stage: str, drop: str, run_id: str = "local") -> StageSummary:
    """Materialize one stage for one drop: read its input, run the operator, write output and ledger atomically."""
    if stage == "raw_documents":
        input_ids, result, _ = _ingest(ws, cfg, drop)
        input_ids = input_ids["doc_id"]
    elif stage in DROP_GLOBAL_STAGES:
        docs = drop_input(ws, cfg, stage, drop)
        input_ids = docs.scan().select("doc_id").collect()["doc_id"]
        result = _OPERATORS[stage](ws, cfg, drop, docs)
    else:
        docs = ws.read_stage(UPSTREAM[stage], drop)
        input_ids = docs["doc_id"]
        if stage not in _OPERATORS:
            raise KeyError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        result = _OPERATORS[stage](ws, cfg, drop, docs)
    # A drop-global stage returns its documents as batches; until the streaming writer lands they are written
    # as one frame (the stream engineer's run_stage writes them as they come).
    kept = result.kept if isinstance(result.kept, pl.DataFrame) else pl.concat(list(result.kept))
    kept = kept.drop("drop_order", strict=False)
    ledger = ledger_rows(
        stage=stage, drop=drop, input_ids=input_ids, verdicts=result.verdicts, run_id=run_id,
        config_hash=cfg.drop_stages_hash,
    )
    write_parquet_atomic(kept, ws.stage_path(stage, drop))
    write_parquet_atomic(ledger, ws.ledger_path(stage, drop))
    deciding = ledger.filter(pl.col("verdict").is_in(["keep", "drop", "quarantine"]))
    per_rule = (
        deciding.filter(pl.col("verdict") != "keep").group_by("rule").len().sort("rule")
    )
    return StageSummary(
        stage=stage,
        drop=drop,
        input=deciding.height,
        kept=kept.height,
        dropped=int((deciding["verdict"] == "drop").sum()),
        quarantined=int((deciding["verdict"] == "quarantine").sum()),
        per_rule=dict(zip(per_rule["rule"].to_list(), per_rule["len"].to_list())),
        metrics=json.loads(json.dumps(result.metrics, default=str)),
        preview=kept.head(5),
    )


def drop_state(ws: Workspace, cfg: CurationConfig, drop: str) -> str:
    """``current`` when every stage of the drop ran, in order, with this configuration; ``new`` when none ran;
    ``stale`` otherwise (a stage is missing, ran with another configuration, or is older than a stage before it,
    as after a re-ingest whose gate failed). Only current drops go into a release."""
    paths = [ws.ledger_path(stage, drop) for stage in STAGES]
    present = [p.exists() for p in paths]
    if not any(present):
        return "new"
    if not all(present):
        return "stale"
    mtimes = [p.stat().st_mtime_ns for p in paths]
    if any(later < earlier for earlier, later in zip(mtimes, mtimes[1:])):
        return "stale"
    # An empty ledger (every document already removed upstream) carries no hash and does not count.
    hashes = set(pl.concat([pl.read_parquet(p, columns=["config_hash"]) for p in paths])["config_hash"].unique())
    return "current" if hashes <= {cfg.drop_stages_hash} else "stale"
