"""The per-drop pipeline: stream a stage's input, call its operator, write its output, index and ledger.

This is the one place that knows the stage order and where each stage's data lives. The Dagster assets call
``run_stage`` and nothing else, so the whole pipeline also runs (and is tested) without Dagster.

Streaming: a per-document stage reads its input in batches of ``engine.batch_rows`` documents
(``Workspace.iter_stage``), calls its operator once per batch and appends the kept rows and ledger rows to
streaming Parquet writers, so peak memory is set by the batch size, not by the drop. With the local executor the
batches of the Python-heavy stages run in a pool of worker processes, one per core (``executors/local.py``), and
come back in input order. A drop-global stage (line, exact and near dedup) gets a ``DropInput`` over its input
instead; its verdicts are put in input order out of core (spilled with the input's doc_ids, sorted by DuckDB) and
its ledger is written batch by batch too. Outputs do not depend on the batching: files are written in fixed row
groups, and ledger rows are in input order (each document's verdict rows, then its ``keep``). Batch metrics are
merged with ``merge_metrics``: counts are summed, per-document statistics (means, medians, quantiles, rates) become
the mean over batches weighted by batch size (exact for means and rates, an approximation for medians and
quantiles), and anything else keeps its first value.
"""

from __future__ import annotations

import functools
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import polars as pl

from curation_platform.config import CurationConfig
from curation_platform.ledger import ledger_rows, ledger_summary
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
from curation_platform.selection import domain_expr
from curation_platform.ops.url_filter import filter_urls
from curation_platform.readers import read_drop_batches
from curation_platform.records import (DROP, KEEP, QUARANTINE, VERDICT_SCHEMA, DropInput, StageResult,
                                       merge_metrics, verdict_frame)
from curation_platform.storage import as_path
from curation_platform.ops.verify_code import verify_code
from curation_platform.ops.dedup_exact import IndexPart
from curation_platform.outofcore import OutOfCore, SpillWriter, duckdb_connection, spill_folder, sql_path
from curation_platform.takedown import read_takedowns
from curation_platform.workspace import (DECIDES_ON_KEY, ParquetStreamWriter, Workspace, file_lock,
                                         iter_parquet)

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
FINAL_STAGE = STAGES[-1]
# Stages that change text store full rows; every other stage stores doc_id plus the columns it adds (decontaminated
# too, unless its mode is `cut`). Readers compose full rows with Workspace.scan_stage.
TEXT_STAGES = frozenset({"raw_documents", "normalized", "line_deduped", "pii_redacted"})
# Stages that need the whole drop (a global view): they get a DropInput, not batches.
DROP_GLOBAL_STAGES = frozenset({"line_deduped", "exact_deduped", "near_deduped"})


def stores_rows(stage: str, cfg: CurationConfig) -> bool:
    """True when ``stage`` writes full rows (it changes text), False when it writes only its decisions."""
    return stage in TEXT_STAGES or (stage == "decontaminated" and cfg.decontamination.mode == "cut")

STAGE_DESCRIPTIONS: dict[str, str] = {
    "raw_documents": "Parse the drop's files into canonical records; quarantine unreadable records with file, line, reason.",
    "url_filtered": "Domain and URL blocklists (UT1) and banned words in the URL (FineWeb); allow-lists per source.",
    "normalized": "ftfy Unicode repair, NFC, whitespace and control characters, HTML to main-content text.",
    "language": "fastText lid.176 language label and score; allowed languages and minimum score per source.",
    "line_deduped": "Lines repeated across many documents of the corpus (boilerplate) removed; too-short leftovers dropped.",
    "quality_signals": "Gopher, Gopher repetition, C4, FineWeb, code, chat and flagged-word signals as columns, computed once.",
    "filtered": "Threshold rules from curation.yaml applied per document kind; every drop names its rule; generated "
                "code with tests run against them in a sandbox.",
    "scored": "Quality score per document (a trained classifier when scoring.model is set, else the heuristic blend); "
              "selection by min_score or top fraction per drop, source or domain.",
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


def _ingest(ws: Workspace, cfg: CurationConfig, drop: str) -> Iterator[tuple[pl.Series, StageResult]]:
    """The drop's records in batches of ``engine.batch_rows`` input records: (input doc_ids in input order, result
    with the records kept and a quarantine verdict per rejected record); the quarantine file is streamed too."""
    entry = ws.drop(drop)
    drop_dir = as_path(entry.path)  # a folder, or a prefix in object storage
    load_manifest(drop_dir, cfg.licenses)  # reject the whole drop early with one clear message
    with ParquetStreamWriter(ws.quarantine_path(drop)) as quarantine_out:
        for batch in read_drop_batches(drop_dir, cfg.ingest, drop=drop, batch_rows=cfg.engine.batch_rows,
                                       workers=_ingest_workers(cfg)):
            quarantine = batch.quarantine
            quarantine_out.write(quarantine)
            verdicts = verdict_frame(
                quarantine.select(
                    "doc_id",
                    pl.lit(QUARANTINE).alias("verdict"),
                    pl.lit("ingest.quarantined").alias("rule"),
                    pl.format("{} line {}: {}", pl.col("file"), pl.col("line").cast(pl.String).fill_null("-"),
                              pl.col("reason")).alias("detail"),
                )
            )
            yield batch.input_ids, StageResult(kept=batch.records, verdicts=verdicts,
                                               metrics={"read": batch.read_count})


def _ingest_workers(cfg: CurationConfig) -> int:
    """Worker processes that decide ingest's batches: the local executor's (ingest runs in this process with Ray)."""
    if cfg.engine.executor != "local":
        return 1
    from curation_platform.executors import local as local_executor

    return local_executor.worker_count(cfg.engine)


def _out_of_core(ws: Workspace, cfg: CurationConfig) -> OutOfCore:
    """The ``engine`` settings of the drop-global stages (spilling under the workspace by default)."""
    engine = cfg.engine
    return OutOfCore(batch_rows=engine.batch_rows, memory_limit=engine.memory_limit,
                     spill_dir=engine.spill_dir or str(ws.spill_dir), threads=engine.threads)


def _index_parts(ws: Workspace, index: str, drop: str) -> list[IndexPart]:
    """Every other drop's index file, with the drop and order its entries do not store."""
    return [IndexPart(path, entry.name, entry.order) for path, entry in ws.index_files(index, exclude=drop)]


def _index_content(ws: Workspace, rows: pl.DataFrame) -> pl.DataFrame:
    """Content columns of the listed (doc_id, drop) documents as they entered dedup (a drop's dedup input);
    documents no longer there (their drop was re-curated or removed) are simply absent."""
    frames = []
    for (drop,), group in rows.group_by("drop"):
        stage = UPSTREAM["exact_deduped"]
        if not drop or not ws.has_stage(stage, drop):
            continue
        view = ws.scan_stage(stage, drop)
        columns = [c for c in ("doc_id", "text", "messages") if c in view.collect_schema()]
        frames.append(view.select(columns).filter(pl.col("doc_id").is_in(group["doc_id"].implode())).collect())
    if not frames:
        return pl.DataFrame(schema={"doc_id": pl.String, "text": pl.String})
    return pl.concat(frames, how="diagonal_relaxed")


@dataclass
class StageInput:
    """The ``DropInput`` of a drop-global stage: the upstream stage's kept documents of one drop."""

    ws: Workspace
    stage: str  # the stage whose output this is (the consuming stage's upstream)
    drop: str
    batch_rows: int

    def _with_order(self, frame, columns: list[str] | None):
        """The drop's order (a keep-rule key) as a column ``drop_order``, when asked for (or all columns are)."""
        if columns is None or "drop_order" in columns:
            return frame.with_columns(pl.lit(self.ws.drop(self.drop).order, dtype=pl.Int64).alias("drop_order"))
        return frame

    def batches(self, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        stored = None if columns is None else [c for c in columns if c != "drop_order"]
        for batch in self.ws.iter_stage(self.stage, self.drop, self.batch_rows, stored):
            if batch.height:
                yield self._with_order(batch, columns)

    def scan(self) -> pl.LazyFrame:
        return self._with_order(self.ws.scan_stage(self.stage, self.drop), None)

    def schema(self) -> pl.Schema:
        return self.scan().collect_schema()


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
        docs, parts, cfg.near_dedup, index_content=functools.partial(_index_content, ws),
        blocked_ids=takedowns["doc_id"], ooc=_out_of_core(ws, cfg), candidates=_ray_band_shuffle(cfg),
        mapper=_near_mapper(cfg, drop))
    _write_index(ws, "near", drop, entries)
    return result


def _near_mapper(cfg: CurationConfig, drop: str) -> dedup_minhash.BatchMapper:
    """Near dedup's signature and exact verification batches on every core: Ray tasks with the Ray executor, else
    the local executor's worker pool (``engine.workers``). A signature task carries its input batch (Arrow), a
    verification task pair ids and where its documents are, not text."""
    if cfg.engine.executor == "ray":
        from curation_platform.executors import ray as ray_executor

        return ray_executor.map_on_ray(cfg.engine)
    from curation_platform.executors import local as local_executor

    return functools.partial(local_executor.map_in_order, workers=local_executor.worker_count(cfg.engine),
                             label=f"stage 'near_deduped' on drop '{drop}'")


def _ray_band_shuffle(cfg: CurationConfig) -> dedup_minhash.CandidateGenerator | None:
    """With the Ray executor, near-dedup candidates come from a shuffle by band key over the Ray workers."""
    if cfg.engine.executor != "ray":
        return None
    from curation_platform.executors import ray as ray_executor

    return ray_executor.band_shuffle_candidates(cfg.engine)


def _write_index(ws: Workspace, index_name: str, drop: str,
                 entries: pl.DataFrame | Iterable[pl.DataFrame]) -> None:
    """Write a drop's index entries (a frame or an iterator of frames) batch by batch with a streaming writer, so
    the drop's entries are never all in memory."""
    # Under the registry lock, so a takedown running now cannot be undone by this write.
    with file_lock(ws.root / "registry" / ".lock"):
        taken_down = (pl.read_parquet(ws.takedowns_path, columns=["doc_id"])
                      if index_name != "lines" and ws.takedowns_path.exists() else None)
        # Re-materializing a drop replaces its own entries (idempotent).
        with ParquetStreamWriter(ws.index_path(index_name, drop)) as out:
            for frame in _frames(entries):
                # Taken-down documents never re-enter the index.
                out.write(frame if taken_down is None else frame.join(taken_down, on="doc_id", how="anti"))


def _line_dedup(ws: Workspace, cfg: CurationConfig, drop: str, docs: DropInput) -> StageResult:
    order = ws.drop(drop).order
    # Only curated drops count: a stale drop, or one whose gate failed, removes no line from later drops.
    earlier = [ws.index_path("lines", d.name) for d in ws.drops()
               if d.order < order and drop_state(ws, cfg, d.name) == "current"]
    result, entries = line_dedup(docs, earlier, cfg.line_dedup, ooc=_out_of_core(ws, cfg))
    _write_index(ws, "lines", drop, entries)
    return result


def filter_profile(ws: Workspace, cfg: CurationConfig, drop: str) -> str | None:
    """The filter profile of a drop: its manifest's ``filter_profile``, else ``filters.sources`` for its source."""
    from curation_platform.errors import CurationError

    drop_dir = as_path(ws.drop(drop).path)
    manifest = load_manifest(drop_dir) if (drop_dir / "manifest.yaml").exists() else None
    source = manifest.source if manifest else ""
    try:
        return cfg.filters.profile_for(source, manifest.filter_profile if manifest else None)
    except KeyError as exc:
        raise CurationError(f"drop '{drop}': {exc.args[0]}; fix filter_profile in {drop_dir / 'manifest.yaml'}"
                            ) from None


def _filter_and_verify(docs: pl.DataFrame, cfg: CurationConfig, profile: str | None) -> StageResult:
    """Filter rules, then generated code that survived them runs against its tests (no sandbox run is wasted on a
    document a rule drops anyway)."""
    filtered = filter_documents(docs, cfg.filters, profile)
    verified = verify_code(filtered.kept, cfg.verification)
    return StageResult(kept=verified.kept, verdicts=pl.concat([filtered.verdicts, verified.verdicts]),
                       metrics={**filtered.metrics, **verified.metrics})


# Per-document stages: (documents, config, context) -> StageResult, with nothing read from the workspace, so any
# batch of a drop can run anywhere (in this process, or in a Ray Data worker). ``context`` is what
# ``stage_context`` reads once per drop (the filter profile, the benchmark index).
PER_DOCUMENT_OPERATORS: dict[str, Callable[..., StageResult]] = {
    "url_filtered": lambda docs, cfg: filter_urls(docs, cfg.url_filter),
    "normalized": lambda docs, cfg: normalize(docs, cfg.normalize),
    "language": lambda docs, cfg: identify_language(docs, cfg.language),
    "quality_signals": lambda docs, cfg: quality_signals(docs, cfg.signals),
    "filtered": _filter_and_verify,
    "scored": lambda docs, cfg: score_documents(docs, cfg.scoring, domain_expr(cfg)),
    "pii_redacted": lambda docs, cfg: redact_pii(docs, cfg.pii),
    "decontaminated": lambda docs, cfg, benchmarks: decontaminate(docs, benchmarks, cfg.decontamination),
}


# The stages the Ray executor distributes (the rest run in the driver process whatever the executor).
RAY_STAGES: list[str] = [*PER_DOCUMENT_OPERATORS, "near_deduped"]


def stage_context(ws: Workspace, cfg: CurationConfig, stage: str, drop: str) -> dict[str, Any]:
    """What a per-document operator needs beyond its documents and config, read once per drop."""
    if stage == "filtered":
        return {"profile": filter_profile(ws, cfg, drop)}
    if stage == "decontaminated":
        return {"benchmarks": benchmark_index(cfg)}
    return {}


def apply_operator(stage: str, docs: pl.DataFrame, cfg: CurationConfig, context: dict[str, Any]) -> StageResult:
    """Run a per-document stage's operator on a batch of documents (the whole drop, or one Ray Data batch)."""
    return PER_DOCUMENT_OPERATORS[stage](docs, cfg, **context)


def _decisions_only(operator: Callable[[pl.DataFrame], StageResult], docs: pl.DataFrame) -> StageResult:
    """``operator`` of a stage that only decides, its kept documents cut to doc_id plus the columns the operator
    added (what the stage stores), so a worker process sends back ids and decisions, not the batch's text."""
    result = operator(docs)
    result.kept = result.kept.select("doc_id", *[c for c in result.kept.columns if c not in docs.columns])
    return result


# The operator behind each drop-global stage: (workspace, config, drop, the drop's input) -> StageResult.
_DROP_OPERATORS: dict[str, Callable[[Workspace, CurationConfig, str, DropInput], StageResult]] = {
    "line_deduped": _line_dedup,
    "exact_deduped": _exact_dedup,
    "near_deduped": _near_dedup,
}

def _frames(value: pl.DataFrame | Iterable[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    return iter([value]) if isinstance(value, pl.DataFrame) else iter(value)


def _ordered_ledger(ids: pl.Series, verdicts: pl.DataFrame, stage: str, drop: str, run_id: str,
                    config_hash: str) -> pl.DataFrame:
    """Ledger rows of a batch in input order: each document's verdict rows (in operator order), then its keep row,
    so the ledger file does not depend on how the drop was batched."""
    rows = ledger_rows(stage=stage, drop=drop, input_ids=ids, verdicts=verdicts, run_id=run_id,
                       config_hash=config_hash)
    position = pl.DataFrame({"doc_id": ids}).with_row_index("_position")
    return (rows.with_row_index("_row").join(position, on="doc_id", how="left")
            .sort("_position", "_row", nulls_last=True).drop("_position", "_row"))


def _batches(ws: Workspace, cfg: CurationConfig, stage: str, drop: str
             ) -> Iterator[tuple[pl.Series, pl.DataFrame, StageResult]]:
    """(input doc_ids, input columns as a 0-row frame, result) per batch of the stage's input."""
    batch_rows = cfg.engine.batch_rows
    if stage == "raw_documents":
        for input_ids, result in _ingest(ws, cfg, drop):
            yield input_ids, result.kept.clear(), result
        return
    upstream = UPSTREAM[stage]
    if ws.text_removed(upstream, drop):
        from curation_platform.errors import CurationError

        raise CurationError(f"drop '{drop}': `curate gc` removed the text stage '{stage}' reads; re-curate the drop "
                            "from raw_documents (it is read again from its landing folder)")
    if stage in _DROP_OPERATORS:
        source = StageInput(ws, upstream, drop, batch_rows)
        yield from _drop_global_batches(ws, cfg, stage, source, _DROP_OPERATORS[stage](ws, cfg, drop, source))
        return
    context = stage_context(ws, cfg, stage, drop)
    if cfg.engine.executor == "ray":
        from curation_platform.executors import ray as ray_executor

        columns = ws.scan_stage(upstream, drop).limit(0).collect()
        for input_ids, result in ray_executor.stream_stage_output(ws, cfg, stage, drop, context):
            yield input_ids, columns, result
        return
    # The local executor: the batches over one worker process per core for the stages that gain from it.
    from curation_platform.executors import local as local_executor

    # A stage that only decides stores doc_id and its added columns: its batches come back with nothing else (a
    # worker then sends back no text).
    operator = functools.partial(apply_operator, stage, cfg=cfg, context=context)
    if not stores_rows(stage, cfg):
        operator = functools.partial(_decisions_only, operator)
    seen = False
    for output in local_executor.run_batches(operator, _nonempty(ws.iter_stage(upstream, drop, batch_rows)),
                                             local_executor.stage_workers(stage, cfg.engine),
                                             label=f"stage '{stage}' on drop '{drop}'"):
        seen = True
        yield output
    if not seen:  # an empty drop still gives an output file with the stage's columns
        empty = ws.scan_stage(upstream, drop).limit(0).collect()
        yield empty["doc_id"], empty, apply_operator(stage, empty, cfg, context)


# The verdicts of a drop-global stage in input order: each verdict row with its document's input position (null
# for a document not in the input), ordered by position, then by the order the operator gave them.
_VERDICTS_IN_INPUT_ORDER_SQL = """
SELECT v.*, i._position FROM read_parquet($verdicts) v
LEFT JOIN (SELECT doc_id, min(_position) AS _position FROM read_parquet($ids) GROUP BY doc_id) i USING (doc_id)
ORDER BY i._position NULLS LAST, v._row
"""


def _drop_global_batches(ws: Workspace, cfg: CurationConfig, stage: str, source: StageInput, result: StageResult
                         ) -> Iterator[tuple[pl.Series, pl.DataFrame, StageResult]]:
    """A drop-global stage's result as ``_batches`` gives it: one item per batch of input doc_ids with the verdicts
    on those documents (the first item also carries every kept frame and the metrics), then one item with no ids
    and the verdicts on documents that were not in the input. Out of core: the input ids (with their position) and
    the verdicts are spilled to Parquet and DuckDB puts the verdicts in input order, so memory holds one batch of
    each, never the drop's ids or verdicts (nor a filter of every verdict per batch)."""
    ooc = _out_of_core(ws, cfg)
    input_frame = source.scan().limit(0).collect()
    with spill_folder(ooc, f"ledger-{stage}") as folder:
        ids_out = SpillWriter(folder / "ids.parquet", {"doc_id": pl.String, "_position": pl.Int64})
        position = 0
        for batch in source.batches(["doc_id"]):
            ids_out.write(batch.select("doc_id", pl.int_range(position, position + batch.height, dtype=pl.Int64)
                                       .alias("_position")))
            position += batch.height
        ids_out.close()
        verdicts_out = SpillWriter(folder / "verdicts.parquet", {**VERDICT_SCHEMA, "_row": pl.Int64})
        row = 0
        for frame in _frames(result.verdicts):
            verdicts_out.write(verdict_frame(frame).with_columns(
                pl.int_range(row, row + frame.height, dtype=pl.Int64).alias("_row")))
            row += frame.height
        verdicts_out.close()
        # DuckDB writes the ordered verdicts to a file and is closed before the stage's kept batches stream: its
        # sorted result is not held (it grows with the drop) while the drop is written.
        with duckdb_connection(ooc, folder / "duckdb") as connection:
            sql = _VERDICTS_IN_INPUT_ORDER_SQL.replace("$verdicts", sql_path(folder / "verdicts.parquet")).replace(
                "$ids", sql_path(folder / "ids.parquet"))
            connection.execute(f"COPY ({sql}) TO {sql_path(folder / 'ordered.parquet')} "
                               "(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, PRESERVE_ORDER)").fetchall()
        ordered = iter_parquet(folder / "ordered.parquet", ooc.batch_rows)
        pending = pl.DataFrame(schema={**VERDICT_SCHEMA, "_position": pl.Int64})
        first, exhausted, stop = True, False, 0
        batches = iter_parquet(folder / "ids.parquet", ooc.batch_rows, ["doc_id"])
        for ids in itertools.chain((b["doc_id"] for b in batches), [None]):
            stop += 0 if ids is None else len(ids)
            # Read verdicts until one lies beyond this batch (or is on no input document); after the last batch,
            # read the rest (the verdicts on no input document).
            while not exhausted and (ids is None or pending.is_empty() or _before(pending["_position"][-1], stop)):
                chunk = next(ordered, None)
                if chunk is None:
                    exhausted = True
                    break
                pending = pl.concat([pending, chunk.select(pending.columns).cast(pending.schema)])
            if ids is None:
                mine, pending = pending, pending.clear()
                if mine.is_empty() and not first:
                    return
                ids = pl.Series("doc_id", [], pl.String)
            else:
                inside = pending["_position"].is_not_null() & (pending["_position"] < stop)
                mine, pending = pending.filter(inside), pending.filter(~inside)
            yield ids, input_frame, StageResult(kept=result.kept if first else iter(()),
                                                verdicts=mine.drop("_position"),
                                                metrics=result.metrics if first else {})
            first = False


def _before(position: int | None, stop: int) -> bool:
    """True when a verdict at input ``position`` (None: on no input document, ordered last) is before ``stop``."""
    return position is not None and position < stop
def _nonempty(batches: Iterable[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """The first batch (even empty: it carries the stage's columns), then every non-empty batch."""
    first = True
    for batch in batches:
        if batch.height or first:
            first = False
            yield batch


def run_stage(ws: Workspace, cfg: CurationConfig, stage: str, drop: str, run_id: str = "local") -> StageSummary:
    """Materialize one stage for one drop: stream its input through the operator, write output and ledger
    atomically (see the module docstring for batching and storage)."""
    if stage not in STAGES:
        raise KeyError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    rows = stores_rows(stage, cfg)
    metadata = {} if rows else {DECIDES_ON_KEY: UPSTREAM[stage].encode()}
    counts = {KEEP: 0, DROP: 0, QUARANTINE: 0}
    per_rule: dict[str, int] = {}
    metrics: dict[str, Any] = {}
    seen_rows = 0
    preview: pl.DataFrame | None = None
    with ParquetStreamWriter(ws.stage_path(stage, drop), metadata) as out, \
            ParquetStreamWriter(ws.ledger_path(stage, drop)) as ledger_out:
        for ids, input_frame, result in _batches(ws, cfg, stage, drop):
            added = None if rows else ["doc_id", *[c for c in _first_schema(result) if c not in input_frame.columns
                                                   and c != "drop_order"]]
            verdicts = pl.concat(list(_frames(result.verdicts)), how="vertical_relaxed")
            for kept in _frames(result.kept):
                kept = kept.drop("drop_order", strict=False)
                if preview is None or preview.height < 5:
                    preview = kept.head(5) if preview is None else pl.concat([preview, kept.head(5 - preview.height)],
                                                                           how="diagonal_relaxed")
                out.write(kept if rows else kept.select(added))
            for ledger_ids in _slices(ids, cfg.engine.batch_rows):
                ledger = _ordered_ledger(ledger_ids, verdicts.filter(pl.col("doc_id").is_in(ledger_ids.implode())),
                                         stage, drop, run_id, cfg.drop_stages_hash)
                ledger_out.write(ledger)
                deciding = ledger.filter(pl.col("verdict").is_in([KEEP, DROP, QUARANTINE]))
                for verdict, n in deciding.group_by("verdict").len().iter_rows():
                    counts[verdict] += n
                for rule, n in deciding.filter(pl.col("verdict") != KEEP).group_by("rule").len().iter_rows():
                    per_rule[rule] = per_rule.get(rule, 0) + n
            stray = verdicts.join(pl.DataFrame({"doc_id": ids}), on="doc_id", how="anti")
            if stray.height:  # a verdict on a document that was not in the input: keep it, never lose a row
                ledger_out.write(_ordered_ledger(ids.clear(), stray, stage, drop, run_id, cfg.drop_stages_hash))
            metrics = merge_metrics(metrics, result.metrics, seen_rows, len(ids))
            seen_rows += len(ids)
    if not rows and out.rows:  # a stage that only decides stored no text: preview its first documents whole
        frames: list[pl.DataFrame] = []
        for frame in ws.iter_stage(stage, drop, 64):
            frames.append(frame)
            if sum(f.height for f in frames) >= 5:
                break
        preview = pl.concat(frames, how="vertical_relaxed").head(5)
    return StageSummary(
        stage=stage,
        drop=drop,
        input=sum(counts.values()),
        kept=out.rows,
        dropped=counts[DROP],
        quarantined=counts[QUARANTINE],
        per_rule=dict(sorted(per_rule.items())),
        metrics=json.loads(json.dumps(metrics, default=str)),
        preview=preview,
    )


def _first_schema(result: StageResult) -> list[str]:
    """Column names of the stage's kept frames (peeking at the first one of an iterator without consuming it)."""
    if isinstance(result.kept, pl.DataFrame):
        return result.kept.columns
    first = next(iter(result.kept), None)
    if first is None:
        result.kept = iter(())
        return []
    result.kept = itertools.chain([first], result.kept)
    return first.columns


def _slices(ids: pl.Series, size: int) -> Iterator[pl.Series]:
    if len(ids) == 0:
        yield ids
    for start in range(0, len(ids), size):
        yield ids.slice(start, size)


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
    summary = ledger_summary(ws, drop)
    hashes = {h for stage in STAGES for h in summary[stage]["hashes"]}
    return "current" if hashes <= {cfg.drop_stages_hash} else "stale"
