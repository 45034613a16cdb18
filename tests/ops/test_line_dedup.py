"""Tests for ops/line_dedup.py: boilerplate paragraphs removed corpus-wide, unique paragraphs never touched."""

from __future__ import annotations

import random

import polars as pl

from curation_platform.ops.line_dedup import LineDedupConfig, line_dedup
from curation_platform.workspace import write_parquet_atomic

BANNER = "We use cookies to improve your experience. By continuing to browse you accept our cookie policy."
FOOTER = "Copyright 2024 Example Media Group. All rights reserved. Terms of use apply to this page."


def corpus(n: int, seed: int, planted: dict[str, float], prefix: str = "d") -> pl.DataFrame:
    """n web documents of four unique paragraphs; each planted paragraph goes into the given share of them."""
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        paragraphs = [f"{prefix}{i} paragraph {j}: " + " ".join(rng.choice(WORDS) for _ in range(25)) + "."
                      for j in range(4)]
        for text, share in planted.items():
            if i < round(share * n):
                paragraphs.insert(rng.randrange(len(paragraphs) + 1), text)
        texts.append("\n\n".join(paragraphs))
    order = list(range(n))
    rng.shuffle(order)  # planted documents spread through the drop
    return pl.DataFrame({"doc_id": [f"{prefix}{i}" for i in order], "kind": ["web"] * n,
                         "text": [texts[i] for i in order]})


WORDS = ("river valley farm wheat rain village school stone market bread cheese honey wool trader visitor "
         "harbour museum ship model curator wing garden bridge tower lantern orchard").split()


def paragraphs(texts: pl.Series) -> list[set[str]]:
    return [set(p for p in t.split("\n") if p.strip()) for t in texts.to_list()]


def test_boilerplate_in_30_percent_of_documents_survives_in_at_most_one_and_no_unique_paragraph_is_removed():
    docs = corpus(200, seed=1, planted={BANNER: 0.3, FOOTER: 0.5})
    result, entries = line_dedup(docs, [], LineDedupConfig())
    kept = result.kept
    assert kept.height == docs.height  # documents stay: only the repeated lines go
    assert int(kept["text"].str.contains(BANNER, literal=True).sum()) <= 1
    assert int(kept["text"].str.contains(FOOTER, literal=True).sum()) <= 1
    before = dict(zip(docs["doc_id"], paragraphs(docs["text"])))
    after = dict(zip(kept["doc_id"], paragraphs(kept["text"])))
    for doc_id, paras in before.items():
        assert paras - {BANNER, FOOTER} <= after[doc_id]  # every unique paragraph is still there
    flags = result.verdicts.filter(pl.col("rule") == "line_dedup.removed_lines")
    edited = {d for d, paras in before.items() if (paras & {BANNER, FOOTER}) - after[d]}
    assert set(flags["doc_id"]) == edited and len(edited) >= 100 - 2  # 100 documents hold one of them
    assert entries.schema == pl.Schema({"line_hash": pl.UInt64, "documents": pl.UInt32})


def test_lines_below_min_documents_stay_and_short_leftovers_are_dropped():
    docs = pl.DataFrame({
        "doc_id": ["a", "b", "c", "d", "e", "f"],
        "kind": ["web"] * 5 + ["code"],
        "text": [f"{BANNER}\n\nA real article about the harbour museum and its ship models, number {i}."
                 for i in range(3)] + [BANNER, f"{BANNER}\nok", BANNER],
    })
    # The banner is in five web documents (the code document does not count): boilerplate.
    result, _ = line_dedup(docs, [], LineDedupConfig(min_documents=5, min_chars=20))
    texts = dict(zip(result.kept["doc_id"], result.kept["text"]))
    assert texts["a"].startswith(BANNER)  # the first occurrence keeps it
    assert BANNER not in texts["b"] and texts["b"].startswith("A real article")
    assert texts["f"] == BANNER  # code is not line-deduped
    drops = result.verdicts.filter(pl.col("verdict") == "drop").sort("doc_id")
    assert drops.select("doc_id", "rule").rows() == [("d", "line_dedup.too_short"), ("e", "line_dedup.too_short")]
    # With a higher bar nothing is removed.
    untouched, _ = line_dedup(docs, [], LineDedupConfig(min_documents=6))
    assert untouched.kept.equals(docs) and untouched.verdicts.is_empty()


def test_exact_copies_count_once_and_stay_identical():
    text = f"{BANNER}\n\nThe only article in this drop, about lanterns on the old bridge."
    docs = pl.DataFrame({"doc_id": [f"c{i}" for i in range(6)], "kind": ["web"] * 6, "text": [text] * 6})
    result, entries = line_dedup(docs, [], LineDedupConfig(min_documents=2))
    assert result.kept["text"].to_list() == [text] * 6  # left for exact dedup, which records the copies
    assert entries["documents"].to_list() == [1, 1]


def test_counts_persist_across_drops_through_the_index(tmp_path):
    first = corpus(10, seed=2, planted={BANNER: 0.3}, prefix="a")  # 3 documents: under the bar of 5
    result1, entries1 = line_dedup(first, [], LineDedupConfig())
    assert result1.verdicts.is_empty()
    index = write_parquet_atomic(entries1, tmp_path / "index" / "lines" / "drop-a.parquet")
    second = corpus(10, seed=3, planted={BANNER: 0.2}, prefix="b")  # 2 more: 5 in the corpus
    result2, _ = line_dedup(second, [index], LineDedupConfig())
    # The earlier drop holds the first occurrence, so the banner leaves every document of this drop.
    assert int(result2.kept["text"].str.contains(BANNER, literal=True).sum()) == 0
    assert result2.metrics["documents_edited"] == 2
    # Without the earlier index the second drop alone (2 documents) is under the bar.
    alone, _ = line_dedup(second, [], LineDedupConfig())
    assert alone.verdicts.is_empty()


def test_a_drop_input_gets_its_index_entries_as_batches_from_disk_not_one_frame(tmp_path):
    # A drop's distinct lines grow with the drop (tens of millions at 4 GB of text): the entries come back as an
    # iterator of at most batch_rows rows each (DuckDB wrote them to a spill file), never as one frame.
    from curation_platform.outofcore import OutOfCore
    from curation_platform.records import FrameDropInput

    docs = corpus(30, seed=3, planted={BANNER: 0.5})
    ooc = OutOfCore(batch_rows=7, spill_dir=str(tmp_path / "spill"))
    result, entries = line_dedup(FrameDropInput(docs, batch_rows=7), [], LineDedupConfig(), ooc=ooc)
    assert not isinstance(entries, pl.DataFrame)
    frames = list(entries)
    assert len(frames) > 1 and max(f.height for f in frames) <= 7
    got = pl.concat(frames)
    assert got.schema == pl.Schema({"line_hash": pl.UInt64, "documents": pl.UInt32})
    assert got["line_hash"].is_sorted()
    # Counted independently: one entry per distinct stripped line, documents summing to the (text, line) pairs.
    lines_per_text = [{line.strip() for line in text.split("\n") if line.strip()} for text in set(docs["text"])]
    assert got.height == len(set().union(*lines_per_text))
    assert int(got["documents"].sum()) == sum(len(lines) for lines in lines_per_text)
    # Its verdicts (a flag per edited document) come back the same way, read from disk in batches.
    assert not isinstance(result.verdicts, pl.DataFrame)
    verdicts = list(result.verdicts)
    assert max(f.height for f in verdicts) <= 7
    flagged = pl.concat(verdicts).filter(pl.col("rule") == "line_dedup.removed_lines")["doc_id"]
    planted = docs.filter(pl.col("text").str.contains(BANNER, literal=True))["doc_id"]
    assert flagged.len() == planted.len() - 1 and set(flagged) < set(planted)  # all but the first occurrence
    list(result.kept)  # the stage reads on; its spill folders are gone once everything is read
    assert not any((tmp_path / "spill").iterdir())
