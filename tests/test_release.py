import polars as pl

from curation_platform.config import CurationConfig
from curation_platform.release import count_tokens, select_release, shard_documents


def _docs():
    # Token counts with the bundled GPT-2 tokenizer: n space-separated "word"s are n tokens.
    rows = [
        ("w1", "web", "MIT", 0.9, 40), ("w2", "web", "MIT", 0.8, 40), ("w3", "web", "MIT", 0.1, 40),
        ("c1", "code", "Apache-2.0", 0.7, 20), ("c2", "code", "Apache-2.0", 0.6, 20),
        ("nc", "web", "CC-BY-NC-4.0", 1.0, 40),
    ]
    return pl.DataFrame(
        {"doc_id": [r[0] for r in rows], "kind": [r[1] for r in rows], "license": [r[2] for r in rows],
         "quality_score": [r[3] for r in rows], "text": [" ".join(["word"] * r[4]) for r in rows],
         "provenance": ["{}"] * len(rows)}
    )


def _cfg(**release):
    return CurationConfig.model_validate({"release": release})


def test_token_counts_use_the_bundled_gpt2_tokenizer():
    counts = count_tokens(pl.Series(["Hello world", "", " ".join(["word"] * 10)]), _cfg().release.tokenizer)
    assert counts.to_list() == [2, 0, 10]


def test_license_profile_then_budget_keeps_the_best_scored_documents():
    result = select_release(_docs(), _cfg(token_budget=110))
    # The NC document leaves first (commercial profile); then 110 tokens take w1 (40) + w2 (40) + c1 (20).
    assert sorted(result.kept["doc_id"]) == ["c1", "w1", "w2"]
    reasons = dict(zip(result.verdicts["doc_id"], result.verdicts["rule"]))
    assert reasons == {"nc": "license.not_in_profile", "w3": "release.over_budget", "c2": "release.over_budget"}


def test_mixture_caps_each_kind_at_its_share_of_the_budget():
    result = select_release(_docs(), _cfg(token_budget=100, mixture={"web": 0.8, "code": 0.2}))
    # web may use 80 tokens (w1, w2), code 20 (c1).
    assert sorted(result.kept["doc_id"]) == ["c1", "w1", "w2"]
    assert set(result.verdicts.filter(pl.col("rule") == "release.over_budget")["doc_id"]) == {"w3", "c2"}


def test_shards_are_deterministic_and_sized():
    docs = _docs().with_columns(pl.lit("s").alias("source"))
    cfg = _cfg(shard_max_docs=4).release
    first = shard_documents(docs, cfg)
    second = shard_documents(docs.reverse(), cfg)
    assert [s.height for s in first] == [4, 2]
    assert all(a.equals(b) for a, b in zip(first, second))


def test_token_counts_are_cached_per_drop_and_refreshed_when_the_drop_changes(tmp_path):
    import os

    from curation_platform.release import curated_metadata
    from curation_platform.workspace import Workspace, write_parquet_atomic

    ws = Workspace(tmp_path)
    ws.register_drop("d1", tmp_path)
    stage = ws.stage_path("decontaminated", "d1")
    write_parquet_atomic(_docs().with_columns(pl.lit("d1").alias("drop"), pl.lit("s").alias("source"),
                                              pl.lit("en").alias("language")), stage)
    tokenizer = _cfg().release.tokenizer
    meta = curated_metadata(ws, "decontaminated", ["d1"], tokenizer)
    assert "text" not in meta.columns and meta["token_count"].to_list() == [40, 40, 40, 20, 20, 40]
    cache = ws.cache_path("tokens", "d1")
    assert cache.exists()
    # A re-curated drop (newer stage file) gets fresh counts.
    write_parquet_atomic(_docs().head(2).with_columns(pl.lit("d1").alias("drop"), pl.lit("s").alias("source"),
                                                      pl.lit("en").alias("language"), pl.lit("a b").alias("text")),
                         stage)
    os.utime(stage, ns=(cache.stat().st_mtime_ns + 1, cache.stat().st_mtime_ns + 1))
    assert curated_metadata(ws, "decontaminated", ["d1"], tokenizer)["token_count"].to_list() == [2, 2]
