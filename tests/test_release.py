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
    assert reasons == {"nc": "license.not_in_profile", "w3": "selection.budget", "c2": "selection.budget"}


def test_mixture_caps_each_kind_at_its_share_of_the_budget():
    result = select_release(_docs(), _cfg(token_budget=100, mixture={"web": 0.8, "code": 0.2}))
    # web may use 80 tokens (w1, w2), code 20 (c1).
    assert sorted(result.kept["doc_id"]) == ["c1", "w1", "w2"]
    assert set(result.verdicts.filter(pl.col("rule") == "selection.mixture")["doc_id"]) == {"w3", "c2"}


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


def _copies():
    """x-nc (drop 0, NC) and x-mit (drop 2, MIT) are exact copies; y (drop 1, MIT) is a near copy of x-nc only
    as far as the near stage recorded (the pair was compared with x-nc, not with x-mit)."""
    rows = [("x-nc", "h-x", 0, "CC-BY-NC-4.0", 0.9), ("y", "h-y", 1, "MIT", 0.5), ("x-mit", "h-x", 2, "MIT", 0.1),
            ("z", "h-z", 1, "MIT", 0.7)]
    return pl.DataFrame(
        {"doc_id": [r[0] for r in rows], "content_hash": [r[1] for r in rows], "drop_order": [r[2] for r in rows],
         "drop": [f"d{r[2]}" for r in rows], "license": [r[3] for r in rows], "quality_score": [r[4] for r in rows],
         "kind": ["web"] * 4, "text": ["word"] * 4, "provenance": ["{}"] * 4}
    )


def test_each_profile_ships_the_best_copy_it_allows():
    pairs = pl.DataFrame({"doc_id": ["y"], "duplicate_of": ["x-nc"], "value": [0.91]})
    research = select_release(_copies(), _cfg(profile="research"), pairs)
    assert sorted(research.kept["doc_id"]) == ["x-nc", "z"]  # earliest drop represents both clusters
    rows = {r["doc_id"]: r for r in research.verdicts.iter_rows(named=True)}
    assert (rows["x-mit"]["rule"], rows["x-mit"]["duplicate_of"]) == ("dedup.exact", "x-nc")
    assert (rows["y"]["rule"], rows["y"]["duplicate_of"], rows["y"]["value"]) == ("dedup.near", "x-nc", 0.91)

    commercial = select_release(_copies(), _cfg(profile="commercial"), pairs)
    # The NC copy may not ship: its MIT copy represents the content, and the pair recorded on the NC copy still
    # joins y to that cluster (y, drop 1, comes before x-mit, drop 2).
    assert sorted(commercial.kept["doc_id"]) == ["y", "z"]
    rows = {r["doc_id"]: r for r in commercial.verdicts.iter_rows(named=True)}
    assert rows["x-nc"]["rule"] == "license.not_in_profile" and rows["x-nc"]["duplicate_of"] == "y"
    assert (rows["x-mit"]["rule"], rows["x-mit"]["duplicate_of"]) == ("dedup.near", "y")
    assert "profile commercial allows (license MIT)" in rows["x-mit"]["detail"]
