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
    empty_exact_index,
    exact_duplicates,
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


def test_whitespace_variants_are_duplicates_and_highest_quality_wins():
    docs = make_docs([
        {"doc_id": "a", "text": "The cat sat on the mat.", "quality_score": 0.4},
        {"doc_id": "b", "text": "The  cat sat\non the mat.  ", "quality_score": 0.9},
        {"doc_id": "c", "text": "\tThe cat sat on the mat.", "quality_score": None},
        {"doc_id": "d", "text": "A different sentence.", "quality_score": 0.1},
    ])
    result, entries = exact_duplicates(docs, empty_exact_index(), ExactDedupConfig())
    verdicts = by_id(result)
    assert set(verdicts) == {"a", "c"}
    assert {v["duplicate_of"] for v in verdicts.values()} == {"b"}
    assert all(v["rule"] == "exact_dedup.duplicate" and v["verdict"] == "drop" for v in verdicts.values())
    assert result.kept["doc_id"].to_list() == ["b", "d"]  # input order kept
    assert result.verdicts.schema == pl.Schema(VERDICT_SCHEMA)
    # content_hash is XXH3-128 of the whitespace-collapsed text.
    assert result.kept["content_hash"].to_list()[0] == xxhash.xxh3_128_hexdigest(b"The cat sat on the mat.")
    assert entries.schema == pl.Schema(EXACT_INDEX_SCHEMA)
    assert sorted(entries["doc_id"].to_list()) == ["b", "d"]
    assert result.metrics["removed_within_drop"] == 2
    assert result.metrics["largest_duplicate_group"] == 3


def test_license_rank_breaks_a_quality_tie():
    docs = make_docs([
        {"doc_id": "nc", "text": "same text", "quality_score": 0.5, "license": "CC-BY-NC-4.0"},
        {"doc_id": "sa", "text": "same text", "quality_score": 0.5, "license": "CC-BY-SA-4.0"},
        {"doc_id": "mit", "text": "same text", "quality_score": 0.5, "license": "MIT"},
        {"doc_id": "by", "text": "same text", "quality_score": 0.5, "license": "CC-BY-4.0"},
    ])
    result, _ = exact_duplicates(docs, empty_exact_index(), ExactDedupConfig())
    assert result.kept["doc_id"].to_list() == ["mit"]
    assert set(result.verdicts["duplicate_of"]) == {"mit"}


def test_doc_id_breaks_a_full_tie_and_quality_beats_license():
    docs = make_docs([
        {"doc_id": "z", "text": "same", "quality_score": 0.7, "license": "MIT"},
        {"doc_id": "y", "text": "same", "quality_score": 0.7, "license": "MIT"},
        {"doc_id": "x", "text": "same", "quality_score": 0.69, "license": "CC0-1.0"},
    ])
    result, _ = exact_duplicates(docs, empty_exact_index(), ExactDedupConfig())
    assert result.kept["doc_id"].to_list() == ["y"]


def test_configurable_keep_rule_order():
    docs = make_docs([
        {"doc_id": "a", "text": "same", "quality_score": 0.9, "license": "CC-BY-NC-4.0"},
        {"doc_id": "b", "text": "same", "quality_score": 0.1, "license": "CC0-1.0"},
    ])
    default, _ = exact_duplicates(docs, empty_exact_index(), ExactDedupConfig())
    license_first, _ = exact_duplicates(
        docs, empty_exact_index(), ExactDedupConfig(keep_rule=["drop_order", "license", "quality_score"])
    )
    assert default.kept["doc_id"].to_list() == ["a"]
    assert license_first.kept["doc_id"].to_list() == ["b"]


def test_missing_quality_column_falls_back_to_license_then_doc_id():
    docs = make_docs([
        {"doc_id": "b", "text": "same", "license": "MIT"},
        {"doc_id": "a", "text": "same", "license": "MIT"},
        {"doc_id": "c", "text": "same", "license": "CC0-1.0"},
    ]).drop("quality_score")
    result, _ = exact_duplicates(docs, empty_exact_index(), ExactDedupConfig())
    assert result.kept["doc_id"].to_list() == ["c"]


def test_cross_drop_duplicate_points_to_the_indexed_document():
    drop1 = make_docs([{"doc_id": "old", "text": "Shared paragraph.", "quality_score": 0.1}],
                      drop="2024-01", drop_order=0)
    _, index = exact_duplicates(drop1, empty_exact_index(), ExactDedupConfig())
    drop2 = make_docs([
        {"doc_id": "new1", "text": "Shared   paragraph.", "quality_score": 0.99, "license": "CC0-1.0"},
        {"doc_id": "new2", "text": "Shared paragraph.", "quality_score": 0.5},
        {"doc_id": "fresh", "text": "Only in drop two."},
    ], drop="2024-02", drop_order=1)
    result, entries = exact_duplicates(drop2, index, ExactDedupConfig())
    verdicts = by_id(result)
    # Earliest drop wins even against a better and more permissive later document.
    assert verdicts["new1"]["duplicate_of"] == "old" and verdicts["new2"]["duplicate_of"] == "old"
    assert "earlier drop 2024-01" in verdicts["new1"]["detail"]
    assert result.kept["doc_id"].to_list() == ["fresh"]
    assert entries["doc_id"].to_list() == ["fresh"] and entries["drop_order"].to_list() == [1]
    assert result.metrics["removed_cross_drop"] == 2

    rerun, rerun_entries = exact_duplicates(drop2, index, ExactDedupConfig())
    assert rerun.verdicts.equals(result.verdicts) and rerun.kept.equals(result.kept)
    assert rerun_entries.equals(entries)


def test_rerunning_a_drop_whose_entries_are_in_the_index_does_not_match_itself():
    docs = make_docs([{"doc_id": "a", "text": "one"}, {"doc_id": "b", "text": "one"}, {"doc_id": "c", "text": "two"}])
    first, index = exact_duplicates(docs, empty_exact_index(), ExactDedupConfig())
    rerun, rerun_index = exact_duplicates(docs, index, ExactDedupConfig())
    assert rerun.verdicts.equals(first.verdicts) and rerun_index.equals(index)


def test_case_is_kept_unless_lowercase_is_on():
    docs = make_docs([{"doc_id": "a", "text": "Hello World"}, {"doc_id": "b", "text": "hello world"}])
    assert exact_duplicates(docs, empty_exact_index(), ExactDedupConfig())[0].verdicts.is_empty()
    lowered, _ = exact_duplicates(docs, empty_exact_index(), ExactDedupConfig(lowercase=True))
    assert lowered.verdicts["doc_id"].to_list() == ["b"]
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
    assert result.verdicts["doc_id"].to_list() == ["c2"]


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
    [("CC0-1.0", 0), ("CC-PDDC", 0), ("Unlicense", 0), ("MIT", 1), ("Apache-2.0", 1), ("BSD-3-Clause", 1),
     ("0BSD", 1), ("MIT OR Apache-2.0", 1), ("CC-BY-4.0", 2), ("ODC-By-1.0", 2), ("CC-BY-SA-4.0", 3),
     ("CC-BY-NC-4.0", 4), ("CC-BY-NC-SA-4.0", 4), ("CC-BY-ND-4.0", 4), ("GPL-3.0-only", 4), (None, 4),
     ("GPL-3.0-only AND MIT", 4), ("LicenseRef-proprietary AND Apache-2.0", 4), ("MPL-2.0", 4), ("LGPL-2.1-only", 4)],
)
def test_license_rank(spdx, rank):
    frame = pl.DataFrame({"license": [spdx]}, schema={"license": pl.String})
    assert frame.select(license_rank(pl.col("license"))).to_series().item() == rank


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
    kept = result.kept
    # Nothing lost, survivors unique by content, every duplicate points at a survivor of the same content.
    assert kept.height + result.verdicts.height == docs.height
    assert kept["content_hash"].n_unique() == kept.height
    assert set(result.verdicts["duplicate_of"]) <= set(kept["doc_id"])
    assert entries.height == kept.height
    # The keep rule is a total order: shuffling the input changes nothing.
    shuffled = docs.sample(fraction=1.0, shuffle=True, seed=rnd.randint(0, 10_000))
    again, again_entries = exact_duplicates(shuffled, empty_exact_index(), ExactDedupConfig())
    assert again.verdicts.equals(result.verdicts)
    assert sorted(again.kept["doc_id"]) == sorted(kept["doc_id"])
    assert again_entries.equals(entries)
