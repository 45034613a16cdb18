"""MinHash LSH near-dedup: planted duplicates found, no chain collapse, templates survive, incremental index."""

from __future__ import annotations

import itertools
import random
import re

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from curation_platform.ops.dedup_exact import DedupIndexError, IndexPart, sort_by_keep_rule
from curation_platform.ops.dedup_minhash import (
    _CANDIDATES_SQL,
    NEAR_INDEX_SCHEMA,
    NearDedupConfig,
    band_keys,
    empty_near_index,
    lsh_false_rates,
    lsh_params,
    minhash_signatures,
    exact_jaccard,
    near_duplicates,
    near_representatives,
    optimal_lsh_params,
    shingle_hashes,
)
from curation_platform.outofcore import OutOfCore, duckdb_connection
from curation_platform.records import VERDICT_SCHEMA

RNG_SEED = 20240601


def vocabulary(size: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = {"".join(rnd.choice(letters) for _ in range(rnd.randint(3, 9))) for _ in range(size * 2)}
    return sorted(words)[:size]


VOCAB = vocabulary(6000, RNG_SEED)


def substitute(words: list[str], rate: float, rnd: random.Random) -> list[str]:
    """Replace round(rate * len) distinct word positions with random vocabulary words."""
    out = list(words)
    for pos in rnd.sample(range(len(out)), round(rate * len(out))):
        out[pos] = rnd.choice(VOCAB)
    return out


def reference_shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    """Independent pure-Python shingling with the same normalization, for brute-force exact Jaccard."""
    text = re.sub(r"[^\w\s]|_", "", text.lower())
    words = re.sub(r"\d", "0", text).split()
    if not words:
        return set()
    if len(words) < n:
        return {tuple(words)}
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def frame(texts: list[str], ids: list[str] | None = None, drop: str = "2024-01", drop_order: int = 0,
          quality: list[float | None] | None = None, licenses: list[str] | None = None) -> pl.DataFrame:
    n = len(texts)
    return pl.DataFrame(
        {
            "doc_id": ids or [f"doc{i:03d}" for i in range(n)],
            "source": ["forum"] * n,
            "drop": [drop] * n,
            "drop_order": [drop_order] * n,
            "license": licenses or ["CC-BY-4.0"] * n,
            "kind": ["web"] * n,
            "text": texts,
            "quality_score": quality or [None] * n,
        },
        schema={"doc_id": pl.String, "source": pl.String, "drop": pl.String, "drop_order": pl.Int64,
                "license": pl.String, "kind": pl.String, "text": pl.String, "quality_score": pl.Float64},
    )


@pytest.fixture(scope="module")
def corpus() -> pl.DataFrame:
    """300 documents: 120 originals and 180 variants at known word-substitution rates (some of variants)."""
    rnd = random.Random(RNG_SEED)
    texts = [[rnd.choice(VOCAB) for _ in range(rnd.randint(150, 250))] for _ in range(120)]
    rates = [0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.3]
    while len(texts) < 300:
        parent = rnd.choice(texts)
        texts.append(substitute(parent, rnd.choice(rates), rnd))
    rnd.shuffle(texts)
    quality = [round(rnd.random(), 3) for _ in texts]
    licenses = [rnd.choice(["MIT", "CC-BY-4.0", "CC-BY-SA-4.0", "CC0-1.0"]) for _ in texts]
    return frame([" ".join(t) for t in texts], quality=quality, licenses=licenses)


@pytest.fixture(scope="module")
def corpus_jaccard(corpus) -> dict[tuple[str, str], float]:
    shingles = {d: reference_shingles(t) for d, t in corpus.select("doc_id", "text").iter_rows()}
    return {(a, b): jaccard(shingles[a], shingles[b]) for a, b in itertools.combinations(sorted(shingles), 2)}


def pair_j(table: dict, a: str, b: str) -> float:
    return table[(a, b) if a < b else (b, a)]


def content_of(*frames: pl.DataFrame):
    """``index_content`` for tests: index documents' text looked up in the given drop frames."""
    every = pl.concat(frames, how="vertical_relaxed")
    return lambda rows: every.join(rows.select("doc_id"), on="doc_id", how="semi").select("doc_id", "text")


def part(entries: pl.DataFrame, drop: str, drop_order: int) -> list[IndexPart]:
    """One drop's index entries (they do not store their drop: the workspace file does)."""
    return [IndexPart(entries, drop, drop_order)]


def pairs_of(result) -> pl.DataFrame:
    return result.verdicts.filter(pl.col("verdict") == "flag")


def release_choice(docs: pl.DataFrame, result, cfg: NearDedupConfig) -> tuple[set[str], dict[str, dict]]:
    """What a release that allows every document ships from ``docs`` given the pairs the stage recorded:
    (kept doc_ids, {left-out doc_id: its row})."""
    removed = near_representatives(docs, pairs_of(result), cfg)
    rows = {row["doc_id"]: row for row in removed.iter_rows(named=True)}
    return set(docs["doc_id"]) - set(rows), rows


def greedy_oracle(docs: pl.DataFrame, cfg: NearDedupConfig) -> set[str]:
    """Brute-force keep rule: in keep order, drop a document iff some kept document shares a band key with it
    and reaches the verification threshold in exact Jaccard of the shingle sets."""
    bands, rows = lsh_params(cfg)
    ordered = sort_by_keep_rule(docs, cfg)
    sig = minhash_signatures(ordered["text"], cfg)
    keys = band_keys(sig, bands, rows)
    shingles = [reference_shingles(t) for t in ordered["text"]]
    kept: list[int] = []
    for i in range(ordered.height):
        duplicate = any(
            (keys[i] == keys[j]).any() and jaccard(shingles[i], shingles[j]) >= cfg.verify_threshold for j in kept
        )
        if not duplicate:
            kept.append(i)
    return set(ordered["doc_id"].gather(kept).to_list())


# ------------------------------------------------------------------------------------------------ signatures


def test_signatures_shape_dtype_determinism_and_normalization():
    cfg = NearDedupConfig()
    texts = pl.Series(["Hello, World! It is 2024 and the sky is blue.",
                       "hello world it is 1999 and the SKY is blue",
                       "", None, "Totally unrelated words appear in this sentence here."])
    sig = minhash_signatures(texts, cfg)
    assert sig.shape == (5, 112) and sig.dtype == np.uint32
    assert np.array_equal(sig, minhash_signatures(texts, cfg))
    assert np.array_equal(sig[0], sig[1])  # case, punctuation and digits are normalized away
    assert (sig[2] == 0xFFFFFFFF).all() and (sig[3] == 0xFFFFFFFF).all()  # no words, no shingles
    assert (sig[0] == sig[4]).mean() < 0.2
    assert not np.array_equal(sig, minhash_signatures(texts, NearDedupConfig(seed=2)))


def test_shingles_match_reference_and_short_texts_are_one_shingle():
    cfg = NearDedupConfig()
    texts = ["One two three four five six seven, one two three four five!", "just three words", "",
             "a b c d e"]
    hashes, counts = shingle_hashes(pl.Series(texts), cfg)
    assert counts.tolist() == [8, 1, 0, 1]
    starts = np.cumsum(counts) - counts
    for i, text in enumerate(texts):
        distinct = len(np.unique(hashes[starts[i] : starts[i] + counts[i]]))
        assert distinct == len(reference_shingles(text))  # "one two three four five" occurs twice


def test_estimated_jaccard_tracks_exact_jaccard(corpus, corpus_jaccard):
    cfg = NearDedupConfig()
    sig = minhash_signatures(corpus["text"], cfg)
    ids = corpus["doc_id"].to_list()
    errors = [abs((sig[i] == sig[j]).mean() - pair_j(corpus_jaccard, ids[i], ids[j]))
              for i, j in itertools.combinations(range(60), 2)]
    assert np.mean(errors) < 0.03 and max(errors) < 0.2


# ------------------------------------------------------------------------------------------------ LSH parameters


def test_optimal_lsh_params_agree_with_datasketch():
    lsh = pytest.importorskip("datasketch.lsh")
    for threshold in (0.5, 0.7, 0.8, 0.9):
        ours = optimal_lsh_params(threshold, 128)
        theirs = lsh._optimal_param(threshold, 128, 0.5, 0.5)
        fp_o, fn_o = lsh_false_rates(threshold, *ours)
        fp_t, fn_t = lsh_false_rates(threshold, *theirs)
        # Same choice, or an equally good one up to integration error.
        assert ours == theirs or abs((fp_o + fn_o) - (fp_t + fn_t)) < 1e-4


def test_target_jaccard_overrides_bands_and_rows():
    cfg = NearDedupConfig(target_jaccard=0.8)
    bands, rows = lsh_params(cfg)
    assert bands * rows <= 112
    fp, fn = lsh_false_rates(0.8, bands, rows)
    fp_fw, fn_fw = lsh_false_rates(0.8, 14, 8)
    assert fp + fn <= fp_fw + fn_fw
    assert lsh_params(NearDedupConfig()) == (14, 8)


def test_config_validation():
    with pytest.raises(ValidationError):
        NearDedupConfig(bands=20, rows=8)  # 160 > 112 permutations
    with pytest.raises(ValidationError):
        NearDedupConfig(num_perms=128)


# ------------------------------------------------------------------------------------------------ the stage


def test_planted_near_duplicates_recall_and_precision(corpus, corpus_jaccard):
    result, entries = near_duplicates(corpus, empty_near_index(), NearDedupConfig())
    # The stage drops nothing; it records verified pairs, and the release picks one copy per cluster.
    assert result.kept.height == corpus.height
    assert result.verdicts.schema == pl.Schema(VERDICT_SCHEMA)
    for row in pairs_of(result).iter_rows(named=True):
        assert row["rule"] == "near_dedup.duplicate" and row["threshold"] == ">= 0.8"
        # The recorded value is the exact Jaccard of the shingle sets.
        assert row["value"] == pytest.approx(pair_j(corpus_jaccard, row["doc_id"], row["duplicate_of"]), abs=1e-9)
        assert row["value"] >= 0.8 and row["cluster_id"] in row["detail"]  # named once, as the copy or its cluster
    kept, removed = release_choice(corpus, result, NearDedupConfig())
    assert kept.isdisjoint(removed) and len(kept) + len(removed) == corpus.height

    similar = [pair for pair, j in corpus_jaccard.items() if j >= 0.85]
    assert len(similar) >= 50  # the corpus really plants near-duplicates
    found = [pair for pair in similar if not (pair[0] in kept and pair[1] in kept)]
    assert len(found) / len(similar) >= 0.95

    for doc_id, row in removed.items():
        assert row["duplicate_of"] in kept
        assert pair_j(corpus_jaccard, doc_id, row["duplicate_of"]) >= 0.8

    assert set(entries["doc_id"]) == set(corpus["doc_id"]) and entries.schema == pl.Schema(NEAR_INDEX_SCHEMA)
    assert "signature" not in entries.columns  # band keys suffice; signatures are recomputed when needed
    assert entries["band_keys"].list.len().unique().to_list() == [14]
    metrics = result.metrics
    assert metrics["verified_pairs"] == pairs_of(result).height and metrics["cross_drop_pairs"] == 0
    assert 1 <= len(metrics["sample_pairs"]) <= 10
    for pair in metrics["sample_pairs"]:
        assert pair["exact_jaccard"] == pytest.approx(pair_j(corpus_jaccard, pair["doc_id"], pair["duplicate_of"]),
                                                      abs=1e-4)
    assert sum(metrics["cluster_size_histogram"].values()) == metrics["clusters"]


def test_stage_matches_brute_force_keep_rule(corpus):
    cfg = NearDedupConfig()
    result, _ = near_duplicates(corpus, empty_near_index(), cfg)
    assert release_choice(corpus, result, cfg)[0] == greedy_oracle(corpus, cfg)


def test_input_order_does_not_matter(corpus):
    cfg = NearDedupConfig()
    result, entries = near_duplicates(corpus, empty_near_index(), cfg)
    shuffled, shuffled_entries = near_duplicates(corpus.sample(fraction=1.0, shuffle=True, seed=7),
                                                 empty_near_index(), cfg)
    assert shuffled.verdicts.equals(result.verdicts)
    assert shuffled_entries.equals(entries)
    assert result.kept.sort("doc_id").equals(shuffled.kept.sort("doc_id"))


def chain_docs() -> tuple[list[str], NearDedupConfig]:
    """A~B, B~C, C~D (Jaccard ~0.66) while A-C, B-D (~0.42) and A-D (~0.25) are below the 0.55 threshold."""
    rnd = random.Random(5)
    blocks = [[rnd.choice(VOCAB) for _ in range(40)] for _ in range(16)]
    texts = [" ".join(itertools.chain.from_iterable(blocks[s : s + 10])) for s in (0, 2, 4, 6)]
    # More permutations keep the estimates far from the threshold; 64 bands of 4 make every pair a candidate.
    return texts, NearDedupConfig(num_perm=256, bands=64, rows=4, verify_threshold=0.55)


def test_chain_does_not_collapse():
    texts, cfg = chain_docs()
    sig = minhash_signatures(pl.Series(texts), cfg)
    est = {(i, j): (sig[i] == sig[j]).mean() for i, j in itertools.combinations(range(4), 2)}
    assert min(est[(0, 1)], est[(1, 2)], est[(2, 3)]) >= 0.6  # preconditions, with margin
    assert max(est[(0, 2)], est[(1, 3)], est[(0, 3)]) <= 0.5

    docs = frame(texts, ids=["a", "b", "c", "d"])
    result, _ = near_duplicates(docs, empty_near_index(), cfg)
    assert sorted(pairs_of(result).select("duplicate_of", "doc_id").rows()) == [("a", "b"), ("b", "c"), ("c", "d")]
    kept, removed = release_choice(docs, result, cfg)
    assert kept == {"a", "c"}
    assert {d: r["duplicate_of"] for d, r in removed.items()} == {"b": "a", "d": "c"}
    # One connected component, named after its first document in keep order.
    assert result.kept["cluster_id"].to_list() == ["a", "a", "a", "a"]
    assert {r["cluster_id"] for r in removed.values()} == {"a"}
    assert result.metrics["clusters"] == 1 and result.metrics["largest_cluster"] == 4

    # Quality reverses the keep order: D first, so D and B survive.
    reversed_quality = frame(texts, ids=["a", "b", "c", "d"], quality=[0.6, 0.7, 0.8, 0.9])
    result, _ = near_duplicates(reversed_quality, empty_near_index(), cfg)
    kept, removed = release_choice(reversed_quality, result, cfg)
    assert kept == {"b", "d"}
    assert {d: r["duplicate_of"] for d, r in removed.items()} == {"c": "d", "a": "b"}


def test_templated_source_is_not_wiped_out():
    """40 pages from one template (shared header, footer and 12 filled slots) stay; only real copies go."""
    rnd = random.Random(11)
    template = [rnd.choice(VOCAB) for _ in range(200)]
    slots = range(8, 200, 16)
    pages = []
    for _ in range(40):
        page = list(template)
        for pos in slots:
            page[pos] = rnd.choice(VOCAB)
        pages.append(page)
    copies = [substitute(pages[0], 0.01, rnd) for _ in range(3)]
    texts = [" ".join(p) for p in pages + copies]
    ids = [f"page{i:02d}" for i in range(40)] + ["zcopy0", "zcopy1", "zcopy2"]  # pages win the doc_id tie
    docs = frame(texts, ids=ids)
    result, _ = near_duplicates(docs, empty_near_index(), NearDedupConfig())
    kept, removed = release_choice(docs, result, NearDedupConfig())
    assert sorted(removed) == ["zcopy0", "zcopy1", "zcopy2"]
    assert {r["duplicate_of"] for r in removed.values()} == {"page00"}
    assert len(kept) == 40


def test_huge_bucket_is_linked_to_its_head_only_and_still_deduplicated():
    rnd = random.Random(3)
    words = [rnd.choice(VOCAB) for _ in range(120)]
    texts = [" ".join(words)] * 30 + [" ".join(substitute(words, 0.01, rnd)) for _ in range(10)]
    docs = frame(texts)
    cfg = NearDedupConfig(bucket_link_limit=2)
    result, _ = near_duplicates(docs, empty_near_index(), cfg)
    assert release_choice(docs, result, cfg)[0] == {"doc000"}
    assert result.metrics["candidate_pairs"] < 40 * 39 / 2


def test_oversized_clusters_are_reported():
    rnd = random.Random(4)
    words = [rnd.choice(VOCAB) for _ in range(100)]
    texts = [" ".join(substitute(words, 0.01, rnd)) for _ in range(4)] + [" ".join(VOCAB[:100])]
    result, _ = near_duplicates(frame(texts), empty_near_index(), NearDedupConfig(max_cluster_size=3))
    assert result.metrics["clusters_over_max_size"] == [{"cluster_id": "doc000", "size": 4}]
    assert result.metrics["cluster_size_histogram"] == {"3-4": 1}
    assert result.kept.filter(pl.col("doc_id") == "doc004")["cluster_id"].to_list() == [None]


def test_documents_without_words_are_kept_and_not_indexed():
    docs = frame(["", "!!! ...", "real words in a real sentence here"])
    result, entries = near_duplicates(docs, empty_near_index(), NearDedupConfig())
    assert result.kept.height == 3 and result.metrics["documents_without_shingles"] == 2
    assert entries["doc_id"].to_list() == ["doc002"]


def test_empty_drop():
    result, entries = near_duplicates(frame([]).head(0), empty_near_index(), NearDedupConfig())
    assert result.kept.height == 0 and result.verdicts.height == 0 and entries.height == 0


# ------------------------------------------------------------------------------------------------ incremental


def incremental_drops():
    rnd = random.Random(9)
    originals = [[rnd.choice(VOCAB) for _ in range(rnd.randint(150, 220))] for _ in range(60)]
    drop1 = frame([" ".join(w) for w in originals], ids=[f"d1-{i:02d}" for i in range(60)],
                  drop="2024-01", drop_order=0, quality=[0.2] * 60)
    fresh = [[rnd.choice(VOCAB) for _ in range(180)] for _ in range(20)]
    texts2 = (
        [" ".join(substitute(originals[i], 0.01, rnd)) for i in range(20)]  # near copies of drop 1
        + [" ".join(w) for w in fresh]
        + [" ".join(substitute(fresh[i], 0.01, rnd)) for i in range(10)]  # near copies within drop 2
    )
    ids2 = [f"d2-copy-{i:02d}" for i in range(20)] + [f"d2-new-{i:02d}" for i in range(20)] + \
        [f"d2-z-copy-{i:02d}" for i in range(10)]
    # Drop 2 copies are better and more permissive: earliest drop still wins.
    drop2 = frame(texts2, ids=ids2, drop="2024-02", drop_order=1, quality=[0.99] * 50, licenses=["CC0-1.0"] * 50)
    return drop1, drop2


def test_second_drop_is_compared_with_the_first_drops_index():
    cfg = NearDedupConfig()
    drop1, drop2 = incremental_drops()
    result1, index1 = near_duplicates(drop1, empty_near_index(), cfg)
    assert result1.verdicts.is_empty() and index1.height == 60

    result2, entries2 = near_duplicates(drop2, part(index1, "2024-01", 0), cfg, index_content=content_of(drop1))
    duplicates = dict(pairs_of(result2).select("doc_id", "duplicate_of").iter_rows())
    assert {d: duplicates[d] for d in duplicates if d.startswith("d2-copy")} == {
        f"d2-copy-{i:02d}": f"d1-{i:02d}" for i in range(20)
    }
    assert {d: duplicates[d] for d in duplicates if d.startswith("d2-z")} == {
        f"d2-z-copy-{i:02d}": f"d2-new-{i:02d}" for i in range(10)
    }
    assert result2.metrics["cross_drop_pairs"] == 20 and result2.metrics["within_drop_pairs"] == 10
    assert all("in drop 2024-01" in d for d in pairs_of(result2).filter(
        pl.col("doc_id").str.starts_with("d2-copy"))["detail"])
    # Nothing leaves the stage; every document is indexed for later drops (and re-curated earlier ones).
    assert result2.kept.height == drop2.height and sorted(entries2["doc_id"]) == sorted(drop2["doc_id"])
    assert entries2.schema == pl.Schema(NEAR_INDEX_SCHEMA)
    # A release allowing both drops keeps the earliest copy, even against better and more permissive copies.
    _, removed = release_choice(pl.concat([drop1, drop2]), result2, cfg)
    assert {d: r["duplicate_of"] for d, r in removed.items()} == duplicates

    # Idempotent: the same drop against the same index gives the same verdicts, documents and entries.
    again, again_entries = near_duplicates(drop2, part(index1, "2024-01", 0), cfg, index_content=content_of(drop1))
    assert again.verdicts.equals(result2.verdicts)
    assert again.kept.equals(result2.kept)
    assert again_entries.equals(entries2)
    assert again.metrics == result2.metrics

    # Drop 3 sees both earlier drops through the concatenated index.
    drop3 = drop2.filter(pl.col("doc_id").str.starts_with("d2-new")).with_columns(
        doc_id=pl.col("doc_id").str.replace("d2-", "d3-"), drop=pl.lit("2024-03"), drop_order=pl.lit(2))
    result3, entries3 = near_duplicates(drop3, part(entries2, "2024-02", 1) + part(index1, "2024-01", 0), cfg,
                                        index_content=content_of(drop1, drop2))
    kept, removed = release_choice(pl.concat([drop1, drop2, drop3], how="vertical_relaxed"), result3, cfg)
    assert set(removed) == set(drop3["doc_id"])
    assert {r["duplicate_of"] for r in removed.values()} == set(drop2.filter(
        pl.col("doc_id").str.starts_with("d2-new"))["doc_id"])


def test_index_from_other_settings_is_refused():
    drop1, drop2 = incremental_drops()
    _, index1 = near_duplicates(drop1.head(5), empty_near_index(), NearDedupConfig(seed=2))
    with pytest.raises(DedupIndexError, match="seed=2"):
        near_duplicates(drop2, part(index1, "2024-01", 0), NearDedupConfig(), index_content=content_of(drop1))
    with pytest.raises(DedupIndexError, match="missing columns"):
        near_duplicates(drop2, part(index1.drop("band_keys"), "2024-01", 0), NearDedupConfig(seed=2))


def test_legacy_index_files_with_signatures_give_the_same_pairs(tmp_path):
    # Workspaces curated before the compact format hold (doc_id, drop, drop_order, band_keys, signature, params).
    drop1, drop2 = incremental_drops()
    cfg = NearDedupConfig()
    _, index1 = near_duplicates(drop1, empty_near_index(), cfg)
    index1.write_parquet(tmp_path / "compact.parquet")
    signatures = minhash_signatures(drop1.sort("doc_id")["text"], cfg)
    legacy = index1.select("doc_id", pl.lit("2024-01").alias("drop"), pl.lit(0).alias("drop_order"), "band_keys",
                           pl.Series("signature", signatures).cast(pl.List(pl.UInt32)),
                           pl.col("params").cast(pl.String))
    legacy.write_parquet(tmp_path / "legacy.parquet")
    compact, _ = near_duplicates(drop2, [IndexPart(tmp_path / "compact.parquet", "2024-01", 0)], cfg,
                                 index_content=content_of(drop1))
    old, _ = near_duplicates(drop2, [IndexPart(tmp_path / "legacy.parquet", "ignored", 9)], cfg,
                             index_content=content_of(drop1))
    assert old.verdicts.equals(compact.verdicts) and old.metrics == compact.metrics
    assert compact.metrics["cross_drop_pairs"] == 20


def test_rerunning_a_drop_whose_entries_are_in_the_index_does_not_match_itself():
    drop1, _ = incremental_drops()
    cfg = NearDedupConfig()
    result, index1 = near_duplicates(drop1, empty_near_index(), cfg)
    rerun, rerun_entries = near_duplicates(drop1, part(index1, "2024-01", 0), cfg)
    assert rerun.verdicts.is_empty() and rerun_entries.equals(index1)


def test_within_drop_duplicates_of_a_generated_corpus_get_string_cluster_ids():
    """Regression: cluster ids of a drop with in-drop clusters must build as a String column."""
    from curation_platform.samples import synthetic_corpus

    corpus = synthetic_corpus(300)
    docs = corpus.select(pl.col("id").cast(pl.String).alias("doc_id"), "text").with_columns(
        pl.lit(0, dtype=pl.Int64).alias("drop_order"), pl.lit("d").alias("drop"), pl.lit("MIT").alias("license")
    )
    result, _ = near_duplicates(docs, empty_near_index(), NearDedupConfig())
    assert result.verdicts.height > 0
    assert result.kept.schema["cluster_id"] == pl.String
    assert result.kept["cluster_id"].drop_nulls().len() > 0


# ------------------------------------------------------------------------------------------------ DuckDB band join


def reference_near_duplicates(docs: pl.DataFrame, index: pl.DataFrame, cfg: NearDedupConfig, texts: dict):
    """Straightforward reference of the whole stage in plain Python: buckets as dicts, candidates by the
    bucket_link_limit rule, the estimate screen on full signatures, then exact Jaccard of Python sets of word
    tuples (``texts``: doc_id -> text). Returns {(duplicate_of, doc_id): exact Jaccard} of the verified pairs."""
    bands, rows = lsh_params(cfg)
    in_play = index.filter(~pl.col("doc_id").is_in(docs["doc_id"].implode())).sort("drop_order", "doc_id")
    ordered = sort_by_keep_rule(docs, cfg)
    current_sig = minhash_signatures(ordered["text"], cfg)
    _, counts = shingle_hashes(ordered["text"], cfg)
    ids = in_play["doc_id"].to_list() + ordered["doc_id"].to_list()
    index_sig = minhash_signatures(pl.Series([texts[d] for d in in_play["doc_id"].to_list()], dtype=pl.String), cfg)
    sigs = list(index_sig) + list(current_sig)
    keys = [np.array(k, dtype=np.uint64) for k in in_play["band_keys"].to_list()] + list(
        band_keys(current_sig, bands, rows))
    n_index = in_play.height
    has_shingles = [True] * n_index + (counts > 0).tolist()

    buckets: dict[tuple[int, int], list[int]] = {}
    for node, node_keys in enumerate(keys):
        if has_shingles[node]:
            for band, key in enumerate(node_keys.tolist()):
                buckets.setdefault((band, key), []).append(node)  # members in node (keep) order
    candidates = set()
    for members in buckets.values():
        earlier_drops = [m for m in members if m < n_index]
        this_drop = [m for m in members if m >= n_index]
        for head in earlier_drops[: cfg.bucket_link_limit]:
            candidates.update((head, m) for m in this_drop)
        for head in this_drop[: cfg.bucket_link_limit]:
            candidates.update((head, m) for m in this_drop if m > head)

    verified: dict[tuple[str, str], float] = {}
    for src, dst in sorted(candidates):
        estimate = float((sigs[src] == sigs[dst]).mean())
        if estimate >= cfg.verify_threshold - cfg.estimate_margin:
            exact = jaccard(reference_shingles(texts[ids[src]]), reference_shingles(texts[ids[dst]]))
            if exact >= cfg.verify_threshold:
                verified[(ids[src], ids[dst])] = exact
    return verified


@pytest.fixture(scope="module")
def two_drops(corpus) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Drop 1: 150 corpus documents plus 4 near copies of one page. Drop 2: the other 150, near copies of 20
    drop-1 documents and 4 more copies of that page, so that some buckets hold 9 members."""
    rnd = random.Random(17)
    texts = corpus["text"].to_list()
    page = texts[0].split()
    first = texts[:150] + [" ".join(substitute(page, 0.01, rnd)) for _ in range(4)]
    second = (texts[150:] + [" ".join(substitute(texts[i].split(), 0.02, rnd)) for i in range(1, 21)]
              + [" ".join(substitute(page, 0.01, rnd)) for _ in range(4)])
    quality = corpus["quality_score"].to_list()
    drop1 = frame(first, ids=[f"d1-{i:03d}" for i in range(len(first))], drop="2024-01", drop_order=0,
                  quality=quality[:150] + [0.5] * 4)
    drop2 = frame(second, ids=[f"d2-{i:03d}" for i in range(len(second))], drop="2024-02", drop_order=1,
                  quality=quality[150:] + [0.9] * 24, licenses=["MIT"] * len(second))
    return drop1, drop2


@pytest.mark.parametrize("limit", [100, 2, 1])
def test_duckdb_band_join_matches_plain_python_reference(two_drops, limit):
    drop1, drop2 = two_drops
    cfg = NearDedupConfig(bucket_link_limit=limit)
    result1, index1 = near_duplicates(drop1, empty_near_index(), cfg)
    # The index also holds drop 2's own entries from an earlier run: they must be ignored.
    _, own_entries = near_duplicates(drop2, empty_near_index(), cfg)
    index = part(own_entries, "2024-02", 1) + part(index1, "2024-01", 0)
    flat = pl.concat([own_entries.with_columns(drop_order=pl.lit(1)), index1.with_columns(drop_order=pl.lit(0))])
    texts = dict(pl.concat([drop1, drop2]).select("doc_id", "text").iter_rows())
    for docs, idx, flat_idx in ((drop1, [], flat.head(0)), (drop2, index, flat)):
        result, _ = near_duplicates(docs, idx, cfg, index_content=content_of(drop1))
        expected = reference_near_duplicates(docs, flat_idx, cfg, texts)
        got = {(dup, d): value for d, dup, value in pairs_of(result).select("doc_id", "duplicate_of", "value").rows()}
        assert got.keys() == expected.keys()
        assert all(got[pair] == pytest.approx(expected[pair], abs=1e-9) for pair in got)
    # The planted copies are found: all 4 page copies of drop 1, and across drops the 20 copies and 4 page copies.
    assert len(release_choice(drop1, result1, cfg)[1]) >= 4
    _, removed = release_choice(pl.concat([drop1, drop2]), result, cfg)
    assert sum(d.startswith("d2-") for d in removed) >= 24


def test_spill_settings_and_batching_do_not_change_results(two_drops, tmp_path):
    drop1, drop2 = two_drops
    _, index1 = near_duplicates(drop1, empty_near_index(), NearDedupConfig())
    default, entries = near_duplicates(drop2, part(index1, "2024-01", 0), NearDedupConfig(),
                                       index_content=content_of(drop1))
    # A tiny memory limit, an explicit spill folder and candidate batches of 7 pairs (index documents recur
    # across batches) and signatures 13 documents at a time give the same verdicts, documents, entries, metrics.
    spilled, spilled_entries = near_duplicates(
        drop2, part(index1, "2024-01", 0), NearDedupConfig(memory_limit="64MB", temp_directory=str(tmp_path),
                                                           verify_batch_rows=7,
                                    signature_batch_docs=13), index_content=content_of(drop1))
    assert spilled.verdicts.equals(default.verdicts)
    assert spilled.kept.equals(default.kept)
    assert spilled_entries.equals(entries)
    batching = ("signature_batches", "signature_batches_in_workers", "verify_batches",
                "verify_batches_in_workers")  # how the work was cut, not what it found
    assert ({k: v for k, v in spilled.metrics.items() if k not in batching}
            == {k: v for k, v in default.metrics.items() if k not in batching})
    assert default.metrics["candidate_pairs"] > 7
    assert spilled.metrics["verify_batches"] > default.metrics["verify_batches"] == 1


class _CountingInput:
    """A DropInput over a frame that counts the rows it hands out: what a Parquet-backed input would decode."""

    def __init__(self, frame: pl.DataFrame, batch_rows: int):
        from curation_platform.records import FrameDropInput

        self.inner, self.drop, self.rows_read = FrameDropInput(frame, batch_rows=batch_rows), "", 0

    def batches(self, columns=None):
        for batch in self.inner.batches(columns):
            self.rows_read += batch.height
            yield batch

    def scan(self):
        self.rows_read += self.inner.frame.height  # a lazy scan reads the whole input
        return self.inner.scan()


def test_verification_reads_the_drop_a_fixed_number_of_times_not_once_per_batch(two_drops):
    """Verification batches read their documents from one file of every batch's documents: the input is read by
    the signature pass, one pass gathering the pairs' content and the kept pass, however many batches there are
    (each batch scanned the whole input for its few documents: quadratic in the drop)."""
    drop1, drop2 = two_drops
    _, index1 = near_duplicates(drop1, empty_near_index(), NearDedupConfig())
    found = {}
    for verify_batch_rows in (10_000, 3):
        source = _CountingInput(drop2, batch_rows=40)
        result, _ = near_duplicates(source, part(index1, "2024-01", 0),
                                    NearDedupConfig(verify_batch_rows=verify_batch_rows),
                                    index_content=content_of(drop1))
        kept = pl.concat(list(result.kept))
        found[verify_batch_rows] = (result.verdicts, kept, source.rows_read, result.metrics["verify_batches"])
    assert found[3][3] >= 10 * found[10_000][3]
    assert found[3][0].equals(found[10_000][0]) and found[3][1].equals(found[10_000][1])
    assert found[3][2] == found[10_000][2] <= 3 * drop2.height


def test_memory_limit_is_validated():
    assert NearDedupConfig().memory_limit == "4GB" and NearDedupConfig().temp_directory is None
    assert NearDedupConfig(memory_limit="512 MiB").memory_limit == "512 MiB"
    with pytest.raises(ValidationError):
        NearDedupConfig(memory_limit="lots")


def test_left_out_near_duplicates_carry_their_cluster_id():
    from curation_platform.samples import synthetic_corpus

    corpus = synthetic_corpus(300)
    docs = corpus.select(pl.col("id").cast(pl.String).alias("doc_id"), "text").with_columns(
        pl.lit(0, dtype=pl.Int64).alias("drop_order"), pl.lit("d").alias("drop"), pl.lit("MIT").alias("license")
    )
    result, _ = near_duplicates(docs, empty_near_index(), NearDedupConfig())
    _, removed = release_choice(docs, result, NearDedupConfig())
    assert removed and all(r["cluster_id"] is not None for r in removed.values())
    # The chosen document a duplicate points to sits in the same cluster the stage recorded.
    clusters = dict(zip(result.kept["doc_id"], result.kept["cluster_id"]))
    assert all(clusters[r["duplicate_of"]] == r["cluster_id"] == clusters[d] for d, r in removed.items())


def test_recorded_jaccard_is_the_exact_set_jaccard_not_the_estimate():
    """16 permutations make the MinHash estimate coarse (multiples of 1/16); the ledger value must still be the
    exact Jaccard of the two shingle sets, computed here with plain Python sets."""
    rnd = random.Random(21)
    base = [rnd.choice(VOCAB) for _ in range(150)]
    texts = [" ".join(base)] + [" ".join(substitute(base, rate, rnd)) for rate in (0.005, 0.01, 0.015, 0.02)]
    docs = frame(texts)
    cfg = NearDedupConfig(num_perm=16, bands=8, rows=2, verify_threshold=0.6, estimate_margin=0.6)
    result, _ = near_duplicates(docs, empty_near_index(), cfg)
    pairs = pairs_of(result)
    assert pairs.height >= 6
    shingles = {d: reference_shingles(t) for d, t in docs.select("doc_id", "text").iter_rows()}
    for doc_id, other, value in pairs.select("doc_id", "duplicate_of", "value").rows():
        assert value == pytest.approx(jaccard(shingles[doc_id], shingles[other]), abs=1e-12)
    # ... and it is not the estimate, which for these pairs is a multiple of 1/16.
    assert any(abs(v * 16 - round(v * 16)) > 1e-6 for v in pairs["value"])
    # The vectorized helper agrees with Python sets on every pair of the drop, not only the verified ones.
    hashes, counts = shingle_hashes(docs["text"], cfg)
    left, right = zip(*itertools.combinations(range(docs.height), 2))
    ids = docs["doc_id"].to_list()
    computed = exact_jaccard(hashes, counts, np.array(left), np.array(right))
    expected = [jaccard(shingles[ids[a]], shingles[ids[b]]) for a, b in zip(left, right)]
    assert computed == pytest.approx(expected, abs=1e-12)
    assert exact_jaccard(hashes, counts, np.array([], dtype=np.int64), np.array([], dtype=np.int64)).size == 0


def test_a_document_near_a_taken_down_one_is_blocked():
    drop1, drop2 = incremental_drops()
    cfg = NearDedupConfig()
    _, index1 = near_duplicates(drop1, empty_near_index(), cfg)
    result, entries = near_duplicates(drop2, part(index1, "2024-01", 0), cfg, index_content=content_of(drop1),
                                      blocked_ids=pl.Series(["d1-03"]))
    blocked = result.verdicts.filter(pl.col("rule") == "takedown.blocked")
    assert blocked.select("doc_id", "verdict", "duplicate_of").rows() == [("d2-copy-03", "drop", "d1-03")]
    assert "d2-copy-03" not in result.kept["doc_id"].to_list() and "d2-copy-03" not in entries["doc_id"].to_list()
    assert result.kept.height == drop2.height - 1


def test_an_index_document_whose_content_is_gone_verifies_nothing():
    drop1, drop2 = incremental_drops()
    cfg = NearDedupConfig()
    _, index1 = near_duplicates(drop1, empty_near_index(), cfg)
    result, _ = near_duplicates(drop2, part(index1, "2024-01", 0), cfg, index_content=content_of(drop1.head(0)))
    assert result.metrics["cross_drop_pairs"] == 0 and result.metrics["unverifiable_pairs"] >= 20


def _python_peak_bytes(n_docs: int) -> int:
    """Peak Python-side allocations (tracemalloc: Python objects and numpy arrays, not Polars/Arrow/DuckDB
    buffers) of near dedup on ``n_docs`` short documents with a few planted copies, 100 documents per batch."""
    import tracemalloc

    from curation_platform.outofcore import OutOfCore
    from curation_platform.records import FrameDropInput

    rnd = random.Random(n_docs)
    texts = [" ".join(rnd.choice(VOCAB) for _ in range(12)) for _ in range(n_docs)]
    texts[1::97] = texts[0::97][: len(texts[1::97])]  # planted copies: pairs grow with the drop, but slowly
    docs = frame(texts, ids=[f"d{i:06d}" for i in range(n_docs)], quality=[rnd.random() for _ in texts])
    source = FrameDropInput(docs, batch_rows=100)
    tracemalloc.start()
    try:
        result, _ = near_duplicates(source, empty_near_index(), NearDedupConfig(),
                                    ooc=OutOfCore(batch_rows=100, memory_limit="128MB", threads=1))
        for _ in result.kept:
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_python_memory_does_not_hold_the_drop():
    """Signatures, keep-rule rank, candidate pairs and clusters live in DuckDB and Parquet spill files; Python
    holds a 4-byte node -> row array per document and the verified pairs. Four times the documents may grow the
    Python peak by well under 40 bytes per added document (the in-memory ranking, object arrays of doc ids and
    per-document labels grew it by over 150)."""
    small, large = 500, 2_000
    _python_peak_bytes(100)  # one-time allocations (imports, caches) out of the measurement
    growth = _python_peak_bytes(large) - _python_peak_bytes(small)
    assert growth < 40 * (large - small), f"Python peak grew {growth / (large - small):.0f} bytes per document"


def test_candidate_pairs_of_a_drop_of_mostly_distinct_buckets_stay_within_the_memory_limit(tmp_path):
    # 2M (band, key, node) rows (143k documents), nearly every bucket with one member, as in a drop of distinct
    # documents, under a 64MB DuckDB limit: ranking every row inside its bucket ran out of memory here. Planted:
    # document 1 shares every band with document 0; documents 5, 6 and 7 share band 3; document 9 shares band 0 with
    # index entry -2, and band 1 with index entries -5..-1 (only the first ``limit`` = 4 of them link).
    rows = 2_000_000
    rng = np.random.default_rng(0)
    band = np.arange(rows) % 14
    node = np.arange(rows) // 14
    key = rng.integers(0, 2**62, rows)
    key[14:28] = key[0:14]
    key[[6 * 14 + 3, 7 * 14 + 3]] = key[5 * 14 + 3]
    current = pl.DataFrame({"band": band, "key": key, "node": node})
    index = pl.DataFrame({"band": [0, 1, 1, 1, 1, 1], "key": [key[9 * 14]] + [key[9 * 14 + 1]] * 5,
                          "node": [-2, -5, -4, -3, -2, -1]})
    with duckdb_connection(OutOfCore(memory_limit="64MB", threads=2), tmp_path) as connection:
        connection.register("current_rows", current.to_arrow())
        connection.register("index_rows", index.to_arrow())
        pairs = connection.sql(_CANDIDATES_SQL, params={"limit": 4}).pl()
    assert pairs.rows() == [(-5, 9), (-4, 9), (-3, 9), (-2, 9), (0, 1), (5, 6), (5, 7), (6, 7)]
