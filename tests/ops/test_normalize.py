"""Tests for the normalization stage (curation_platform/ops/normalize.py)."""

from __future__ import annotations

import ftfy
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from curation_platform.ops import normalize as normalize_module
from curation_platform.ops.normalize import EMPTY_RULE, NormalizeConfig, normalize, render_chat
from curation_platform.records import RECORD_SCHEMA

ARTICLE_PARAGRAPHS = [
    "After three years of planning, the Riverside community garden opened its gates on Saturday morning. More than "
    "two hundred residents came to see the forty raised beds, the new greenhouse and the tool library built by "
    "volunteers from the neighborhood association.",
    "The garden sits on a former parking lot that the city handed over to residents in 2021. Volunteers removed the "
    "asphalt by hand, brought in compost from the municipal collection program and planted fruit trees along the "
    "northern fence to shelter the beds from the wind.",
    "Each bed is rented for a small yearly fee, and a third of the beds are reserved for the elementary school "
    "across the street, where teachers plan to run science lessons on soil, insects and the water cycle during the "
    "spring term.",
]

NEWS_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Community garden opens in Riverside | The Riverside Gazette</title>
  <style>.nav{{display:flex}}</style>
  <script>window.dataLayer = window.dataLayer || [];</script>
</head>
<body>
  <div id="cookie-banner" class="cookie-consent">
    <p>We use cookies to improve your experience. By continuing to browse you accept our cookie policy.</p>
    <button>Accept all cookies</button> <button>Manage preferences</button>
  </div>
  <header class="site-header">
    <nav class="main-nav">
      <ul>
        <li><a href="/">Home</a></li>
        <li><a href="/news">News</a></li>
        <li><a href="/sports">Sports</a></li>
        <li><a href="/subscribe">Subscribe today</a></li>
      </ul>
    </nav>
  </header>
  <main>
    <article>
      <h1>Community garden opens in Riverside</h1>
      <p>{ARTICLE_PARAGRAPHS[0]}</p>
      <p>{ARTICLE_PARAGRAPHS[1]}</p>
      <p>{ARTICLE_PARAGRAPHS[2]}</p>
    </article>
  </main>
  <footer class="site-footer">
    <p>Copyright 2024 The Riverside Gazette. All rights reserved.</p>
    <p><a href="/privacy">Privacy policy</a> | <a href="/contact">Contact the newsroom</a></p>
  </footer>
</body>
</html>
"""


def make_docs(*rows: dict) -> pl.DataFrame:
    """Documents in RECORD_SCHEMA; unspecified columns are null, ids default to d0, d1, ..."""
    base = {name: None for name in RECORD_SCHEMA}
    defaults = {"source": "web", "kind": "web", "format": "txt"}
    filled = [{**base, **defaults, "doc_id": f"d{i}", **row} for i, row in enumerate(rows)]
    return pl.DataFrame(filled, schema=RECORD_SCHEMA)


def normalized_text(text: str, **doc) -> str:
    result = normalize(make_docs({"text": text, **doc}), NormalizeConfig())
    assert result.verdicts.is_empty()
    return result.kept["text"][0]


def test_mojibake_is_repaired():
    assert normalized_text("The cafÃ© serves crÃ¨me brÃ»lÃ©e") == "The café serves crème brûlée"
    # DataTrove's ftfy settings repair the encoding but keep the curly quote it encoded.
    assert normalized_text("itâ€™s done") == "it\u2019s done"


def test_clean_non_ascii_text_is_left_alone():
    text = "Straße, naïve café \u201cquoted\u201d \u2014 \u65e5\u672c\u8a9e \u0420\u0443\u0441\u0441\u043a\u0438\u0439"
    result = normalize(make_docs({"text": text}), NormalizeConfig())
    assert result.kept["text"][0] == text
    assert result.metrics["ftfy_candidates"] == 0
    assert result.metrics["ftfy_skipped"] == 1


def test_nfc_composes_combining_marks():
    text = normalized_text("Cafe\u0301 and Ame\u0301lie")
    assert text == "Caf\u00e9 and Am\u00e9lie"
    assert len(text) == 15


def test_zero_width_and_invisible_characters_are_removed():
    assert normalized_text("zero\u200bwidth\u2060 text\u00ad here\ufeff") == "zerowidth text here"


def test_joiners_that_scripts_and_emoji_need_are_kept():
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # "mi-khaham" needs ZWNJ
    technologist = "\U0001f469\u200d\U0001f4bb"  # woman + ZWJ + laptop
    assert normalized_text(f"{persian} {technologist}") == f"{persian} {technologist}"


def test_control_characters_are_removed():
    assert normalized_text("a\x00b\x07c\x7fd") == "abcd"
    assert normalized_text("\x1b[31mred alert\x1b[0m") == "red alert"


def test_whitespace_rules():
    text = "  Title  \r\n\r\nFirst\tline  with \u00a0 spaces   \r\nsecond line\n\n\n\n\nLast paragraph.  \n\n"
    assert normalized_text(text) == "Title\n\nFirst line with spaces\nsecond line\n\nLast paragraph."


def test_blank_line_limit_is_configurable():
    result = normalize(make_docs({"text": "one\n\n\n\ntwo\n\nthree"}), NormalizeConfig(max_blank_lines=0))
    assert result.kept["text"][0] == "one\ntwo\nthree"


def test_lone_carriage_returns_and_line_separators_become_newlines():
    assert normalized_text("one\rtwo\u2028three\x0cfour") == "one\ntwo\nthree\nfour"


def test_code_keeps_its_exact_whitespace():
    code = "def f(x):\r\n\tif x:  \r\n        return 1\n\n\n\n    return  2   \n\x00# cafÃ© \u200b\n"
    result = normalize(make_docs({"text": code, "kind": "code", "format": "py"}), NormalizeConfig())
    # Only CRLF -> LF and the NUL go: tabs, trailing spaces, blank lines, mojibake and ZWSP stay as written.
    assert result.kept["text"][0] == "def f(x):\n\tif x:  \n        return 1\n\n\n\n    return  2   \n# cafÃ© \u200b\n"
    assert result.kept["text_chars"][0] == len(result.kept["text"][0])


def test_html_main_content_is_extracted_without_boilerplate():
    result = normalize(make_docs({"text": NEWS_PAGE, "format": "html"}), NormalizeConfig())
    text = result.kept["text"][0]
    for paragraph in ARTICLE_PARAGRAPHS:
        assert paragraph in text
    for boilerplate in ["cookies", "Subscribe today", "Sports", "Copyright 2024", "Privacy policy", "dataLayer",
                        "display:flex", "<p>"]:
        assert boilerplate not in text
    assert result.metrics["html_docs"] == 1
    assert result.metrics["html_trafilatura"] == 1
    assert result.metrics["html_tag_strip"] == 0


def test_html_extraction_does_not_depend_on_earlier_pages():
    # The same page twice in one batch (and a third time in a second call) must give the same text: trafilatura's
    # process-wide dedup cache would strip the repeated paragraphs from the later copies.
    docs = make_docs({"text": NEWS_PAGE, "format": "html"}, {"text": NEWS_PAGE, "format": "html"})
    first = normalize(docs, NormalizeConfig())
    again = normalize(docs, NormalizeConfig())
    assert first.kept["text"][0] == first.kept["text"][1]
    assert_frame_equal(first.kept, again.kept)


def test_html_falls_back_to_tag_stripping_when_trafilatura_finds_nothing():
    page = (
        "<html><head><title>Menu</title><script>var tracking = 1;</script></head><body>"
        "<nav><ul><li>Fish &amp; chips</li><li>Caf&eacute; au lait</li></ul></nav><!-- hidden note --></body></html>"
    )
    result = normalize(make_docs({"text": page, "format": "html"}), NormalizeConfig())
    assert result.kept["text"][0] == "Fish & chips\nCafé au lait"
    assert result.metrics["html_tag_strip"] == 1
    assert result.metrics["html_trafilatura"] == 0


def test_html_is_left_as_text_when_extraction_is_off():
    docs = make_docs({"text": "<p>Fish  and chips</p>", "format": "html"})
    result = normalize(docs, NormalizeConfig(html_to_text=False))
    assert result.kept["text"][0] == "<p>Fish and chips</p>"


def test_empty_after_normalization_is_dropped():
    docs = make_docs(
        {"text": "  \u200b\n\n\t \u00ad "},
        {"text": "Real words stay."},
        {"text": None},
        {"text": "   \n\n  ", "kind": "code", "format": "py"},
        {"text": "<html><body><script>only();</script></body></html>", "format": "html"},
    )
    result = normalize(docs, NormalizeConfig())
    assert result.kept["doc_id"].to_list() == ["d1"]
    verdicts = result.verdicts.sort("doc_id")
    assert verdicts["doc_id"].to_list() == ["d0", "d2", "d3", "d4"]
    assert set(verdicts["rule"]) == {EMPTY_RULE}
    assert set(verdicts["verdict"]) == {"drop"}
    assert verdicts["value"].to_list() == [0.0, 0.0, 0.0, 0.0]
    assert set(verdicts["threshold"]) == {"<= 0"}
    assert verdicts["detail"][0] == "no text left after normalization (9 characters before)"
    assert result.metrics["dropped_per_rule"] == {EMPTY_RULE: 4}
    assert result.metrics["docs_out"] == 1


def test_chat_messages_are_normalized_and_text_rerendered():
    messages = [
        {"role": "user", "content": "  Is the cafÃ© open\u200b today?  \r\n\r\n\r\nThanks "},
        {"role": "assistant", "content": "Yes,   until 6 pm."},
    ]
    docs = make_docs({"kind": "chat", "format": "chat", "messages": messages, "text": "stale rendering"})
    result = normalize(docs, NormalizeConfig())
    assert result.kept["messages"].to_list() == [
        [
            {"role": "user", "content": "Is the café open today?\n\nThanks"},
            {"role": "assistant", "content": "Yes, until 6 pm."},
        ]
    ]
    expected = "user: Is the café open today?\n\nThanks\n\nassistant: Yes, until 6 pm."
    assert result.kept["text"][0] == expected
    assert result.kept["text_chars"][0] == len(expected)
    rendered = result.kept.select(render_chat(pl.col("messages")))
    assert rendered.item() == expected


def test_chat_with_only_blank_messages_is_dropped():
    docs = make_docs(
        {"kind": "chat", "messages": [{"role": "user", "content": " \u200b "}, {"role": "assistant", "content": ""}]},
        {"kind": "chat", "messages": [{"role": "user", "content": "Hello"}]},
    )
    result = normalize(docs, NormalizeConfig())
    assert result.verdicts["doc_id"].to_list() == ["d0"]
    assert result.kept["text"].to_list() == ["user: Hello"]


def test_columns_are_kept_and_input_is_not_modified():
    docs = make_docs(
        {"text": "Hello   world", "provenance": '{"crawl": "CC-MAIN-2024-10"}', "line": 7},
        {"kind": "chat", "messages": [{"role": "user", "content": "Hi  there"}]},
        {"text": "x = 1\r\n", "kind": "code", "code_language": "python"},
    )
    before = docs.clone()
    result = normalize(docs, NormalizeConfig())
    assert result.kept.columns == [*docs.columns, "text_chars"]
    assert result.kept["text"].to_list() == ["Hello world", "user: Hi there", "x = 1\n"]
    assert result.kept["text_chars"].to_list() == [11, 14, 6]
    assert result.kept["provenance"][0] == '{"crawl": "CC-MAIN-2024-10"}'
    assert result.kept["line"][0] == 7
    assert_frame_equal(docs, before)


def test_metrics_count_ftfy_work():
    docs = make_docs({"text": "plain ascii"}, {"text": "cafÃ©"}, {"text": "Fish &amp; chips"}, {"text": "ok ü"})
    metrics = normalize(docs, NormalizeConfig()).metrics
    assert metrics["ftfy_checked"] == 4
    assert metrics["ftfy_candidates"] == 2
    assert metrics["ftfy_changed"] == 2
    assert metrics["ftfy_skipped"] == 2
    assert metrics["docs_in"] == 4 and metrics["docs_out"] == 4


def test_unicode_repair_can_be_switched_off():
    result = normalize(make_docs({"text": "cafÃ©"}), NormalizeConfig(fix_unicode=False))
    assert result.kept["text"][0] == "cafÃ©"
    assert result.metrics["ftfy_candidates"] == 0


# Characters that take part in mojibake, entities and controls, so hypothesis explores the interesting region.
_MOJIBAKE_PIECES = list("ÃÂâ€™œžŸ©®°±²³µ¶·»¼½¾¿×÷ØÙÐÎŠšŒœ–—‘’“”•…") + [
    "\xa0", "\xad", "\x80", "\x85", "\x9d", "\x1b[1m", "&amp;", "&#x2019;", "&eacute;", "<", "\x00", "\x0b",
    "\ufeff", "\u206b", "Ã©", "â€™", "Ã ", "вЂ", "√±", " ", "\n", "a", "Z", "é", "\u3000", "\U0001f600",
]
_texts = st.lists(st.sampled_from(_MOJIBAKE_PIECES) | st.characters(max_codepoint=0x33FF), max_size=30).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.lists(_texts, min_size=1, max_size=5))
def test_ftfy_check_only_skips_texts_ftfy_would_not_change(texts):
    """The vectorized pre-check is exact: gated repair equals ftfy on every text."""
    repaired, _, _ = normalize_module._repair_unicode(pl.Series("text", texts, dtype=pl.String))
    assert repaired.to_list() == [ftfy.fix_text(text, normalize_module._FTFY_CONFIG) for text in texts]


@settings(max_examples=200, deadline=None)
@given(_texts)
def test_normalized_prose_is_clean(text):
    result = normalize(make_docs({"text": text}), NormalizeConfig())
    if result.kept.is_empty():
        assert result.verdicts["rule"].to_list() == [EMPTY_RULE]
        return
    out = result.kept["text"][0]
    assert out == out.strip()
    assert "\r" not in out and "\n\n\n" not in out and "  " not in out and "\u200b" not in out
    assert " \n" not in out and "\n " not in out
    assert not any(ord(c) < 32 and c != "\n" for c in out)
    assert result.kept["text_chars"][0] == len(out)


def test_empty_input_gives_empty_output():
    empty = make_docs({"text": "x"}).clear()
    result = normalize(empty, NormalizeConfig())
    assert result.kept.is_empty() and result.verdicts.is_empty()
    assert result.kept.columns == [*empty.columns, "text_chars"]
