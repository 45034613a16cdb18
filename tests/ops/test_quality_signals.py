"""Tests for ops/quality_signals.py: hand-computed values per signal, plus a property test against a slow
transcription of the published definitions (below) on random texts."""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter

import regex

from curation_platform.ops import quality_signals as _qs

# The two regex passes of the word splitter, run per text with the ``regex`` module (Rust ``${n}`` -> ``\g<n>``).
INFIX_RE = regex.compile(_qs._INFIX_RE)
INFIX_REPLACEMENT = regex.sub(r"\$\{?(\d+)\}?", r"\\g<\1>", _qs._INFIX_REPLACEMENT)
TOKEN_RE = regex.compile(_qs._TOKEN_RE)
TERMINATOR_RE = regex.compile(r"[\p{Sentence_Terminal}\u17D6\u17D9\u17DA]")
# DataTrove's PUNCTUATION_SET, written out: ASCII punctuation, C0/C1 controls but tab and newline, typographic
# marks, sentence terminators.
SYMBOL_CHARS = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~—”“„’´–…«»►〈〉《》「」【】、━，；∶．（）？！：％１～。") | {
    chr(c) for c in [*range(0, 9), *range(11, 32), *range(127, 160)]
}
STOP_WORDS = {"the", "be", "to", "of", "and", "that", "have", "with"}
CITATION_RE = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")
POLICY = ["terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies"]


def _is_symbol_char(ch: str) -> bool:
    return ch in SYMBOL_CHARS or bool(TERMINATOR_RE.fullmatch(ch))


def tokens(text: str) -> list[str]:
    spaced = INFIX_RE.sub(INFIX_REPLACEMENT, INFIX_RE.sub(INFIX_REPLACEMENT, text))
    return TOKEN_RE.findall(spaced)


def _sentences(line: str) -> int:
    """spaCy sentencizer rule: a sentence starts at the first non-punctuation token after a terminator token."""
    count, seen_terminator = 1, False
    for token in tokens(line):
        if len(token) == 1 and TERMINATOR_RE.fullmatch(token):
            seen_terminator = True
        elif not all(unicodedata.category(c).startswith("P") for c in token) and seen_terminator:
            count, seen_terminator = count + 1, False
    return count


def _dups(items: list[str]) -> tuple[int, int]:
    seen, count, chars = set(), 0, 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


def _top(ngrams: list[str]) -> int:
    gram, count = Counter(ngrams).most_common(1)[0]
    return len(gram) * count


def _all_dup(words: list[str], n: int) -> int:
    seen, chars, i = set(), 0, 0
    while i < len(words) - n + 1:
        gram = "".join(words[i : i + n])
        if gram in seen:
            chars += len(gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


def _div(a: float, b: float) -> float | None:
    return a / b if b else None


def reference_signals(text: str) -> dict[str, float | None]:
    """Every prose signal for one text, computed the slow way."""
    out: dict[str, float | None] = {}
    words = tokens(text)
    non_symbol = [w for w in words if any(not _is_symbol_char(c) for c in w)]
    out["word_count"] = len(non_symbol)
    out["word_and_symbol_count"] = len(words)
    out["mean_word_length"] = _div(sum(len(w) for w in non_symbol), len(non_symbol))
    out["hash_to_word_ratio"] = _div(text.count("#"), len(words))
    out["ellipsis_to_word_ratio"] = _div(text.count("...") + text.count("…"), len(words))
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]  # str.splitlines() on \n-only text
    out["bullet_line_frac"] = _div(sum(s.lstrip().startswith(("•", "-")) for s in lines), len(lines))
    out["ellipsis_line_frac"] = _div(sum(s.rstrip().endswith(("...", "…")) for s in lines), len(lines))
    out["alpha_word_frac"] = _div(sum(any(c.isalpha() for c in w) for w in words), len(words))
    out["stop_word_count"] = sum(w in STOP_WORDS for w in words)
    out["distinct_stop_words"] = len(STOP_WORDS & set(words))

    paragraphs = re.split(r"\n{2,}", text.strip())
    d, c = _dups(paragraphs)
    out["dup_para_frac"] = _div(d, len(paragraphs))
    out["dup_para_char_frac"] = _div(c, len(text))
    rep_lines = re.split(r"\n+", text)
    d, c = _dups(rep_lines)
    out["dup_line_frac"] = _div(d, len(rep_lines))
    out["dup_line_char_frac"] = _div(c, len(text))
    for n in (2, 3, 4):
        grams = [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
        out[f"top_{n}gram_char_frac"] = (_top(grams) / len(text) if grams else 0.0) if text else None
    for n in range(5, 11):
        out[f"dup_{n}gram_char_frac"] = _all_dup(words, n) / len(text) if text else None

    # C4: walk lines in order; record what each check would do.
    removed = no_punct = few = js = policy = sentences = 0
    lorem = curly = 0
    for raw in lines:
        line = raw.strip()
        line_words = line.split()
        if any(len(w) > 1000 for w in line_words):
            removed += 1
            continue
        line = CITATION_RE.sub("", line)
        if not line.endswith((".", "?", "!", '"', "'")) or line.endswith("..."):
            removed += 1
            no_punct += 1
            continue
        if len(line_words) < 3:
            removed += 1
            few += 1
            continue
        low = line.lower()
        if "lorem ipsum" in low:
            lorem = 1
            continue
        if "javascript" in low:
            removed += 1
            js += 1
            continue
        if "{" in line:
            curly = 1
            continue
        if any(p in low for p in POLICY):
            removed += 1
            policy += 1
            continue
        sentences += _sentences(line)
    out["c4_no_terminal_punct_line_frac"] = _div(no_punct, len(lines))
    out["c4_too_few_words_line_frac"] = _div(few, len(lines))
    out["c4_javascript_line_count"] = js
    out["c4_policy_line_count"] = policy
    out["c4_removed_line_frac"] = _div(removed, len(lines))
    out["c4_lorem_ipsum"] = lorem
    out["c4_curly_bracket"] = curly
    out["c4_sentence_count"] = sentences

    fw_lines = [s for s in text.split("\n") if s.strip()]
    out["line_punct_ratio"] = _div(sum(bool(s) and bool(TERMINATOR_RE.fullmatch(s[-1])) for s in fw_lines),
                                   len(fw_lines))
    out["short_line_ratio"] = _div(sum(len(s) <= 30 for s in fw_lines), len(fw_lines))
    out["char_dup_ratio"] = _div(_dups([s for s in fw_lines if s.strip()])[1], len(text.replace("\n", "")))
    out["newline_to_word_ratio"] = _div(text.count("\n"), len(words))
    return out


# ---------------------------------------------------------------------------------------------------------------
# The engine under test.

import polars as pl  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from curation_platform.ops.quality_signals import SIGNAL_COLUMNS, SignalsConfig, quality_signals  # noqa: E402
from curation_platform.records import RECORD_SCHEMA  # noqa: E402


def make_docs(texts, kind="web", messages=None, drop="drop-1"):
    n = len(texts)
    kinds = kind if isinstance(kind, list) else [kind] * n
    data = {
        "doc_id": [f"doc{i}" for i in range(n)], "source": ["src"] * n, "drop": [drop] * n,
        "source_id": [str(i) for i in range(n)], "license": ["MIT"] * n, "kind": kinds, "text": texts,
        "messages": messages if messages is not None else [None] * n, "provenance": ["{}"] * n,
        "file": ["f.jsonl"] * n, "line": list(range(1, n + 1)), "format": ["jsonl"] * n,
        "code_language": [None] * n, "declared_language": [None] * n,
    }
    return pl.DataFrame(data, schema=RECORD_SCHEMA)


def signals_of(text, kind="web"):
    return quality_signals(make_docs([text], kind)).kept.row(0, named=True)


# ---------------------------------------------------------------------------------------------------------------
# Gopher quality

def test_word_counts_and_mean_length():
    # Tokens: The, cat, sat, ., It, ran, ! -> 5 words (3+3+3+2+3 = 14 chars), 7 tokens.
    s = signals_of("The cat sat. It ran!")
    assert s["word_count"] == 5
    assert s["word_and_symbol_count"] == 7
    assert s["mean_word_length"] == pytest.approx(14 / 5)
    assert s["alpha_word_frac"] == pytest.approx(5 / 7)
    assert s["text_chars"] == 20


def test_hash_and_ellipsis_ratios_use_all_tokens():
    # Tokens: #, tag, one, ..., two, … -> 6 tokens; one '#', one '...' and one '…'.
    s = signals_of("#tag one... two…")
    assert s["word_and_symbol_count"] == 6
    assert s["hash_to_word_ratio"] == pytest.approx(1 / 6)
    assert s["ellipsis_to_word_ratio"] == pytest.approx(2 / 6)


def test_bullet_and_ellipsis_lines_follow_splitlines():
    # splitlines(): 4 lines (the final newline opens no line); bullets '•' and '-' after spaces count.
    s = signals_of("• one\n  - two\nthree...\nfour…\n")
    assert s["bullet_line_frac"] == pytest.approx(2 / 4)
    assert s["ellipsis_line_frac"] == pytest.approx(2 / 4)


def test_stop_words_are_case_sensitive_tokens():
    # 'the' and 'of' count, 'The' does not (DataTrove compares tokens as they are).
    s = signals_of("The end of the road.")
    assert s["stop_word_count"] == 2


def test_symbol_only_tokens_are_not_words():
    s = signals_of("hello -- __ © world")
    # DataTrove's tokens: hello, --, _, _, ©, world; '©' is not in its punctuation set, so it is a word.
    assert s["word_count"] == 3
    assert s["word_and_symbol_count"] == 6


# ---------------------------------------------------------------------------------------------------------------
# Gopher repetition

def test_duplicate_lines_and_paragraphs():
    text = "alpha beta\nalpha beta\ngamma\n\nalpha beta\nalpha beta\ngamma"
    s = signals_of(text)
    # Lines (split on runs of newlines): 6 lines, 4 repeats ('alpha beta' x3 after the first, 'gamma' x1).
    assert s["dup_line_frac"] == pytest.approx(4 / 6)
    assert s["dup_line_char_frac"] == pytest.approx((3 * 10 + 5) / len(text))
    # Paragraphs: 2, the second repeats the first (27 chars).
    assert s["dup_para_frac"] == pytest.approx(1 / 2)
    assert s["dup_para_char_frac"] == pytest.approx(27 / len(text))


def test_top_ngram_counts_most_frequent_with_spaces():
    # Bigrams: 'ab cd' x2, 'cd ab', 'cd ef' -> 5 chars x 2 = 10 of 14 characters.
    s = signals_of("ab cd ab cd ef")
    assert s["top_2gram_char_frac"] == pytest.approx(10 / 14)
    # Trigrams all unique: the first one wins the tie, 'ab cd ab' = 8 chars once.
    assert s["top_3gram_char_frac"] == pytest.approx(8 / 14)


def test_top_ngram_zero_when_too_few_tokens():
    s = signals_of("one two three")
    assert s["top_4gram_char_frac"] == 0.0


def test_duplicate_ngrams_greedy_skip():
    # 15 tokens 'a b c d e' x3, 29 characters. DataTrove's scan: 5-gram at position 5 repeats (+5 chars, jump
    # to 10), position 10 repeats (+5): 10 chars, not the 30 a naive count of repeated positions would give.
    text = " ".join(["a b c d e"] * 3)
    s = signals_of(text)
    assert s["dup_5gram_char_frac"] == pytest.approx(10 / 29)
    # 6-grams: positions 5..9 repeat position 0..4; scan hits 5 (+6, jump to 11 > last position 9).
    assert s["dup_6gram_char_frac"] == pytest.approx(6 / 29)
    assert s["dup_10gram_char_frac"] == pytest.approx(10 / 29)


def test_no_repetition_gives_zero():
    s = signals_of("one two three four five six seven eight nine ten eleven twelve")
    for n in range(5, 11):
        assert s[f"dup_{n}gram_char_frac"] == 0.0
    assert s["dup_line_frac"] == 0.0


# ---------------------------------------------------------------------------------------------------------------
# C4

def test_c4_line_fractions_and_sentences():
    text = (
        "This line ends well. It has two sentences.\n"  # kept, 2 sentences
        "No punctuation here\n"  # removed: no terminal punctuation
        "Too short.\n"  # removed: 2 words
        "Please enable JavaScript to continue.\n"  # removed: javascript
        "We use cookies on this site.\n"  # removed: policy
        "A cited claim here.[12]"  # kept: the citation is removed first, 1 sentence
    )
    s = signals_of(text)
    assert s["c4_no_terminal_punct_line_frac"] == pytest.approx(1 / 6)
    assert s["c4_too_few_words_line_frac"] == pytest.approx(1 / 6)
    assert s["c4_javascript_line_count"] == 1
    assert s["c4_policy_line_count"] == 1
    assert s["c4_removed_line_frac"] == pytest.approx(4 / 6)
    assert s["c4_sentence_count"] == 3
    assert s["c4_lorem_ipsum"] == 0 and s["c4_curly_bracket"] == 0


def test_c4_page_markers_only_on_lines_that_reach_the_check():
    assert signals_of("Lorem ipsum dolor sit amet.")["c4_lorem_ipsum"] == 1
    # Without terminal punctuation the line is removed before the lorem ipsum check, as in C4.
    assert signals_of("Lorem ipsum dolor sit amet")["c4_lorem_ipsum"] == 0
    assert signals_of("The map {a: 1} is here.")["c4_curly_bracket"] == 1
    assert signals_of("function f() {")["c4_curly_bracket"] == 0


def test_c4_long_word_line_removed():
    s = signals_of("a" * 1001 + " is a long word.\nThis is fine.")
    assert s["c4_removed_line_frac"] == pytest.approx(1 / 2)
    assert s["c4_no_terminal_punct_line_frac"] == 0.0


# ---------------------------------------------------------------------------------------------------------------
# FineWeb

def test_fineweb_ratios():
    text = "A sentence that ends with a period.\nshort\nshort\n"
    s = signals_of(text)
    # split('\n') gives 3 non-blank lines (blank ones are not judged): 1 ends with punctuation; 2 are <= 30 chars.
    assert s["line_punct_ratio"] == pytest.approx(1 / 3)
    assert s["short_line_ratio"] == pytest.approx(2 / 3)
    # Non-empty lines: one repeat of 'short' (5 chars) over 48 - 3 newline characters.
    assert s["char_dup_ratio"] == pytest.approx(5 / 45)
    # Tokens: 7 words + '.' + 2 -> 10; 3 newlines.
    assert s["newline_to_word_ratio"] == pytest.approx(3 / 10)


# ---------------------------------------------------------------------------------------------------------------
# Code

def test_code_signals():
    s = signals_of("def f():\n    return 1\n", kind="code")
    assert s["code_max_line_length"] == 12
    assert s["code_mean_line_length"] == pytest.approx(10.0)
    assert s["code_alnum_frac"] == pytest.approx(11 / 22)
    assert s["code_autogenerated"] == 0
    assert s["code_data_like"] == 0
    # Prose signals are not computed for code.
    assert s["word_count"] is None and s["dup_line_frac"] is None


def test_code_autogenerated_only_in_header():
    assert signals_of("# Code generated by protoc. DO NOT EDIT.\nx = 1\n", kind="code")["code_autogenerated"] == 1
    late = "\n".join(["x = 1"] * 5) + "\n# generated by hand\n"
    assert signals_of(late, kind="code")["code_autogenerated"] == 0


def test_code_data_like():
    blob = "DATA = '" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo" * 60 + "'\n"
    s = signals_of(blob, kind="code")
    assert s["code_encoded_data_frac"] > 0.9
    assert s["code_data_like"] == 1
    numbers = "\n".join("1,2,3,4,5,6,7,8,9" for _ in range(20))
    assert signals_of(numbers, kind="code")["code_data_like"] == 1


# ---------------------------------------------------------------------------------------------------------------
# Chat

def _turns(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


def test_chat_signals():
    messages = [
        _turns(("user", "What is 2+2?"), ("assistant", "4, of course."), ("user", "Thanks"), ("assistant", "Sure!")),
        _turns(("user", "Hi"), ("assistant", "   ")),
        _turns(("user", "Say it"), ("user", "Say it"), ("assistant", "It.")),
        _turns(("user", "  what IS  2+2? "), ("assistant", "5")),
        _turns(("user", "Nobody answers")),
    ]
    docs = make_docs([None] * 5, kind="chat", messages=messages)
    out = quality_signals(docs).kept
    assert out["chat_response_chars"].to_list() == [5, 3, 3, 1, None]
    assert out["chat_empty_response"].to_list() == [0, 1, 0, 0, 1]
    assert out["chat_repeated_turns"].to_list() == [0, 0, 1, 0, 0]
    # Docs 0 and 3 share the normalized prompt 'what is 2+2?' with different answers.
    assert out["chat_conflicting_response"].to_list() == [1, 0, 0, 1, 0]
    assert out["word_count"].null_count() == 5


def test_conflicting_response_is_per_drop():
    messages = [_turns(("user", "Q"), ("assistant", "A")), _turns(("user", "Q"), ("assistant", "B"))]
    docs = pl.concat([make_docs([None], "chat", messages[:1], drop="d1"), make_docs([None], "chat", messages[1:], drop="d2")])
    assert quality_signals(docs).kept["chat_conflicting_response"].to_list() == [0, 0]


# ---------------------------------------------------------------------------------------------------------------
# Stage contract

def test_adds_columns_drops_nothing_and_is_deterministic():
    docs = make_docs(["The cat sat on the mat.", "x = 1\n", None], kind=["web", "code", "chat"])
    first = quality_signals(docs)
    second = quality_signals(docs)
    assert first.verdicts.is_empty()
    assert first.kept.columns[: len(docs.columns)] == docs.columns
    assert set(SIGNAL_COLUMNS) <= set(first.kept.columns)
    assert first.kept.select(docs.columns).equals(docs)
    assert first.kept.equals(second.kept)
    assert first.metrics["documents"] == 3


def test_rerun_replaces_signal_columns():
    docs = make_docs(["The cat sat on the mat."])
    once = quality_signals(docs).kept
    twice = quality_signals(once).kept
    assert twice.columns == once.columns and twice.equals(once)


def test_empty_input():
    out = quality_signals(make_docs([])).kept
    assert out.height == 0 and "word_count" in out.columns


def test_config_forbids_unknown_fields():
    with pytest.raises(ValueError):
        SignalsConfig(not_a_field=1)


def test_batches_do_not_change_results():
    # Many documents span several internal batches; each must equal its single-document result.
    texts = [f"Line {i} says the same thing.\n" * (i % 7 + 1) + "word " * (i * 37 % 400) for i in range(120)]
    together = quality_signals(make_docs(texts)).kept
    for i in (0, 1, 59, 119):
        alone = quality_signals(make_docs([texts[i]])).kept
        for name in ("word_count", "dup_line_frac", "top_2gram_char_frac", "dup_5gram_char_frac"):
            assert together[name][i] == alone[name][0]


# ---------------------------------------------------------------------------------------------------------------
# Property: the columnar engine equals the slow transcription of the definitions.

_PIECES = ["the", "cat", "sat", "of", "The", "a", "...", "…", ".", "!", "?", "#", "•", "-", "'", '"', "{",
           "lorem ipsum", "javascript", "privacy policy", "don't", "3.5", "_", "©", "é", "[1]", "x" * 31]
_SEPARATORS = [" ", " ", "", "\n", "\n\n", "  ", "\t", "\n\n\n"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_PIECES), st.sampled_from(_SEPARATORS)), max_size=80))
def test_matches_reference_definitions(parts):
    text = "".join(p + s for p, s in parts)
    got = signals_of(text)
    for name, expected in reference_signals(text).items():
        value = got[name]
        if expected is None:
            assert value is None, name
        else:
            assert value is not None and math.isclose(value, expected, rel_tol=1e-9, abs_tol=1e-12), name


def test_text_chars_is_kept_for_code_and_chat_documents():
    import polars as _pl

    from curation_platform.ops.quality_signals import quality_signals as _qs

    docs = _pl.DataFrame({
        "doc_id": ["c", "w"], "kind": ["code", "web"], "text": ["x = 1\n", "Hello there."], "drop": ["d", "d"],
        "messages": [None, None],
    }, schema_overrides={"messages": _pl.List(_pl.Struct({"role": _pl.String, "content": _pl.String}))})
    assert _qs(docs).kept["text_chars"].to_list() == [6, 12]
