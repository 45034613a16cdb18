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
