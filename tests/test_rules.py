import polars as pl
import pytest

from curation_platform.rules import Rule, apply_rules


def _docs():
    return pl.DataFrame({
        "doc_id": ["short", "ok", "code", "both"],
        "kind": ["web", "web", "code", "web"],
        "word_count": [49, 50, 3, 10],
        "symbol_ratio": [0.0, 0.1, 0.9, 0.5],
    })


RULES = [
    Rule(name="gopher_quality.min_words", signal="word_count", keep_if=">=", threshold=50, kinds=["web"]),
    Rule(name="gopher_quality.max_symbol_ratio", signal="symbol_ratio", keep_if="<=", threshold=0.1, kinds=["web"]),
]


def test_boundary_values_keep_and_just_below_drops():
    result = apply_rules(_docs(), RULES)
    assert result.kept["doc_id"].to_list() == ["ok", "code"]
    short = result.verdicts.filter(pl.col("doc_id") == "short").row(0, named=True)
    assert short["rule"] == "gopher_quality.min_words"
    assert short["value"] == 49 and short["threshold"] == "< 50" and short["verdict"] == "drop"


def test_first_broken_rule_decides_and_detail_lists_all():
    both = apply_rules(_docs(), RULES).verdicts.filter(pl.col("doc_id") == "both").row(0, named=True)
    assert both["rule"] == "gopher_quality.min_words"
    assert "gopher_quality.max_symbol_ratio" in both["detail"]


def test_rules_apply_only_to_their_kinds_and_counts_reconcile():
    result = apply_rules(_docs(), RULES)
    assert "code" in result.kept["doc_id"].to_list()
    assert result.kept.height + result.verdicts.height == _docs().height
    assert result.metrics["dropped_per_rule"] == {"gopher_quality.min_words": 2}
    assert result.metrics["broken_per_rule"] == {"gopher_quality.min_words": 2, "gopher_quality.max_symbol_ratio": 1}


def test_null_signal_never_drops_and_missing_signal_is_an_error():
    docs = _docs().with_columns(pl.lit(None, dtype=pl.Float64).alias("symbol_ratio"))
    assert apply_rules(docs, RULES[1:]).kept.height == 4
    with pytest.raises(KeyError, match="not computed"):
        apply_rules(docs.drop("symbol_ratio"), RULES)
