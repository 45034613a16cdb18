"""Out-of-core drop-global stages: the same results for any batch size, and DuckDB really spills under a tiny
memory limit while the answer stays right."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Iterator

import polars as pl
import pytest
import xxhash

from curation_platform.config import CurationConfig
from curation_platform.ops.dedup_exact import ExactDedupConfig, IndexPart, exact_duplicates, hash_words
from curation_platform.ops.dedup_minhash import NearDedupConfig, near_duplicates
from curation_platform.ops.line_dedup import LineDedupConfig, line_dedup
from curation_platform.outofcore import OutOfCore
from curation_platform.records import FrameDropInput, ParquetDropInput

WORDS = ("river valley farm wheat rain village school stone market bread cheese honey wool trader visitor harbour "
         "museum ship model curator wing garden bridge tower lantern orchard meadow mill baker candle").split()
BANNER = "Sign up for our newsletter to get the weekly digest of every story from the editors."


def _texts(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    return ["\n\n".join(" ".join(rnd.choice(WORDS) for _ in range(40)) for _ in range(3)) for _ in range(n)]


def _drop(texts: list[str], prefix: str, drop: str, order: int) -> pl.DataFrame:
    n = len(texts)
    return pl.DataFrame({"doc_id": [f"{prefix}{i:03d}" for i in range(n)], "drop": [drop] * n,
                         "drop_order": [order] * n,
                         "kind": ["web"] * n, "license": ["MIT"] * n, "quality_score": [0.5] * n, "text": texts})


@pytest.fixture(scope="module")
def two_drops(tmp_path_factory) -> tuple[Path, Path, Path, pl.DataFrame]:
    """Drop a (40 documents) and its three index files; drop b (40 documents: exact and near copies of a and of
    itself, a banner in 12 documents) as a Parquet stage file."""
    folder = tmp_path_factory.mktemp("drops")
    rnd = random.Random(3)
    first = _texts(40, seed=1)
    fresh = _texts(20, seed=2)
    near = [t.replace(t.split(" ")[5], "zebra", 1) for t in first[:8]]  # one word changed: near copies
    second = first[8:14] + near + fresh + [fresh[0], fresh[1].upper(), fresh[2] + "  ", near[0]]
    second = [f"{BANNER}\n\n{t}" if i % 3 == 0 else t for i, t in enumerate(second)]
    rnd.shuffle(second)
    drop_a, drop_b = _drop(first, "a", "a", 0), _drop(second, "b", "b", 1)
    lines, exact, near_index = folder / "lines.parquet", folder / "exact.parquet", folder / "near.parquet"
    _, entries = line_dedup(drop_a, [], LineDedupConfig())
    entries.write_parquet(lines)
    exact_duplicates(drop_a, [], ExactDedupConfig())[1].write_parquet(exact)
    near_duplicates(drop_a, [], NearDedupConfig())[1].write_parquet(near_index)
    drop_b.write_parquet(folder / "b.parquet")
    return folder, exact, near_index, drop_a


def _run_all(folder: Path, exact: Path, near: Path, drop_a: pl.DataFrame, batch_rows: int, spill: Path) -> dict:
    ooc = OutOfCore(batch_rows=batch_rows, memory_limit="256MB", spill_dir=str(spill))

    def source() -> ParquetDropInput:
        return ParquetDropInput(folder / "b.parquet", "b", batch_rows)

    def content(rows: pl.DataFrame) -> pl.DataFrame:
        return drop_a.join(rows.select("doc_id"), on="doc_id", how="semi").select("doc_id", "text")

    out = {}
    line_result, line_entries = line_dedup(source(), [folder / "lines.parquet"], LineDedupConfig(min_documents=3),
                                           ooc=ooc)
    exact_result, exact_entries = exact_duplicates(source(), [IndexPart(exact, "a", 0)], ExactDedupConfig(), ooc=ooc)
    near_result, near_entries = near_duplicates(source(), [IndexPart(near, "a", 0)], NearDedupConfig(),
                                                index_content=content, ooc=ooc)
    for name, result, entries in (("line", line_result, line_entries), ("exact", exact_result, exact_entries),
                                  ("near", near_result, near_entries)):
        batches = list(result.kept)
        assert all(batch.height <= batch_rows for batch in batches)
        # Verdicts and index entries may be frames or (line, exact) iterators of frames read from spill files.
        out[name] = (pl.concat(batches), _whole(result.verdicts), _whole(entries), result.metrics)
    return out


def _whole(value: pl.DataFrame | Iterator[pl.DataFrame]) -> pl.DataFrame:
    return value if isinstance(value, pl.DataFrame) else pl.concat(list(value))


def test_dedup_stages_give_identical_results_for_batch_rows_1_and_large(two_drops, tmp_path):
    folder, exact, near, drop_a = two_drops
    one = _run_all(folder, exact, near, drop_a, 1, tmp_path / "spill")
    large = _run_all(folder, exact, near, drop_a, 100_000, tmp_path / "spill")
    for stage in ("line", "exact", "near"):
        kept_1, verdicts_1, entries_1, metrics_1 = one[stage]
        kept_n, verdicts_n, entries_n, metrics_n = large[stage]
        assert kept_1.equals(kept_n) and verdicts_1.equals(verdicts_n), stage
        assert entries_1.equals(entries_n), stage
        batching = ("signature_batches", "signature_batches_in_workers", "verify_batches",
                    "verify_batches_in_workers")  # how the work was cut, not what it found
        assert {k: v for k, v in metrics_1.items() if k not in batching} == \
            {k: v for k, v in metrics_n.items() if k not in batching}, stage
    # The planted duplicates were found (the comparison is not between two empty results).
    assert one["line"][3]["lines_removed"] >= 11
    assert int(one["line"][0]["text"].str.contains(BANNER, literal=True).sum()) == 1  # its first occurrence
    assert one["exact"][3]["with_copies_in_other_drops"] >= 4 and one["exact"][3]["duplicate_groups"] >= 4
    assert one["near"][3]["cross_drop_pairs"] >= 8
    assert list((tmp_path / "spill").iterdir()) == []  # every call removed its spill files


def test_engine_settings_do_not_change_the_configuration_hashes():
    tuned = CurationConfig.model_validate({"engine": {"batch_rows": 1, "memory_limit": "16MB", "threads": 1,
                                                      "workers": 2}})
    assert tuned.drop_stages_hash == CurationConfig().drop_stages_hash and tuned.hash == CurationConfig().hash


def test_exact_dedup_spills_to_disk_under_a_tiny_memory_limit_and_still_answers(tmp_path):
    # 20,000 documents, every content twice in the drop; an index of 40,000 entries, a quarter of which match.
    n = 20_000
    docs = pl.DataFrame({"doc_id": [f"d{i:06d}" for i in range(n)], "text": [f"text number {i % (n // 2)}"
                                                                               for i in range(n)],
                         "drop": ["b"] * n, "drop_order": [1] * n})
    docs.write_parquet(tmp_path / "b.parquet", row_group_size=5_000)
    index_texts = [f"text number {i}" for i in range(n // 4, n // 4 + 2 * n)]
    hashes = [xxhash.xxh3_128_hexdigest(t.encode()) for t in index_texts]  # independent of the stage's hashing
    pl.DataFrame({"content_hash": hashes, "doc_id": [f"i{i:06d}" for i in range(len(hashes))]}).select(
        *hash_words(pl.col("content_hash")), "doc_id").write_parquet(tmp_path / "a.parquet")

    spill, peak, stop = tmp_path / "spill", [0], threading.Event()

    def watch() -> None:  # DuckDB's temporary files appear under the call's spill folder while it runs
        while not stop.wait(0.005):
            files = [f for f in spill.rglob("*") if f.is_file() and "duckdb" in f.parts] if spill.exists() else []
            peak[0] = max(peak[0], sum(f.stat().st_size for f in files if f.exists()))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result, entries = exact_duplicates(
            ParquetDropInput(tmp_path / "b.parquet", "b", 5_000), [IndexPart(tmp_path / "a.parquet", "a", 0)],
            ExactDedupConfig(), ooc=OutOfCore(memory_limit="20MB", spill_dir=str(spill), threads=1))
    finally:
        stop.set()
        watcher.join()
    assert peak[0] > 0  # the working set did not fit in 20 MB: DuckDB spilled
    # Right answer: every document has its in-drop twin; contents n/4 .. n/2 - 1 also have one index copy.
    flags = result.verdicts
    assert flags.height == n and set(flags["rule"]) == {"exact_dedup.duplicate"}
    in_index = {f"text number {i}" for i in range(n // 4, n // 2)}
    assert result.metrics["with_copies_in_other_drops"] == 2 * len(in_index)
    expected_first = {f"d{i:06d}": (f"d{i + n // 2:06d}" if i < n // 2 else f"d{i - n // 2:06d}") for i in range(n)}
    index_first = dict(zip(index_texts, (f"i{i:06d}" for i in range(len(hashes)))))
    texts = dict(zip(docs["doc_id"], docs["text"]))
    for doc_id, other in flags.select("doc_id", "duplicate_of").iter_rows():
        # The index copy is in the earlier drop, so it comes first by the keep rule when there is one.
        assert other == index_first.get(texts[doc_id], expected_first[doc_id])
    assert _whole(entries).height == n and list(spill.iterdir()) == []


def test_near_dedup_hands_its_index_entries_back_in_batches(two_drops, tmp_path):
    """Near dedup's index entries (about 150 bytes per document) come back as batches of at most ``batch_rows``
    read from a spill file, as line and exact dedup's do, never as one frame of the whole drop; the same rows as
    a frame in gives."""
    folder, _, near, drop_a = two_drops
    ooc = OutOfCore(batch_rows=7, memory_limit="256MB", spill_dir=str(tmp_path / "spill"))

    def content(rows: pl.DataFrame) -> pl.DataFrame:
        return drop_a.join(rows.select("doc_id"), on="doc_id", how="semi").select("doc_id", "text")

    _, entries = near_duplicates(ParquetDropInput(folder / "b.parquet", "b", 7), [IndexPart(near, "a", 0)],
                                 NearDedupConfig(), index_content=content, ooc=ooc)
    assert not isinstance(entries, pl.DataFrame)
    batches = list(entries)
    assert len(batches) >= 5 and all(0 < batch.height <= 7 for batch in batches)
    _, whole = near_duplicates(pl.read_parquet(folder / "b.parquet"), [IndexPart(near, "a", 0)], NearDedupConfig(),
                               index_content=content)
    assert pl.concat(batches).equals(whole) and whole.height >= 35
    assert list((tmp_path / "spill").iterdir()) == []  # the entries' spill folder went once they were read


@pytest.mark.parametrize("stage", ["line", "near"])
def test_duckdb_holds_no_table_that_grows_with_the_drop(stage, monkeypatch, tmp_path):
    """What line and near dedup compute per document or per distinct line (line counts; doc_ids, keep ranks and 14
    band rows per document) lives in spill files that DuckDB reads, not in tables of its in-memory database, which
    stay in its buffer pool up to ``memory_limit`` and so grew with the drop. Measured on the real connections,
    just before each is closed: the bytes of in-memory tables for a drop of 4,000 documents are no more than for
    one of 1,000."""
    from contextlib import contextmanager

    import curation_platform.ops.dedup_minhash as near_module
    import curation_platform.ops.line_dedup as line_module
    from curation_platform.outofcore import duckdb_connection

    held: list[int] = []
    module = line_module if stage == "line" else near_module

    @contextmanager
    def observed(ooc, temp_directory):
        with duckdb_connection(ooc, temp_directory) as connection:
            yield connection
            held.append(connection.execute("SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() "
                                           "WHERE tag = 'IN_MEMORY_TABLE'").fetchall()[0][0])

    monkeypatch.setattr(module, "duckdb_connection", observed)
    peaks = []
    for n in (1_000, 4_000):
        held.clear()
        docs = _drop([f"{BANNER}\n\n{t}" for t in _texts(n, seed=n)], "d", "d", 0)
        ooc = OutOfCore(batch_rows=1_000, memory_limit="256MB", spill_dir=str(tmp_path / "spill"))
        if stage == "line":
            result, entries = line_dedup(FrameDropInput(docs, batch_rows=1_000), [], LineDedupConfig(), ooc=ooc)
        else:
            result, entries = near_duplicates(FrameDropInput(docs, batch_rows=1_000), [], NearDedupConfig(), ooc=ooc)
        assert sum(batch.height for batch in result.kept) == n  # it ran through (the banner is no text of its own)
        list(entries)
        peaks.append(max(held))
    assert peaks[1] <= peaks[0], peaks
