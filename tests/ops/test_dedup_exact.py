"""Exact dedup: normalized-content hashing, the keep rule, and the persistent index across drops."""

from __future__ import annotations

import polars as pl
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from curation_platform.ops.dedup_exact import (
    EXACT_INDEX_SCHEMA,
    DedupIndexError,
    ExactDedupConfig,
    IndexPart,
    content_hashes,
    empty_exact_index,
    exact_duplicates,
    exact_representatives,
    license_rank,
    sort_by_keep_rule,
)
from curation_platform.records import MESSAGES_DTYPE, VERDICT_SCHEMA


def make_docs(rows: list[dict], drop: str = "2024-01", drop_order: int = 0) -> pl.DataFrame:
    """Real-shaped records: doc_id, source, drop, license, kind, text, messages, drop_order, quality_score."""
    base = {"source": "web-crawl", "license": "CC-BY-4.0", "kind": "web", "messages": None, "quality_score": None}
    full = [{**base, "drop": drop, "drop_order": drop_order, **row} for row in rows]
    return pl.DataFrame(
        full,
        schema={"doc_id": pl.String, "source": pl.String, "drop": pl.String, "drop_order": pl.Int64,
                "license": pl.String, "kind": pl.String, "text": pl.String, "messages": MESSAGES_DTYPE,
                "quality_score": pl.Float64},
    )


def by_id(result) -> dict[str, dict]:
    return {row["doc_id"]: row for row in result.verdicts.iter_rows(named=True)}


def representatives(docs: pl.DataFrame, cfg: ExactDedupConfig | None = None) -> pl.DataFrame:
    """The release's choice among ``docs`` (all allowed): the copies it leaves out, by doc_id."""
    cfg = cfg or ExactDedupConfig()
    return exact_representatives(docs.with_columns(content_hashes(docs, cfg)), cfg)


def kept(docs: pl.DataFrame, cfg: ExactDedupConfig | None = None) -> list[str]:
    return docs.join(representatives(docs, cfg), on="doc_id", how="anti")["doc_id"].to_list()


def test_whitespace_variants_form_one_cluster_and_highest_quality_represents_it():
    docs = make_docs([
        {"doc_id": "a", "text": "The cat sat on the mat.", "quality_score": 0.4},
        {"doc_id": "b", "text": "The  cat sat\non the mat.  ", "quality_score": 0.9},
        {"doc_id": "c", "text": "\tThe cat sat on the mat.", "quality_score": None},
        {"doc_id": "d", "text": "A different sentence.", "quality_score": 0.1},
    ])
    result, entries = exact_duplicates(docs, empty_exact_index(), ExactDedupConfig())
    # The stage drops no copy: it records the cluster on every member, pointing at the keep rule's choice.
    assert result.kept["doc_id"].to_list() == ["a", "b", "c", "d"]
    verdicts = by_id(result)
    assert set(verdicts) == {"a", "b", "c"}
    assert {d: v["duplicate_of"] for d, v in verdicts.items()} == {"a": "b", "b": "a", "c": "b"}
    assert all(v["rule"] == "exact_dedup.duplicate" and v["verdict"] == "flag" for v in verdicts.values())
    assert len({v["cluster_id"] for v in verdicts.values()}) == 1
    assert result.verdicts.schema == pl.Schema(VERDICT_SCHEMA)
    # content_hash is XXH3-128 of the whitespace-collapsed text.
    assert result.kept["content_hash"].to_list()[0] == xxhash.xxh3_128_hexdigest(b"The cat sat on the mat.")
    assert verdicts["a"]["cluster_id"] == result.kept["content_hash"][0]
    assert entries.schema == pl.Schema(EXACT_INDEX_SCHEMA)
    assert sorted(entries["doc_id"].to_list()) == ["a", "b", "c", "d"]
    assert result.metrics["documents_with_copies"] == 3 and result.metrics["largest_duplicate_group"] == 3
    # The release keeps b, the best-scored copy.
    assert kept(docs) == ["b", "d"]
    assert set(representatives(docs)["duplicate_of"]) == {"b"}


def test_license_rank_breaks_a_quality_tie():
    docs = make_docs([
        {"doc_id": "nc", "text": "same text", "quality_score": 0.5, "license": "CC-BY-NC-4.0"},
        {"doc_id": "sa", "text": "same text", "quality_score": 0.5, "license": "CC-BY-SA-4.0"},
        {"doc_id": "mit", "text": "same text", "quality_score": 0.5, "license": "MIT"},
        {"doc_id": "gpl", "text": "same text", "quality_score": 0.5, "license": "GPL-3.0-only"},
    ])
    assert kept(docs) == ["mit"]


def test_a_license_choice_ranks_as_its_laxer_side_in_dedup_as_in_the_release():
    """One classifier: ``MIT OR CC-BY-NC-4.0`` may ship commercially, so dedup ranks it like MIT."""
    from curation_platform.licenses import LicensePolicy, release_license_verdicts

    docs = make_docs([
        {"doc_id": "a-choice", "text": "same", "quality_score": 0.5, "license": "MIT OR CC-BY-NC-4.0"},
        {"doc_id": "b-mit", "text": "same", "quality_score": 0.5, "license": "MIT"},
    ])
    # A license tie, so doc_id decides; the old regex rank put the expression with NC documents.
    assert kept(docs) == ["a-choice"]
    licenses = ["MIT OR CC-BY-NC-4.0", "MIT", "CC-BY-NC-4.0", "MIT AND CC-BY-NC-4.0", "CC0-1.0", "GPL-3.0-only",
                "Apache-2.0 OR GPL-3.0-only", None]
    ranks = license_rank(pl.Series(licenses, dtype=pl.String)).to_list()
    frame = pl.DataFrame({"doc_id": [str(i) for i in range(len(licenses))], "license": licenses,
                          "provenance": ["{}"] * len(licenses)}, schema_overrides={"license": pl.String})
    released = set(release_license_verdicts(frame, LicensePolicy(), "commercial").kept["doc_id"])
    # Every license the commercial profile allows ranks ahead of every license it refuses.
    allowed = [r for i, r in enumerate(ranks) if str(i) in released]
    refused = [r for i, r in enumerate(ranks) if str(i) not in released]
    assert allowed and refused and max(allowed) < min(refused)
    assert ranks[0] == ranks[1]


def test_doc_id_breaks_a_full_tie_and_quality_beats_license():
    docs = make_docs([
        {"doc_id": "z", "text": "same", "quality_score": 0.7, "license": "MIT"},
        {"doc_id": "y", "text": "same", "quality_score": 0.7, "license": "MIT"},
        {"doc_id": "x", "text": "same", "quality_score": 0.69, "license": "CC0-1.0"},
    ])
    assert kept(docs) == ["y"]


def test_configurable_keep_rule_order():
    docs = make_docs([
        {"doc_id": "a", "text": "same", "quality_score": 0.9, "license": "CC-BY-NC-4.0"},
        {"doc_id": "b", "text": "same", "quality_score": 0.1, "license": "CC0-1.0"},
    ])
    assert kept(docs) == ["a"]
    assert kept(docs, ExactDedupConfig(keep_rule=["drop_order", "license", "quality_score"])) == ["b"]


def test_missing_quality_column_falls_back_to_license_then_doc_id():
    docs = make_docs([
        {"doc_id": "b", "text": "same", "license": "MIT"},
        {"doc_id": "a", "text": "same", "license": "MIT"},
        {"doc_id": "c", "text": "same", "license": "CC0-1.0"},
    ]).drop("quality_score")
    assert kept(docs) == ["c"]


def test_cross_drop_copies_are_recorded_and_no_copy_is_dropped():
    drop1 = make_docs([{"doc_id": "old", "text": "Shared paragraph.", "quality_score": 0.1}],
                      drop="2024-01", drop_order=0)
    _, entries1 = exact_duplicates(drop1, empty_exact_index(), ExactDedupConfig())
    # Index entries do not store their drop: the part (a file per drop in the workspace) says it.
    index = [IndexPart(entries1, "2024-01", 0)]
    drop2 = make_docs([
        {"doc_id": "new1", "text": "Shared   paragraph.", "quality_score": 0.99, "license": "CC0-1.0"},
        {"doc_id": "new2", "text": "Shared paragraph.", "quality_score": 0.5},
        {"doc_id": "fresh", "text": "Only in drop two."},
    ], drop="2024-02", drop_order=1)
    result, entries = exact_duplicates(drop2, index, ExactDedupConfig())
    verdicts = by_id(result)
    # Both copies point at the earliest copy, in drop 1; nothing leaves the stage.
    assert verdicts["new1"]["duplicate_of"] == "old" and verdicts["new2"]["duplicate_of"] == "old"
    assert "in drop 2024-01" in verdicts["new1"]["detail"] and "license profile allows" in verdicts["new1"]["detail"]
    assert result.kept["doc_id"].to_list() == ["new1", "new2", "fresh"]
    assert sorted(entries["doc_id"].to_list()) == ["fresh", "new1", "new2"]
    assert entries.schema == pl.Schema(EXACT_INDEX_SCHEMA)
    assert result.metrics["with_copies_in_other_drops"] == 2

    rerun, rerun_entries = exact_duplicates(drop2, index, ExactDedupConfig())
    assert rerun.verdicts.equals(result.verdicts) and rerun.kept.equals(result.kept)
    assert rerun_entries.equals(entries)

    # Drop 1 re-curated later sees drop 2's copies too (the index holds every other drop).
    again, _ = exact_duplicates(drop1, [IndexPart(entries, "2024-02", 1)], ExactDedupConfig())
    # Index entries carry no score: among drop 2 copies, doc_id decides.
    assert by_id(again)["old"]["duplicate_of"] == "new1"
    assert again.kept["doc_id"].to_list() == ["old"]


def test_legacy_hex_index_files_are_read_like_the_compact_ones(tmp_path):
    # Workspaces curated before the compact format hold (content_hash hex, doc_id, drop, drop_order) files.
    old = make_docs([{"doc_id": "old", "text": "Shared paragraph."}], drop="2024-01", drop_order=0)
    legacy = old.select(content_hashes(old, ExactDedupConfig()), "doc_id", "drop", "drop_order")
    legacy.write_parquet(tmp_path / "legacy.parquet")
    _, compact = exact_duplicates(old, empty_exact_index(), ExactDedupConfig())
    compact.write_parquet(tmp_path / "compact.parquet")
    drop2 = make_docs([{"doc_id": "new", "text": "Shared  paragraph."}], drop="2024-02", drop_order=1)
    from_legacy, _ = exact_duplicates(drop2, [IndexPart(tmp_path / "legacy.parquet", "2024-01", 0)],
                                      ExactDedupConfig())
    from_compact, _ = exact_duplicates(drop2, [IndexPart(tmp_path / "compact.parquet", "2024-01", 0)],
                                       ExactDedupConfig())
    assert by_id(from_legacy)["new"]["duplicate_of"] == "old"
    assert from_legacy.verdicts.equals(from_compact.verdicts)
    # The two words are the hex hash's halves.
    row = compact.row(0, named=True)
    assert f"{row['hash_hi']:016x}{row['hash_lo']:016x}" == legacy["content_hash"][0]


def test_taken_down_content_is_blocked():
    docs = make_docs([{"doc_id": "a", "text": "Private  letter."}, {"doc_id": "b", "text": "Public note."}])
    blocked = pl.DataFrame({"doc_id": ["gone"], "content_hash": [xxhash.xxh3_128_hexdigest(b"Private letter.")]})
    result, entries = exact_duplicates(docs, empty_exact_index(), ExactDedupConfig(), blocked=blocked)
    row = by_id(result)["a"]
    assert row["verdict"] == "drop" and row["rule"] == "takedown.blocked" and row["duplicate_of"] == "gone"
    assert result.kept["doc_id"].to_list() == ["b"] and entries["doc_id"].to_list() == ["b"]


def test_rerunning_a_drop_whose_entries_are_in_the_index_does_not_match_itself():
    docs = make_docs([{"doc_id": "a", "text": "one"}, {"doc_id": "b", "text": "one"}, {"doc_id": "c", "text": "two"}])
    first, index = exact_duplicates(docs, empty_exact_index(), ExactDedupConfig())
    rerun, rerun_index = exact_duplicates(docs, index, ExactDedupConfig())
    assert rerun.verdicts.equals(first.verdicts) and rerun_index.equals(index)


def test_case_is_kept_unless_lowercase_is_on():
    docs = make_docs([{"doc_id": "a", "text": "Hello World"}, {"doc_id": "b", "text": "hello world"}])
    assert exact_duplicates(docs, empty_exact_index(), ExactDedupConfig())[0].verdicts.is_empty()
    lowered, _ = exact_duplicates(docs, empty_exact_index(), ExactDedupConfig(lowercase=True))
    assert lowered.verdicts["doc_id"].to_list() == ["a", "b"]
    no_collapse, _ = exact_duplicates(
        make_docs([{"doc_id": "a", "text": "a  b"}, {"doc_id": "b", "text": "a b"}]),
        empty_exact_index(), ExactDedupConfig(collapse_whitespace=False),
    )
    assert no_collapse.verdicts.is_empty()


def test_chat_records_are_compared_on_their_messages():
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"}]
    docs = make_docs([
        {"doc_id": "c1", "kind": "chat", "text": None, "messages": chat},
        {"doc_id": "c2", "kind": "chat", "text": None, "messages": chat},
        {"doc_id": "c3", "kind": "chat", "text": None, "messages": chat[:1]},
    ])
    result, _ = exact_duplicates(docs, empty_exact_index(), ExactDedupConfig())
    assert result.verdicts["doc_id"].to_list() == ["c1", "c2"]
    assert kept(docs) == ["c1", "c3"]


def test_index_with_wrong_schema_is_refused():
    docs = make_docs([{"doc_id": "a", "text": "x"}])
    with pytest.raises(DedupIndexError, match="content_hash"):
        exact_duplicates(docs, pl.DataFrame({"doc_id": ["z"]}), ExactDedupConfig())


def test_config_forbids_unknown_fields_and_repeated_keys():
    with pytest.raises(ValidationError):
        ExactDedupConfig(lower_case=True)
    with pytest.raises(ValidationError):
        ExactDedupConfig(keep_rule=["license", "license"])


@pytest.mark.parametrize(
    ("spdx", "rank"),
    [("CC0-1.0", 0), ("MIT", 1), ("Apache-2.0", 1), ("MIT OR Apache-2.0", 1), ("MIT OR CC-BY-NC-4.0", 1),
     ("CC-BY-SA-4.0", 3), ("GPL-3.0-only", 4), ("GPL-3.0-only AND MIT", 4), ("CC-BY-NC-4.0", 5),
     ("MIT AND CC-BY-NC-4.0", 5), ("CC-BY-ND-4.0", 6), (None, 7), ("LicenseRef-proprietary AND Apache-2.0", 7)],
)
def test_license_rank(spdx, rank):
    assert license_rank(pl.Series([spdx], dtype=pl.String)).item() == rank


def test_sort_by_keep_rule_puts_earliest_drop_first():
    frame = pl.DataFrame({"doc_id": ["a", "b", "c"], "drop_order": [2, 1, 1], "quality_score": [0.9, None, 0.2],
                          "license": ["MIT", "MIT", "MIT"]})
    assert sort_by_keep_rule(frame, ExactDedupConfig())["doc_id"].to_list() == ["c", "b", "a"]


texts = st.sampled_from(["alpha beta", "alpha  beta", "gamma", "Gamma", "delta epsilon", ""])
doc_rows = st.lists(
    st.tuples(texts, st.one_of(st.none(), st.floats(0, 1)), st.sampled_from(["MIT", "CC-BY-4.0", "CC0-1.0", None])),
    min_size=1, max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(doc_rows, st.randoms(use_true_random=False))
def test_properties_unique_survivors_and_order_independence(rows, rnd):
    docs = make_docs([
        {"doc_id": f"d{i:03d}", "text": text, "quality_score": quality, "license": lic}
        for i, (text, quality, lic) in enumerate(rows)
    ])
    result, entries = exact_duplicates(docs, empty_exact_index(), ExactDedupConfig())
    # Nothing lost at the stage; every document with a copy is flagged, pointing at another member of its cluster.
    assert result.kept.height == docs.height == entries.height
    hashes = dict(zip(result.kept["doc_id"], result.kept["content_hash"]))
    copies = result.kept["content_hash"].value_counts()
    assert result.verdicts.height == int(copies.filter(pl.col("count") > 1)["count"].sum())
    for doc_id, other in result.verdicts.select("doc_id", "duplicate_of").iter_rows():
        assert hashes[doc_id] == hashes[other] and doc_id != other
    # The release keeps one copy per content, and every other copy points at it.
    chosen = representatives(docs)
    survivors = docs.join(chosen, on="doc_id", how="anti")
    assert survivors.height == copies.height
    assert set(chosen["duplicate_of"]) <= set(survivors["doc_id"])
    # The keep rule is a total order: shuffling the input changes nothing.
    shuffled = docs.sample(fraction=1.0, shuffle=True, seed=rnd.randint(0, 10_000))
    again, again_entries = exact_duplicates(shuffled, empty_exact_index(), ExactDedupConfig())
    assert again.verdicts.equals(result.verdicts)
    assert again_entries.equals(entries)
    assert representatives(shuffled).sort("doc_id").equals(chosen.sort("doc_id"))


def test_a_drop_input_gets_its_index_entries_as_batches_from_disk_not_one_frame(tmp_path):
    # ~40 bytes a document for the whole drop: the entries come back as an iterator of at most batch_rows rows
    # each (DuckDB wrote them sorted to a spill file), never as one frame.
    from curation_platform.outofcore import OutOfCore
    from curation_platform.records import FrameDropInput

    docs = make_docs([{"doc_id": f"d{i}", "text": f"page {i % 4}"} for i in range(9)])
    ooc = OutOfCore(batch_rows=2, spill_dir=str(tmp_path / "spill"))
    result, entries = exact_duplicates(FrameDropInput(docs, batch_rows=2), empty_exact_index(), ExactDedupConfig(),
                                       ooc=ooc)
    assert not isinstance(entries, pl.DataFrame)
    frames = list(entries)
    assert len(frames) > 1 and max(f.height for f in frames) <= 2
    got = pl.concat(frames)
    assert got.schema == pl.Schema(EXACT_INDEX_SCHEMA)
    assert sorted(got["doc_id"]) == sorted(docs["doc_id"])
    pairs = list(zip(got["hash_hi"], got["hash_lo"]))
    assert pairs == sorted(pairs) and len(set(pairs)) == 4
    list(result.kept)
    assert not any((tmp_path / "spill").iterdir())
