"""Streaming changes nothing: every stage file, ledger, index and released shard is byte-identical whatever
``engine.batch_rows`` is; no per-document operator ever sees more than ``batch_rows`` documents; decide-only stage
files compose back into exactly what the operator returned; and ``curate gc`` keeps releases, explain and later
drops' dedup working.

Every stage runs for real (``pipeline.run_stage``, the function the Dagster assets call) on two small drops with
planted exact and near duplicates, PII, low-quality pages and a malformed line.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import polars as pl
import pytest

from curation_platform import pipeline
from curation_platform.config import CurationConfig
from curation_platform.executors.local import PARALLEL_STAGES
from curation_platform.explain import document_journey
from curation_platform.gc import GC_STAGES, collect_garbage
from curation_platform.pipeline import (DROP_GLOBAL_STAGES, FINAL_STAGE, STAGES, UPSTREAM, StageInput, drop_state,
                                        run_stage, stores_rows)
from curation_platform.pipeline import apply_operator as _apply_operator
from curation_platform.release import publish_release, stage_release
from curation_platform.samples import synthetic_corpus, write_corpus_drop
from curation_platform.workspace import Workspace
from tests.test_dedup_release import _near_copy

DROPS = ("2026-01-first", "2026-02-second")


def _land(landing: Path) -> None:
    first = synthetic_corpus(12, seed=5, dup_rate=0.15, near_dup_rate=0.15, pii_rate=0.2, low_quality_rate=0.2)
    second = synthetic_corpus(10, seed=6, dup_rate=0.1, near_dup_rate=0.1, pii_rate=0.2, low_quality_rate=0.2)
    # Copies of the first drop's documents, exact and near, so dedup has pairs across drops.
    copies = pl.DataFrame({"id": ["copy-exact", "copy-near"],
                           "text": [first["text"][0], _near_copy(first["text"][1], 4)]})
    write_corpus_drop(landing, DROPS[0], first.select("id", "text"), source="first")
    drop = write_corpus_drop(landing, DROPS[1], pl.concat([second.select("id", "text"), copies]), source="second")
    with (drop / "data.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"id": "broken", "text": \n')  # quarantined with its line number


def _config(batch_rows: int, workers: int = 1) -> CurationConfig:
    # One worker (in-process) unless a test asks for more: the batch-size test observes its operators here.
    return CurationConfig.model_validate({"versioning": {"enabled": False},
                                          "engine": {"batch_rows": batch_rows, "workers": workers}})


def _curate(root: Path, landing: Path, cfg: CurationConfig) -> Workspace:
    ws = Workspace(root)
    for name in DROPS:
        ws.register_drop(name, landing / name)
        for stage in STAGES:
            run_stage(ws, cfg, stage, name)
    return ws


def _release(ws: Workspace, cfg: CurationConfig) -> Path:
    current = [d.name for d in ws.drops() if drop_state(ws, cfg, d.name) == "current"]
    stage_release(ws, cfg, FINAL_STAGE, current, [], [], {})
    return publish_release(ws, cfg.release.name, "test-run", cfg.hash)


def _digests(root: Path, folders: tuple[str, ...]) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted((root / folder).rglob("*.parquet"))}


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("landing")
    _land(root)
    return root


@pytest.fixture(scope="module")
def curated(tmp_path_factory, landing) -> tuple[Workspace, CurationConfig]:
    cfg = _config(20_000)
    ws = _curate(tmp_path_factory.mktemp("default"), landing, cfg)
    _release(ws, cfg)
    return ws, cfg


@pytest.mark.parametrize("batch_rows", [1, 7])
def test_outputs_are_byte_identical_for_any_batch_size(tmp_path, landing, curated, batch_rows, monkeypatch):
    # Record the largest batch each operator is called with: the real operators run, only observed.
    largest: dict[str, int] = {}

    def observed(stage, operator):
        def call(docs, cfg, **context):
            largest[stage] = max(largest.get(stage, 0), docs.height)
            return operator(docs, cfg, **context)
        return call

    for stage, operator in list(pipeline.PER_DOCUMENT_OPERATORS.items()):
        monkeypatch.setitem(pipeline.PER_DOCUMENT_OPERATORS, stage, observed(stage, operator))
    batches = StageInput.batches

    def observed_batches(self, columns=None):
        for batch in batches(self, columns):
            largest[f"{self.stage}->drop-global"] = max(largest.get(f"{self.stage}->drop-global", 0), batch.height)
            yield batch

    monkeypatch.setattr(StageInput, "batches", observed_batches)

    ws, cfg = curated
    other_cfg = _config(batch_rows)
    other = _curate(tmp_path / "ws", landing, other_cfg)
    release = _release(other, other_cfg)
    folders = ("stages", "ledger", "index", "quarantine")
    expected = _digests(ws.root, folders)
    # Per drop: stage files, ledgers, 3 indexes and the quarantine; plus the release ledger.
    assert len(expected) == len(DROPS) * (2 * len(STAGES) + 4) + 1
    assert _digests(other.root, folders) == expected
    assert _digests(release, ("shards",)) == _digests(ws.release_dir("latest"), ("shards",))
    assert (release / "shard_index.parquet").read_bytes() == (ws.release_dir("latest") / "shard_index.parquet").read_bytes()
    assert other.release_ledger_path("latest").read_bytes() == ws.release_ledger_path("latest").read_bytes()
    # Every per-document operator ran, in batches of at most batch_rows documents; so did the dedup inputs.
    assert set(largest) >= set(pipeline.PER_DOCUMENT_OPERATORS)
    assert max(largest.values()) == batch_rows


def _recording_apply_operator(stage, docs, cfg, context):
    """``pipeline.apply_operator``, plus the process that ran the batch as a metric (counts per pid; metrics merge
    by summing). Module-level, so it pickles to the local executor's worker processes."""
    result = _apply_operator(stage, docs, cfg, context)
    result.metrics = {**result.metrics, "processes": {str(os.getpid()): 1}}
    return result


def test_outputs_are_byte_identical_with_worker_processes(tmp_path, landing, curated, monkeypatch):
    monkeypatch.setattr(pipeline, "apply_operator", _recording_apply_operator)
    cfg = _config(5, workers=2)
    ws = Workspace(tmp_path / "ws")
    processes: dict[tuple[str, str], dict[str, int]] = {}
    verification: dict[str, dict] = {}
    for name in DROPS:
        ws.register_drop(name, landing / name)
        for stage in STAGES:
            metrics = run_stage(ws, cfg, stage, name).metrics
            processes[stage, name] = metrics.get("processes", {})
            if stage == "near_deduped":
                verification[name] = metrics
    folders = ("stages", "ledger", "index", "quarantine")
    expected = {path: digest for path, digest in _digests(curated[0].root, folders).items()
                if not path.startswith("ledger/release")}  # the fixture also released; this test does not
    assert len(expected) == len(DROPS) * (2 * len(STAGES) + 4)
    assert _digests(ws.root, folders) == expected
    # The parallel stages ran their batches (several per drop) in the workers, the others here.
    here = str(os.getpid())
    for (stage, name), pids in processes.items():
        if stage not in pipeline.PER_DOCUMENT_OPERATORS:
            continue
        assert sum(pids.values()) > 1, (stage, name)  # several batches
        assert (here not in pids) if stage in PARALLEL_STAGES else (set(pids) == {here}), (stage, name, pids)
    workers = {pid for (stage, _), pids in processes.items() if stage in PARALLEL_STAGES for pid in pids}
    assert len(workers) == 2
    # Near dedup ran its signature batches and its exact verification batches of candidate pairs (2 pairs each at
    # batch_rows 5) in the workers too, and the second drop's near pairs (in the drop and with the first drop) are
    # the fixture's.
    for name in DROPS:
        near = verification[name]
        assert near["verify_batches"] > 1 and near["verify_batches_in_workers"] == near["verify_batches"], near
        assert near["signature_batches"] > 1 and near["signature_batches_in_workers"] == near["signature_batches"]
    assert verification[DROPS[1]]["cross_drop_pairs"] >= 1 and verification[DROPS[1]]["within_drop_pairs"] >= 1


def test_workers_send_back_only_what_a_decide_only_stage_stores(curated):
    ws, _ = curated
    cfg = _config(5, workers=2)
    # Each stage's own columns: the language and its score, the signals; decontamination in drop mode adds none.
    own = {"language": {"language", "language_score"}, "quality_signals": {"word_count"}, "decontaminated": set()}
    for stage, columns in own.items():
        assert not stores_rows(stage, cfg)
        results = list(pipeline._batches(ws, cfg, stage, DROPS[0]))
        assert len(results) > 1, stage  # several batches: they ran in the worker pool
        for _, input_frame, result in results:
            assert "text" in input_frame.columns
            assert set(result.kept.columns) & set(input_frame.columns) == {"doc_id"}, stage
            assert columns <= set(result.kept.columns), stage


def test_a_decide_only_stage_previews_its_first_kept_documents_with_their_text(tmp_path, curated):
    # The preview shown in the UI: the operators of decide-only stages return no text, the preview must still show it.
    ws, cfg = curated
    copy = Workspace(tmp_path / "ws")
    shutil.copytree(ws.root, copy.root)
    for stage in ("language", "filtered"):
        summary = pipeline.run_stage(copy, cfg, stage, DROPS[0])
        stored = copy.read_stage(stage, DROPS[0])
        assert {"text", "doc_id"} <= set(summary.preview.columns), stage
        assert summary.preview.height == min(5, stored.height) > 0, stage
        assert summary.preview["doc_id"].to_list() == stored["doc_id"].head(5).to_list(), stage
        assert summary.preview["text"].to_list() == stored["text"].head(5).to_list(), stage


def test_decide_only_stages_compose_into_what_the_operator_returned(curated):
    ws, cfg = curated
    drop = DROPS[1]
    for stage in STAGES[1:]:
        stored = ws.stored_columns(stage, drop)
        if stores_rows(stage, cfg):
            assert "text" in stored and ws.decides_on(stage, drop) is None
            continue
        assert "text" not in stored and ws.decides_on(stage, drop) == UPSTREAM[stage]
        if stage in DROP_GLOBAL_STAGES:
            continue
        docs = ws.read_stage(UPSTREAM[stage], drop)
        expected = pipeline.apply_operator(stage, docs, cfg, pipeline.stage_context(ws, cfg, stage, drop)).kept
        composed = ws.read_stage(stage, drop)
        # Same rows, order and values; columns the stage adds come after its input's (an operator may reorder).
        assert sorted(composed.columns) == sorted(expected.columns), stage
        assert composed.select(expected.columns).equals(expected), stage
    # The composed view streams too, in the same order and with the same rows.
    streamed = pl.concat(list(ws.iter_stage(FINAL_STAGE, drop, 3)))
    assert streamed.equals(ws.read_stage(FINAL_STAGE, drop))
    assert ws.read_stage(FINAL_STAGE, drop, ["doc_id", "quality_score", "content_hash"]).height == streamed.height


def test_gc_keeps_release_explain_and_later_dedup(tmp_path, landing):
    cfg = _config(20_000)
    ws = Workspace(tmp_path / "ws")
    ws.register_drop(DROPS[0], landing / DROPS[0])
    for stage in STAGES:
        run_stage(ws, cfg, stage, DROPS[0])
    release = _release(ws, cfg)
    shards = _digests(release, ("shards",))
    before = sum(p.stat().st_size for p in (ws.root / "stages").rglob("*.parquet"))

    dry = collect_garbage(ws, cfg, dry_run=True)
    result = collect_garbage(ws, cfg)
    after = sum(p.stat().st_size for p in (ws.root / "stages").rglob("*.parquet"))
    assert result.drops == [DROPS[0]] and dry.drops == [DROPS[0]] and result.files == len(GC_STAGES)
    assert result.freed_bytes == before - after > 0 and dry.freed_bytes > 0
    for stage in GC_STAGES:
        assert ws.text_removed(stage, DROPS[0]) and "text" not in ws.stored_columns(stage, DROPS[0])
    assert collect_garbage(ws, cfg).freed_bytes == 0  # nothing left to collect
    assert drop_state(ws, cfg, DROPS[0]) == "current"

    # The release rebuilds byte-identically, and explain still tells a document's story.
    assert _digests(_release(ws, cfg), ("shards",)) == shards
    doc_id = ws.read_stage("raw_documents", DROPS[0], ["doc_id"])["doc_id"][0]
    assert "raw_documents" in document_journey(ws, doc_id)
    # Re-running a stage of the gc'd drop says what to do instead of failing on a missing column.
    with pytest.raises(Exception, match="curate gc"):
        run_stage(ws, cfg, "normalized", DROPS[0])

    # A later drop still finds its exact and near copies of the gc'd drop's documents.
    ws.register_drop(DROPS[1], landing / DROPS[1])
    for stage in STAGES:
        run_stage(ws, cfg, stage, DROPS[1])
    flagged = pl.read_parquet(ws.ledger_path("near_deduped", DROPS[1])).filter(pl.col("verdict") == "flag")
    exact = pl.read_parquet(ws.ledger_path("exact_deduped", DROPS[1])).filter(pl.col("verdict") == "flag")
    first_ids = set(ws.read_stage(FINAL_STAGE, DROPS[0], ["doc_id"])["doc_id"])
    assert first_ids & set(flagged["duplicate_of"].drop_nulls())
    assert first_ids & set(exact["duplicate_of"].drop_nulls())


def test_drop_global_stages_hand_the_ledger_one_batch_of_ids_and_verdicts_at_a_time(curated):
    # The dedup stages see the whole drop, but the pipeline must not gather its ids or verdicts: every item it
    # writes the ledger from holds at most batch_rows input ids, and only the verdicts on those ids.
    ws, _ = curated
    cfg = _config(3)
    drop = DROPS[1]
    for stage in sorted(DROP_GLOBAL_STAGES):
        items = list(pipeline._batches(ws, cfg, stage, drop))
        sizes = [len(ids) for ids, _, _ in items]
        assert max(sizes) <= 3, (stage, sizes)
        ids = pl.concat([ids for ids, _, _ in items])
        assert ids.to_list() == ws.read_stage(UPSTREAM[stage], drop, ["doc_id"])["doc_id"].to_list(), stage
        verdicts = []
        for batch_ids, _, result in items:
            frame = pl.concat(list(pipeline._frames(result.verdicts)), how="vertical_relaxed")
            assert frame["doc_id"].is_in(batch_ids.implode()).all(), stage
            verdicts.append(frame)
        # The same verdict rows as the ledger the stage wrote when the drop was curated whole (batch_rows 20,000).
        ledger = pl.read_parquet(ws.ledger_path(stage, drop)).filter(pl.col("verdict") != "keep")
        assert sorted(pl.concat(verdicts)["doc_id"].to_list()) == sorted(ledger["doc_id"].to_list()), stage


_POOL_PEAK = """
import sys
import pyarrow as pa
from pathlib import Path
from curation_platform.workspace import iter_parquet
base = pa.default_memory_pool().max_memory()
rows = sum(batch.height for batch in iter_parquet(Path(sys.argv[1]), 2000))
print(rows, pa.default_memory_pool().max_memory() - base)
"""


def test_streaming_a_parquet_file_holds_as_much_arrow_memory_for_4x_the_rows(tmp_path):
    # pyarrow's one reader over a whole file keeps more memory the more row groups it has passed (1.9x for 4x the
    # row groups): peak memory then grew with the drop in every stage. Measured in a fresh process each, so the
    # peaks are the file's own.
    import subprocess
    import sys

    peaks = {}
    for groups in (8, 32):
        path = tmp_path / f"{groups}.parquet"
        _write_word_parquet(path, groups, rows=1000, words=60)
        done = subprocess.run([sys.executable, "-c", _POOL_PEAK, str(path)], capture_output=True, text=True,
                              check=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        count, peaks[groups] = map(int, done.stdout.split())
        assert count == groups * 1000
    assert peaks[32] <= 1.2 * peaks[8], peaks


def test_drop_global_verdicts_reach_the_ledger_batches_in_input_order_and_none_is_lost(tmp_path):
    # Verdicts in any order, some on documents not in the input (more of them than one batch): each batch gets the
    # verdicts on its own documents in the operator's order, and the rest come last, all of them.
    from curation_platform.records import FrameDropInput, StageResult

    docs = pl.DataFrame({"doc_id": [f"d{i}" for i in range(7)]})
    verdicts = pl.DataFrame({"doc_id": ["d5", "x1", "d0", "x2", "d5", "x3", "x4", "x5", "d6"],
                             "verdict": ["drop", "flag", "flag", "flag", "flag", "flag", "flag", "flag", "drop"],
                             "rule": [f"r{i}" for i in range(9)]})
    result = StageResult(kept=iter(()), verdicts=verdicts, metrics={"pairs": 1})
    items = list(pipeline._drop_global_batches(Workspace(tmp_path), _config(2), "exact_deduped",
                                               FrameDropInput(docs, batch_rows=2), result))
    assert [(ids.to_list(), r.verdicts["rule"].to_list()) for ids, _, r in items] == [
        (["d0", "d1"], ["r2"]), (["d2", "d3"], []), (["d4", "d5"], ["r0", "r4"]), (["d6"], ["r8"]),
        ([], ["r1", "r3", "r5", "r6", "r7"])]
    assert [r.metrics for _, _, r in items] == [{"pairs": 1}, {}, {}, {}, {}]


_RSS_GROWTH = """
import os, sys
from pathlib import Path
import polars as pl
from curation_platform.workspace import iter_parquet
page = os.sysconf("SC_PAGE_SIZE")
seen = []
for batch in iter_parquet(Path(sys.argv[1]), 2000):
    batch.with_columns(pl.col("text").str.to_uppercase())  # an operator's work on the batch, then freed
    seen.append(int(open("/proc/self/statm").read().split()[1]) * page // 2**20)
print(len(seen), seen[-1] - seen[1])
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads RSS from /proc")
def test_streaming_a_parquet_file_does_not_keep_the_pages_of_freed_batches(tmp_path):
    # pyarrow's default pool (mimalloc) kept the pages of every batch the consumer had freed: RSS grew about
    # 20 MB over this 80,000-document file (5 KB per document at 0.05 GB of text) while the pool's own count
    # stayed flat. Measured in a fresh process, from after the first batch to the end.
    import subprocess
    import sys

    path = tmp_path / "drop.parquet"
    _write_word_parquet(path, 40, rows=2000, words=200)
    done = subprocess.run([sys.executable, "-c", _RSS_GROWTH, str(path)], capture_output=True, text=True,
                          check=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    batches, growth_mb = map(int, done.stdout.split())
    assert batches == 40
    # Without the release: 21 to 29 MB (measured 2026-12-01). With it: 1 to 4 MB, once 12 MB in a loaded CI run.
    assert growth_mb < 16, growth_mb


def _write_word_parquet(path: Path, groups: int, rows: int, words: int) -> None:
    """A stage-like Parquet file: ``groups`` row groups of ``rows`` documents of ``words`` random words each."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    vocabulary = pl.Series(["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"])
    with pq.ParquetWriter(path, pa.schema([("doc_id", pa.large_string()), ("text", pa.large_string())])) as writer:
        for group in range(groups):
            picks = vocabulary.sample(rows * words, with_replacement=True, seed=group)
            frame = pl.DataFrame({"doc_id": [f"{group}-{i}" for i in range(rows)],
                                  "text": picks.reshape((rows, words)).arr.join(" ")})
            writer.write_table(frame.to_arrow(compat_level=pl.CompatLevel.oldest()))


def test_drop_global_ledger_holds_no_duckdb_connection_while_the_kept_batches_stream(tmp_path, monkeypatch):
    # DuckDB orders a drop-global stage's verdicts into a file and is closed before the stage's kept batches are
    # consumed: its sorted result (which grows with the drop) is not held while the drop is written.
    from contextlib import contextmanager

    from curation_platform.outofcore import duckdb_connection
    from curation_platform.records import FrameDropInput, StageResult

    open_connections, seen = [0], []

    @contextmanager
    def counted(ooc, temp_directory):
        with duckdb_connection(ooc, temp_directory) as connection:
            open_connections[0] += 1
            try:
                yield connection
            finally:
                open_connections[0] -= 1

    def kept():
        for start in range(0, 7, 2):
            seen.append(open_connections[0])
            yield pl.DataFrame({"doc_id": [f"d{i}" for i in range(start, min(start + 2, 7))]})

    monkeypatch.setattr(pipeline, "duckdb_connection", counted)
    docs = pl.DataFrame({"doc_id": [f"d{i}" for i in range(7)]})
    verdicts = pl.DataFrame({"doc_id": ["d5", "d0"], "verdict": ["flag", "flag"], "rule": ["r0", "r1"]})
    result = StageResult(kept=kept(), verdicts=verdicts, metrics={})
    items = pipeline._drop_global_batches(Workspace(tmp_path), _config(2), "exact_deduped",
                                          FrameDropInput(docs, batch_rows=2), result)
    ids, _, first = next(items)
    assert ids.to_list() == ["d0", "d1"] and first.verdicts["rule"].to_list() == ["r1"]
    assert sum(batch.height for batch in first.kept) == 7
    assert seen == [0, 0, 0, 0]
    assert [r.verdicts["rule"].to_list() for _, _, r in items] == [[], ["r0"], []]
