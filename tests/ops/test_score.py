import polars as pl

from curation_platform.ops.score import ScoreConfig, ScoreFeature, score_documents


def test_score_is_weighted_mean_of_features_mapped_between_bad_and_good():
    cfg = ScoreConfig(features=[
        ScoreFeature(signal="language_score", bad=0.5, good=1.0, weight=3.0),
        ScoreFeature(signal="dup_line_frac", bad=0.4, good=0.0, weight=1.0),
    ])
    docs = pl.DataFrame({"doc_id": ["a", "b"], "kind": ["web", "web"],
                         "language_score": [0.75, 1.0], "dup_line_frac": [0.1, 0.9]})
    scores = dict(zip(*score_documents(docs, cfg).kept.select("doc_id", "quality_score").to_dict(as_series=False).values()))
    # a: (3 * 0.5 + 1 * 0.75) / 4 = 0.5625; b: (3 * 1.0 + 1 * 0.0) / 4 = 0.75
    assert scores == {"a": 0.5625, "b": 0.75}


def test_features_apply_to_their_kinds_and_min_score_drops():
    cfg = ScoreConfig(
        features=[ScoreFeature(signal="alnum_frac", bad=0.25, good=0.75, kinds=["code"])], min_score=0.4
    )
    docs = pl.DataFrame({"doc_id": ["c1", "c2", "w"], "kind": ["code", "code", "web"], "alnum_frac": [0.5, 0.3, 0.1]})
    result = score_documents(docs, cfg)
    assert result.kept["doc_id"].to_list() == ["c1", "w"]  # web has no applicable feature: neutral 0.5
    dropped = result.verdicts.row(0, named=True)
    assert dropped["doc_id"] == "c2" and dropped["rule"] == "scoring.min_score"
    assert abs(dropped["value"] - 0.1) < 1e-9


def test_nan_signals_are_missing_not_perfect_and_degenerate_features_are_refused():
    import pytest

    cfg = ScoreConfig(features=[ScoreFeature(signal="word_count", bad=50, good=500),
                                ScoreFeature(signal="language_score", bad=0.5, good=1.0)], min_score=0.9)
    docs = pl.DataFrame({"doc_id": ["a"], "kind": ["web"], "word_count": [float("nan")], "language_score": [0.6]})
    result = score_documents(docs, cfg)
    # The NaN feature is left out: the score is the language feature alone, 0.2, under the 0.9 minimum.
    assert result.kept.is_empty() and abs(result.verdicts["value"][0] - 0.2) < 1e-9
    with pytest.raises(ValueError, match="bad and good must differ"):
        ScoreFeature(signal="x", bad=1, good=1)


def _ranked(n: int = 10, **extra) -> pl.DataFrame:
    """Documents whose score is exactly their ``word_count`` / 100 (one feature mapped from 0 to 100)."""
    return pl.DataFrame({"doc_id": [f"d{i:02d}" for i in range(n)], "kind": "web", "source": "s",
                         "word_count": [float(10 * ((i * 7) % n)) for i in range(n)], **extra})


_ONE_FEATURE = [ScoreFeature(signal="word_count", bad=0, good=100)]


def test_min_score_and_top_fraction_select_exactly():
    docs = _ranked()  # scores 0.0, 0.1, ..., 0.9 in a shuffled order
    result = score_documents(docs, ScoreConfig(features=_ONE_FEATURE, min_score=0.35))
    assert sorted(result.kept["quality_score"].to_list()) == [0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert set(result.verdicts["rule"]) == {"scoring.min_score"}
    result = score_documents(docs, ScoreConfig(features=_ONE_FEATURE, top_fraction=0.3))
    assert sorted(result.kept["quality_score"].to_list()) == [0.7, 0.8, 0.9]
    dropped = result.verdicts.sort("value")
    assert set(dropped["rule"]) == {"scoring.top_fraction"} and dropped.height == 7
    assert dropped["threshold"][0].startswith("< 0.7 (top 0.3 of 10")
    # Both at once: the threshold decides first.
    result = score_documents(docs, ScoreConfig(features=_ONE_FEATURE, min_score=0.85, top_fraction=0.3))
    assert result.kept["quality_score"].to_list() == [0.9]
    assert result.verdicts.filter(pl.col("value") >= 0.7)["rule"].to_list() == ["scoring.min_score"] * 2


def test_top_fraction_rounds_up_and_breaks_ties_by_doc_id():
    docs = pl.DataFrame({"doc_id": ["c", "a", "b", "d"], "kind": "web", "source": "s",
                         "word_count": [50.0, 50.0, 50.0, 10.0]})
    kept = score_documents(docs, ScoreConfig(features=_ONE_FEATURE, top_fraction=0.5)).kept
    assert sorted(kept["doc_id"].to_list()) == ["a", "b"]  # 2 of 4; the three tied at 0.5 go by doc_id
    kept = score_documents(docs, ScoreConfig(features=_ONE_FEATURE, top_fraction=0.3)).kept
    assert sorted(kept["doc_id"].to_list()) == ["a", "b"]  # ceil(1.2) = 2
    kept = score_documents(docs, ScoreConfig(features=_ONE_FEATURE, top_fraction=0.2)).kept
    assert kept["doc_id"].to_list() == ["a"]  # ceil(0.8) = 1: a group never loses every document


def test_selection_per_source_and_per_domain_in_their_own_groups():
    from curation_platform.ops.score import ScoreSelection

    docs = pl.DataFrame({
        "doc_id": [f"d{i}" for i in range(8)],
        "source": ["news"] * 4 + ["forum"] * 4,
        "kind": ["web", "web", "web", "web", "web", "web", "code", "code"],
        "word_count": [90.0, 80.0, 20.0, 10.0, 60.0, 50.0, 40.0, 30.0],
    })
    cfg = ScoreConfig(features=[ScoreFeature(signal="word_count", bad=0, good=100)], top_fraction=0.5,
                      per_source={"news": ScoreSelection(top_fraction=0.25)},
                      per_domain={"code": ScoreSelection(min_score=0.35)})
    result = score_documents(docs, cfg, domain=pl.col("kind"))
    # news: its own top 25% (1 of 4); code: min_score 0.35 (its top fraction is the drop's 0.5, grouped with
    # forum's web documents: 4 documents, keep 2: d4 and d5); so d6 (0.4) passes the threshold but not the rank.
    assert sorted(result.kept["doc_id"].to_list()) == ["d0", "d4", "d5"]
    rules = dict(zip(result.verdicts["doc_id"], result.verdicts["rule"]))
    assert rules == {"d1": "scoring.top_fraction", "d2": "scoring.top_fraction", "d3": "scoring.top_fraction",
                     "d6": "scoring.top_fraction", "d7": "scoring.min_score"}
