"""Tests for ops/flagged_words.py: whole-word matching, per-language lists, per-source limits, the rule in
filters, and the data card's removals per list."""

from __future__ import annotations

import polars as pl

from curation_platform.ops.filters import FiltersConfig, filter_documents
from curation_platform.ops.flagged_words import (FlaggedWordsConfig, WordList, flagged_word_removals,
                                                 flagged_word_signals, load_word_list, LDNOOBW_EN)
from curation_platform.ops.quality_signals import quality_signals

CLEAN = ("The class met in the old assembly hall to assess the harbour plans. Passengers passed the grassy bank "
         "while the committee discussed the budget for the coming year in some detail.")


def docs(texts, languages=None, sources=None):
    n = len(texts)
    return pl.DataFrame({"doc_id": [f"d{i}" for i in range(n)], "kind": ["web"] * n, "text": texts,
                         "source": sources or ["crawl"] * n, "language": languages or ["en"] * n})


def test_ldnoobw_ships_offline_and_entries_are_normalized():
    entries = load_word_list(LDNOOBW_EN)
    assert len(entries) > 300 and "2 girls 1 cup" in entries and "g spot" in entries and "s m" in entries


def test_whole_words_and_phrases_match_substrings_do_not():
    out = flagged_word_signals(docs([CLEAN, "Shit! That ass... and 2 girls 1 cup, G-Spot.", "SHIT shit"]),
                               FlaggedWordsConfig())
    assert out["flagged_word_count"].to_list() == [0, 4, 2]  # "class", "assess", "passed" never match
    assert out["flagged_words_matched"][1].to_list() == ["ldnoobw_en:2 girls 1 cup", "ldnoobw_en:ass",
                                                         "ldnoobw_en:g spot", "ldnoobw_en:shit"]
    assert out["flagged_word_ratio"][2] == 1.0


def test_lists_apply_to_their_languages_and_limits_follow_source_then_language(tmp_path):
    (tmp_path / "de.txt").write_text("# German\nscheisse\n", encoding="utf-8")
    cfg = FlaggedWordsConfig(
        lists=[WordList(name="ldnoobw_en", path=LDNOOBW_EN, languages=["en"]),
               WordList(name="custom_de", path=str(tmp_path / "de.txt"), languages=["de"])],
        max_ratio=0.1, per_language={"de": 0.5}, per_source={"forum": 1.0})
    text = "shit scheisse one two three four five six seven eight"  # 10 words
    out = flagged_word_signals(docs([text, text, text], languages=["en", "de", "en"],
                                    sources=["crawl", "crawl", "forum"]), cfg)
    assert out["flagged_words_matched"].to_list() == [["ldnoobw_en:shit"], ["custom_de:scheisse"],
                                                      ["ldnoobw_en:shit"]]
    # ratio 0.1 each; limits 0.1 (default), 0.5 (de), 1.0 (forum)
    assert [round(v, 6) for v in out["flagged_word_limit_ratio"].to_list()] == [1.0, 0.2, 0.1]


def test_the_rule_drops_over_the_limit_with_its_stable_name_and_keeps_clean_text():
    toxic = CLEAN + " Fuck this shit, fuck that."
    signals = quality_signals(docs([CLEAN, toxic])).kept
    result = filter_documents(signals, FiltersConfig(thresholds={}, disabled=[
        r.name for r in FiltersConfig().rules() if r.name != "flagged_words.max_ratio"]))
    assert result.kept["doc_id"].to_list() == ["d0"]
    (row,) = result.verdicts.to_dicts()
    assert row["rule"] == "flagged_words.max_ratio" and row["threshold"] == "> 1" and row["value"] > 1
    removals = flagged_word_removals(signals.filter(pl.col("doc_id") == "d1").select("flagged_words_matched"))
    assert removals == {"documents": 1, "per_list": {"ldnoobw_en": 1},
                        "per_entry": {"ldnoobw_en:fuck": 1, "ldnoobw_en:shit": 1}}


def test_data_card_counts_removals_per_list_from_the_ledger_and_stored_signals(tmp_path):
    from curation_platform.ops.flagged_words import card_markdown, card_removals
    from curation_platform.workspace import Workspace, write_parquet_atomic

    ws = Workspace(tmp_path)
    signals = pl.DataFrame({"doc_id": ["a", "b", "c"],
                            "flagged_words_matched": [["ldnoobw_en:twink"], ["ldnoobw_en:twink", "mine:foo"], []]})
    write_parquet_atomic(signals, ws.stage_path("quality_signals", "d1"))
    # "b" broke the flagged-word rule; "a" was dropped by another rule, so it does not count.
    ledger = pl.DataFrame({"doc_id": ["a", "b", "c"], "rule": ["gopher_quality.min_words",
                                                               "flagged_words.max_ratio", "filtered.kept"],
                           "verdict": ["drop", "drop", "keep"]})
    write_parquet_atomic(ledger, ws.ledger_path("filtered", "d1"))
    removals = card_removals(ws, ["d1", "never-curated"])
    assert removals == {"documents": 1, "per_list": {"ldnoobw_en": 1, "mine": 1},
                        "per_entry": {"ldnoobw_en:twink": 1, "mine:foo": 1}}
    lines = "\n".join(card_markdown(removals))
    assert "| ldnoobw_en | 1 |" in lines and "| ldnoobw_en:twink | 1 |" in lines and "LGBTQ" in lines


# An insult no word list entry matches (no LDNOOBW word), inside otherwise clean text.
INSULT = "You are a worthless pathetic moron and everyone here hates you, idiot."


def test_classifier_scores_the_worst_line_and_is_off_by_default():
    texts = [CLEAN, CLEAN + "\n" + INSULT, "", None]
    off = flagged_word_signals(docs(texts), FlaggedWordsConfig())
    assert off["offensive_score"].is_null().all()
    on = flagged_word_signals(docs(texts), FlaggedWordsConfig(classifier=True))["offensive_score"].to_list()
    assert on[0] < 0.5 and on[1] > 0.9 and on[2] == 0.0 and on[3] == 0.0
    assert flagged_word_signals(docs(texts), FlaggedWordsConfig(classifier=True))["flagged_word_count"][1] == 0


def test_classifier_rule_drops_what_the_word_list_misses_only_when_enabled():
    from curation_platform.ops.quality_signals import SignalsConfig

    cfg = SignalsConfig(flagged_words=FlaggedWordsConfig(classifier=True))
    signals = quality_signals(docs([CLEAN, CLEAN + "\n" + INSULT]), cfg).kept
    others = [r.name for r in FiltersConfig().rules() if not r.name.startswith("flagged_words.")]
    assert filter_documents(signals, FiltersConfig(disabled=others)).verdicts.filter(
        pl.col("verdict") == "drop").is_empty()  # the word list finds nothing, and the rule is off by default
    enabled = filter_documents(signals, FiltersConfig(disabled=others, enabled=["flagged_words.max_offensive_score"]))
    assert enabled.kept["doc_id"].to_list() == ["d0"]
    (row,) = enabled.verdicts.filter(pl.col("verdict") == "drop").to_dicts()
    assert row["rule"] == "flagged_words.max_offensive_score" and row["value"] > 0.9
