"""Tests for the language identification stage (curation_platform/ops/language.py)."""

from __future__ import annotations

import math

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from pydantic import ValidationError

from curation_platform.ops.language import (
    LOW_SCORE_RULE,
    NOT_ALLOWED_RULE,
    LanguageConfig,
    LanguageRule,
    identify_language,
)
from curation_platform.records import RECORD_SCHEMA

SAMPLES = {
    "en": "The committee will meet on Tuesday to discuss the new budget for the city library.",
    "de": "Der Ausschuss trifft sich am Dienstag, um den neuen Haushalt der Stadtbibliothek zu besprechen.",
    "fr": "Le comité se réunira mardi pour discuter du nouveau budget de la bibliothèque municipale.",
    "es": "El comité se reunirá el martes para discutir el nuevo presupuesto de la biblioteca municipal.",
    "it": "Il comitato si riunirà martedì per discutere il nuovo bilancio della biblioteca comunale.",
    "ja": "委員会は火曜日に市立図書館の新しい予算について話し合うために集まります。",
    "ru": "Комитет соберётся во вторник, чтобы обсудить новый бюджет городской библиотеки.",
    "ar": "ستجتمع اللجنة يوم الثلاثاء لمناقشة الميزانية الجديدة لمكتبة المدينة.",
}


def make_docs(*rows: dict) -> pl.DataFrame:
    """Documents in RECORD_SCHEMA; unspecified columns are null, ids default to d0, d1, ..."""
    base = {name: None for name in RECORD_SCHEMA}
    defaults = {"source": "web", "kind": "web", "format": "txt"}
    filled = [{**base, **defaults, "doc_id": f"d{i}", **row} for i, row in enumerate(rows)]
    return pl.DataFrame(filled, schema=RECORD_SCHEMA)


def score_of(text: str, **cfg) -> float:
    result = identify_language(make_docs({"text": text}), LanguageConfig(min_score=0.0, **cfg))
    return result.kept["language_score"][0]


def test_short_multilingual_samples_are_identified():
    docs = make_docs(*({"doc_id": lang, "text": text} for lang, text in SAMPLES.items()))
    result = identify_language(docs, LanguageConfig())
    assert result.verdicts.is_empty()
    labels = dict(zip(result.kept["doc_id"], result.kept["language"]))
    assert labels == {lang: lang for lang in SAMPLES}
    assert all(0.65 <= score <= 1.0 for score in result.kept["language_score"])
    assert result.metrics["docs_per_language"] == {lang: 1 for lang in sorted(SAMPLES)}


def test_newlines_do_not_cut_the_text_short():
    # fastText reads one line; only the English tail would be seen if newlines were kept.
    text = "\n".join([SAMPLES["de"]] * 3 + ["ok thanks"])
    result = identify_language(make_docs({"text": text}), LanguageConfig())
    assert result.kept["language"][0] == "de"


def test_three_letter_labels_map_to_iso639_1_where_one_exists():
    docs = make_docs(
        {"text": "佢哋今日去咗邊度食飯呀？我哋一齊去啦，唔該晒你。"},  # Cantonese: lid.176 "yue" -> "zh"
        {"text": "Dat is en Text op Plattdüütsch, de ward in Noorddüütschland snackt."},  # Low German: "nds"
    )
    result = identify_language(docs, LanguageConfig())
    assert result.kept["language"].to_list() == ["zh", "nds"]


def test_score_threshold_boundary_keeps_at_exactly_the_score():
    text = "O comitê se reunirá na terça-feira para discutir o orçamento."
    score = score_of(text)
    at = identify_language(make_docs({"text": text}), LanguageConfig(min_score=score))
    assert at.verdicts.is_empty()
    above = math.nextafter(score, 1.0)
    dropped = identify_language(make_docs({"text": text}), LanguageConfig(min_score=above))
    assert dropped.kept.is_empty()
    verdict = dropped.verdicts.row(0, named=True)
    assert verdict["rule"] == LOW_SCORE_RULE
    assert verdict["verdict"] == "drop"
    assert verdict["value"] == score
    assert verdict["threshold"] == f"< {above:g}"
    assert dropped.metrics["dropped_per_rule"] == {LOW_SCORE_RULE: 1}


def test_default_threshold_string_is_fineweb_065():
    result = identify_language(make_docs({"text": "ok"}), LanguageConfig())
    assert result.verdicts["threshold"].to_list() == ["< 0.65"]


def test_language_not_allowed_is_dropped_with_its_score():
    docs = make_docs({"text": SAMPLES["en"]}, {"text": SAMPLES["de"]})
    result = identify_language(docs, LanguageConfig(allowed_languages=["en"]))
    assert result.kept["doc_id"].to_list() == ["d0"]
    verdict = result.verdicts.row(0, named=True)
    assert verdict["doc_id"] == "d1"
    assert verdict["rule"] == NOT_ALLOWED_RULE
    assert verdict["threshold"] == "not in [en]"
    assert verdict["detail"].startswith("language de (score 0.9")
    german_score = score_of(SAMPLES["de"])
    assert verdict["value"] == german_score
    assert result.metrics["kept_per_language"] == {"en": 1}


def test_per_source_rules_replace_the_global_rule():
    docs = make_docs(
        {"source": "forum", "text": SAMPLES["de"]},
        {"source": "forum", "text": SAMPLES["en"]},
        {"source": "web", "text": SAMPLES["de"]},
        {"source": "web", "text": SAMPLES["en"]},
        {"source": "strict", "text": SAMPLES["en"]},
        {"source": None, "text": SAMPLES["fr"]},
    )
    cfg = LanguageConfig(
        allowed_languages=["en"],
        per_source={
            "forum": LanguageRule(allowed_languages=["de"]),
            "strict": LanguageRule(min_score=0.999),
        },
    )
    result = identify_language(docs, cfg)
    assert result.kept["doc_id"].to_list() == ["d0", "d3"]
    rules = dict(zip(result.verdicts["doc_id"], result.verdicts["rule"]))
    # "strict" allows every language (its rule replaces the global one) but wants a near-certain score.
    assert rules == {"d1": NOT_ALLOWED_RULE, "d2": NOT_ALLOWED_RULE, "d4": LOW_SCORE_RULE, "d5": NOT_ALLOWED_RULE}
    thresholds = dict(zip(result.verdicts["doc_id"], result.verdicts["threshold"]))
    assert thresholds["d1"] == "not in [de]" and thresholds["d4"] == "< 0.999"


def test_code_documents_skip_identification():
    docs = make_docs(
        {"kind": "code", "format": "py", "code_language": "python", "text": "def add(a, b):\n    return a + b\n"},
        {"kind": "code", "format": "rs", "code_language": "rust", "text": "x"},
        {"text": SAMPLES["en"]},
    )
    result = identify_language(docs, LanguageConfig(allowed_languages=["en"], min_score=0.9))
    assert result.verdicts.is_empty()
    assert result.kept["language"].to_list() == ["python", "rust", "en"]
    assert result.kept["language_score"].to_list()[:2] == [1.0, 1.0]
    assert result.metrics["docs_code"] == 2 and result.metrics["docs_identified"] == 1


def test_chat_is_identified_on_message_contents():
    messages = [
        {"role": "user", "content": "Wie spät ist es heute Abend in Berlin?"},
        {"role": "assistant", "content": "Es ist acht Uhr abends."},
    ]
    docs = make_docs({"kind": "chat", "format": "chat", "messages": messages, "text": "rendered"})
    result = identify_language(docs, LanguageConfig(allowed_languages=["de"]))
    assert result.kept["language"].to_list() == ["de"]


def test_all_caps_text_is_lowercased_before_prediction():
    shouting = "THE COMMITTEE WILL MEET ON TUESDAY TO DISCUSS THE NEW BUDGET"
    assert score_of(shouting) > 0.65
    assert score_of(shouting, lowercase_shouting=False) < 0.65


def test_empty_text_has_no_language_and_is_dropped():
    result = identify_language(make_docs({"text": ""}, {"text": None}), LanguageConfig())
    assert result.kept.is_empty()
    assert result.verdicts["rule"].to_list() == [LOW_SCORE_RULE, LOW_SCORE_RULE]
    assert result.verdicts["value"].to_list() == [0.0, 0.0]
    assert result.metrics["docs_per_language"] == {"none": 2}


def test_declared_language_mismatches_are_counted():
    docs = make_docs(
        {"text": SAMPLES["de"], "declared_language": "en-US"},
        {"text": SAMPLES["de"], "declared_language": "DE"},
        {"text": SAMPLES["fr"]},
    )
    result = identify_language(docs, LanguageConfig())
    assert result.verdicts.is_empty()
    assert result.metrics["declared_checked"] == 2
    assert result.metrics["declared_mismatches"] == 1
    assert result.metrics["declared_mismatch_pairs"] == {"en->de": 1}


def test_output_columns_and_determinism():
    docs = make_docs(*({"text": text} for text in SAMPLES.values()))
    first = identify_language(docs, LanguageConfig())
    second = identify_language(docs, LanguageConfig())
    assert first.kept.columns == [*docs.columns, "language", "language_score"]
    assert first.kept.schema["language_score"] == pl.Float64
    assert_frame_equal(first.kept, second.kept)


def test_config_rejects_unknown_fields_and_bad_scores():
    with pytest.raises(ValidationError):
        LanguageConfig(min_scor=0.5)
    with pytest.raises(ValidationError):
        LanguageRule(min_score=1.5)
    assert LanguageConfig().min_score == 0.65


def test_empty_input_and_code_only_input():
    empty = make_docs({"text": "x"}).clear()
    assert identify_language(empty, LanguageConfig()).kept.is_empty()
    code_only = make_docs({"kind": "code", "code_language": "go", "text": "package main"})
    result = identify_language(code_only, LanguageConfig())
    assert result.kept["language"].to_list() == ["go"]
