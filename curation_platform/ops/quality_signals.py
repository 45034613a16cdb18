"""Quality signals as columns: Gopher quality and repetition, C4, FineWeb, code and chat signals, computed once.

The stage only ADDS columns; ``ops/filters.py`` turns them into drops with rules. Definitions follow DataTrove's
filters (GopherQualityFilter, GopherRepetitionFilter, C4QualityFilter, FineWebQualityFilter), which implement
Rae et al. 2021 (Gopher), Raffel et al. 2020 (C4) and Penedo et al. 2024 (FineWeb), including DataTrove's English
word and sentence splitting (a blank spaCy English tokenizer and sentencizer), re-expressed as two regex passes
and a token-class pattern. ``bench/filter_parity.py`` measures the keep/drop agreement per rule family on real
text (README, "Reference parity"). Deviations, all deliberate:

- The word splitter reproduces spaCy's prefix, suffix, infix, URL and contraction rules for what English text
  needs, not its whole exception table or its unit suffixes ("10km" stays one token).
- C4's line removals are reported as fractions; the text is not rewritten.
- Lines are split on ``\\n`` only (the normalize stage turns other line breaks into ``\\n``).

Everything is Polars expressions plus numpy over flat token arrays. The one exception is the Gopher
"duplicate n-gram" greedy scan, which is sequential by definition; it runs only over n-gram positions whose
n-gram occurs more than once in its document (usually a handful per document).
"""

from __future__ import annotations

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from curation_platform.ops.flagged_words import FlaggedWordsConfig, flagged_word_signals
from curation_platform.records import StageResult

# Gopher stop words, Rae et al. 2021 (matched case-sensitively, as DataTrove does).
GOPHER_STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]

# Word splitting follows DataTrove's English ``split_into_words`` (spaCy's rule-based English tokenizer, blank
# pipeline): text splits on whitespace; punctuation is peeled off both ends of a chunk one character at a time;
# a few infixes split inside a chunk. Done as two regex passes: ``_INFIX_RE`` spaces out the inside splits, then
# ``_TOKEN_RE`` takes URLs, dotted abbreviations, words and single punctuation characters.
# Characters peeled off the start of a chunk (spaCy prefixes) and off its end (suffixes; "." is handled apart).
_PREFIX = r"""()\[\]{}<>"'`‘’“”«»„‚´,;:!?¿¡_#*&$£€¥§—–=%+…\p{So}"""
_SUFFIX = r"""()\[\]{}<>"'`‘’“”«»„‚´,;:!?¿¡_#*&%—–…\p{So}\p{Sc}"""
# Inside a chunk: ellipses, a hyphen or : < > = / between a letter/digit and a letter, a comma between letters,
# a period between a lower-case letter and an upper-case one, + - * ^ between digits, contractions ('s, n't,
# 're, ...) and "cannot". A chunk from a host name or URL on (spaCy's url_match: labels and a lower-case
# top-level domain, or a scheme) matches first and comes out unchanged.
_INFIX_RE = (
    r"((?:[A-Za-z][A-Za-z0-9+.\-]*://)?[\p{L}\p{N}_][\p{L}\p{N}_-]*(?:\.[\p{L}\p{N}_-]+)*\.\p{Ll}{2,}"
    r"\S*|[A-Za-z][A-Za-z0-9+.\-]*://\S*)"
    r"|(\.\.+|…)"
    r"|([\p{L}\p{N}])([-–—~:<>=/]|--)(\p{L})"
    r"|(\p{L})(,)(\p{L})"
    r"|([\p{Ll}'\"’”])(\.)(\p{Lu})"
    r"|(\p{N})([-+*^])(\p{N})"
    r"|(\p{L})((?:n['’]t|['’](?:[sSdm]|re|ll|ve))\b)"
    r"|\b([Cc]an)(not)\b"
)
_INFIX_REPLACEMENT = "$1${3}${6}${9}${12}${15}${17} $2${4}${7}${10}${13}${16}${18} ${5}${8}${11}${14}"
_TOKEN_RE = (
    r"\.\.+|…|\):|''"  # ellipses and the emoticon-like "):" stay whole
    r"|['’](?:[sSdm]|re|ll|ve)\b"  # contraction endings split off by the infix pass
    r"|(?:\p{Lu}\.)+|(?:e\.g|i\.e|a\.m|p\.m|Mr|Mrs|Ms|Dr|St|Jr|Sr|vs|Inc|Ltd|Co|Corp)\."  # U.S., e.g.
    rf"|[^\s{_PREFIX}](?:[^\s]*[^\s{_SUFFIX}.])?"  # a chunk minus peeled prefixes and suffixes
    r"|\S"  # a peeled character
)
# DataTrove's PUNCTUATION_SET: ASCII punctuation, controls, a few typographic marks and sentence terminators.
# A token with a character outside it is a word (Gopher's "non-symbol word").
_NON_SYMBOL_RE = (
    r"[^!-/:-@\[-`{-~\x00-\x08\x0B-\x1F\x7F-\x9F—”“„’´–…«»►〈〉《》「」【】、━，；∶．（）？！：％１～。"
    r"\p{Sentence_Terminal}\u17D6\u17D9\u17DA]"
)
# C4 (tensorflow_datasets c4_utils): Wikipedia-style citations removed before the terminal-punctuation check.
_C4_CITATION_RE = r"\[\d*\]|\[edit\]|\[citation needed\]"
_C4_POLICY_RE = r"(?i)terms of use|privacy policy|cookie policy|uses cookies|use of cookies|use cookies"
# FineWeb's line ending: a Unicode sentence terminator (DataTrove's TERMINAL_PUNCTUATION is that property plus
# three Khmer signs), so a closing quote or bracket does not count.
_TERMINAL_PUNCT_END_RE = r"[\p{Sentence_Terminal}\u17D6\u17D9\u17DA]$"
# C4 sentences are DataTrove's English sentence splitter (spaCy's sentencizer): a sentence starts at the first
# non-punctuation token after a token that is one sentence terminator ('.', '!', '?', ...).
_SENTENCE_TERMINATOR_TOKEN_RE = r"^[\p{Sentence_Terminal}\u17D6\u17D9\u17DA]$"
_PUNCT_TOKEN_RE = r"^\p{P}+$"
# StarCoder encoded-data regexes (Li et al. 2023): base64, hex byte lists, unicode escapes.
_BASE64_RE = r"[a-zA-Z0-9+/=\n]{64,}"
_HEX_RE = r"(?:\b(?:0x|\\x)?[0-9a-fA-F]{2}(?:,|\b\s*)){8,}"
_UNICODE_ESCAPE_RE = r"(?:\\u[0-9a-fA-F]{4}){8,}"

_REGEX_META = set("\\.+*?()|[]{}^$#&-~")
_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_MIX1 = _U64(0xBF58476D1CE4E5B9)
_MIX2 = _U64(0x94D049BB133111EB)
_POS_BITS = 32
# N-gram hash tables stay cache-sized when documents are processed in batches of about this many characters;
# one batch of the whole drop is several times slower.
_BATCH_CHARS = 250_000


class SignalsConfig(BaseModel):
    """Which kinds get which signals, and the few parameters the signal definitions take."""

    model_config = ConfigDict(extra="forbid")

    prose_kinds: list[str] = Field(default_factory=lambda: ["web", "text", "synthetic"])
    code_kinds: list[str] = Field(default_factory=lambda: ["code"])
    chat_kinds: list[str] = Field(default_factory=lambda: ["chat"])
    stop_words: list[str] = Field(default_factory=lambda: list(GOPHER_STOP_WORDS))  # Rae et al. 2021
    top_ngram_sizes: list[int] = Field(default_factory=lambda: [2, 3, 4])  # Gopher table A1
    dup_ngram_sizes: list[int] = Field(default_factory=lambda: [5, 6, 7, 8, 9, 10])  # Gopher table A1
    bullet_markers: list[str] = Field(default_factory=lambda: ["•", "-"])  # DataTrove GopherQualityFilter
    short_line_length: int = 30  # FineWeb short_line_length, Penedo et al. 2024
    # Word lists (LDNOOBW English by default) and flagged-word limits per source and language.
    flagged_words: FlaggedWordsConfig = Field(default_factory=FlaggedWordsConfig)
    c4_min_words_per_line: int = 3  # C4 min_words_per_line, Raffel et al. 2020
    c4_max_word_length: int = 1000  # C4 max_word_length (tensorflow_datasets c4_utils)
    code_header_lines: int = 5  # StarCoder looks for auto-generation markers in the first 5 lines
    code_autogenerated_markers: list[str] = Field(
        default_factory=lambda: [
            "auto-generated", "autogenerated", "automatically generated", "generated automatically",
            "this file is generated", "generated by", "do not edit",
        ]
    )  # StarCoder (Li et al. 2023) style header markers
    code_encoded_max_chars: int = 1024  # StarCoder encoded-data removal: > 1024 encoded chars ...
    code_encoded_max_frac: float = 0.5  # ... or > 50% of the file
    code_numeric_max_frac: float = 0.8  # our choice (no published value): digits/commas/dots dominate


# Every column the stage adds, with its meaning; the UI and ``filters.whatif`` read these names.
SIGNAL_COLUMNS: dict[str, str] = {
    "text_chars": "characters in text (the denominator of every *_char_frac)",
    "word_count": "Gopher: words that are not pure punctuation/symbols (Rae et al. 2021)",
    "word_and_symbol_count": "all tokens, words and punctuation (DataTrove's n_words for ratios)",
    "mean_word_length": "Gopher: mean characters per word",
    "hash_to_word_ratio": "Gopher: '#' count / all tokens",
    "ellipsis_to_word_ratio": "Gopher: ('...' + '…') count / all tokens",
    "bullet_line_frac": "Gopher: lines starting with a bullet ('•' or '-') / lines",
    "ellipsis_line_frac": "Gopher: lines ending with '...' or '…' / lines",
    "alpha_word_frac": "Gopher: tokens with an alphabetic character / all tokens",
    "stop_word_count": "tokens equal to a Gopher stop word (the, be, to, of, and, that, have, with)",
    "distinct_stop_words": "Gopher: distinct stop words among the tokens (DataTrove intersects word sets)",
    "dup_para_frac": "Gopher repetition: repeated paragraphs / paragraphs",
    "dup_para_char_frac": "Gopher repetition: characters in repeated paragraphs / characters",
    "dup_line_frac": "Gopher repetition: repeated lines / lines",
    "dup_line_char_frac": "Gopher repetition: characters in repeated lines / characters",
    **{f"top_{n}gram_char_frac": f"Gopher repetition: characters of the most frequent {n}-gram x its count"
       " / characters" for n in (2, 3, 4)},
    **{f"dup_{n}gram_char_frac": f"Gopher repetition: characters in repeated {n}-grams (greedy, non-overlapping)"
       " / characters" for n in range(5, 11)},
    "c4_no_terminal_punct_line_frac": "C4: lines without terminal punctuation (or ending '...') / lines",
    "c4_too_few_words_line_frac": "C4: lines with fewer than 3 words / lines",
    "c4_javascript_line_count": "C4: otherwise-kept lines removed for mentioning javascript",
    "c4_policy_line_count": "C4: otherwise-kept lines removed for cookie/terms-of-use phrases",
    "c4_removed_line_frac": "C4: lines the C4 line filter would remove / lines",
    "c4_lorem_ipsum": "C4: 1 if a kept-so-far line contains 'lorem ipsum'",
    "c4_curly_bracket": "C4: 1 if a kept-so-far line contains '{'",
    "c4_sentence_count": "C4: sentences (spaCy-sentencizer rule) in the lines C4 keeps",
    "line_punct_ratio": "FineWeb: non-blank lines ending in a sentence terminator (. ! ? ...) / non-blank lines"
                        " (Penedo et al. 2024)",
    "short_line_ratio": "FineWeb: non-blank lines of at most 30 characters / non-blank lines",
    "char_dup_ratio": "FineWeb: characters in repeated non-empty lines / characters without newlines",
    "newline_to_word_ratio": "FineWeb list_ratio: newlines / all tokens",
    "code_max_line_length": "code: longest line in characters (Codex/StarCoder)",
    "code_mean_line_length": "code: mean line length in characters (Codex/StarCoder)",
    "code_alnum_frac": "code: alphanumeric characters / characters (Codex/StarCoder)",
    "code_autogenerated": "code: 1 if the first lines carry an auto-generation marker (StarCoder)",
    "code_encoded_data_frac": "code: characters inside base64/hex/unicode-escape blobs / characters (StarCoder)",
    "code_numeric_frac": "code: digits, commas and dots / non-space characters",
    "code_data_like": "code: 1 if the file looks like data (encoded blobs or mostly numbers)",
    "chat_response_chars": "chat: characters of the shortest assistant turn",
    "chat_empty_response": "chat: 1 if there is no assistant turn or one is blank",
    "chat_repeated_turns": "chat: turns whose content repeats the previous turn",
    "chat_conflicting_response": "chat: 1 if the same normalized prompt has different responses in the drop",
}

_PROSE_COLUMNS = [c for c in SIGNAL_COLUMNS if not c.startswith(("code_", "chat_"))]
_CODE_COLUMNS = [c for c in SIGNAL_COLUMNS if c.startswith("code_")]
_CHAT_COLUMNS = [c for c in SIGNAL_COLUMNS if c.startswith("chat_")]
_INT_COLUMNS = {
    "text_chars", "word_count", "word_and_symbol_count", "stop_word_count", "distinct_stop_words",
    "c4_javascript_line_count", "c4_policy_line_count", "c4_lorem_ipsum", "c4_curly_bracket", "c4_sentence_count",
    "code_max_line_length", "code_autogenerated", "code_data_like", "chat_response_chars", "chat_empty_response",
    "chat_repeated_turns", "chat_conflicting_response",
}


def _dtype(name: str) -> pl.DataType:
    return pl.Int64 if name in _INT_COLUMNS else pl.Float64


def _ratio(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    """num / den as Float64, null when den is 0 (the reference would divide by zero)."""
    return pl.when(den > 0).then(num.cast(pl.Float64) / den).otherwise(None)


def _per_row_sum(rows: np.ndarray, values: np.ndarray | None, n_rows: int) -> np.ndarray:
    """Sum ``values`` (or count) per row index; the exploded frames are long, so numpy's bincount is the fast path."""
    if values is None:
        return np.bincount(rows, minlength=n_rows).astype(np.int64)
    return np.bincount(rows, weights=values.astype(np.float64), minlength=n_rows)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer: spreads bits so rolling n-gram keys do not collide structurally."""
    x = x ^ (x >> _U64(30))
    x *= _MIX1
    x ^= x >> _U64(27)
    x *= _MIX2
    x ^= x >> _U64(31)
    return x


def _greedy_dup_chars(rows: list[int], pos: list[int], keys: list[int], chars: list[int], n: int,
                      out: np.ndarray) -> None:
    """Gopher duplicate n-gram characters, DataTrove's greedy scan: walk positions in order; an n-gram already
    seen at a visited position counts its characters and the scan jumps n positions. Positions whose n-gram is
    unique in the document never count and never jump, so only repeated-n-gram positions are walked."""
    current_row, seen, skip_until = -1, set(), -1
    for row, p, key, c in zip(rows, pos, keys, chars):
        if row != current_row:
            current_row, seen, skip_until = row, set(), -1
        if p < skip_until:
            continue
        if key in seen:
            out[row] += c
            skip_until = p + n
        else:
            seen.add(key)


def _tokens_expr(text: pl.Expr) -> pl.Expr:
    """List of word tokens per text, DataTrove's English ``split_into_words`` semantics (see ``_TOKEN_RE``)."""
    spaced = text.str.replace_all(_INFIX_RE, _INFIX_REPLACEMENT)
    # Overlapping infixes (a-b-c) need a second pass; the first one consumed the shared letter.
    spaced = spaced.str.replace_all(_INFIX_RE, _INFIX_REPLACEMENT)
    return spaced.str.extract_all(_TOKEN_RE)


def _token_signals(texts: pl.Series, text_chars: np.ndarray,
                   cfg: SignalsConfig) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Word-level Gopher signals and the n-gram repetition signals, from one flat token table; plus the
    sentences of every ``\\n``-separated line (in row, then line order) for C4.

    Tokens never contain whitespace, so tokenizing line by line gives the document's tokens in order."""
    n_docs = len(texts)
    lines = pl.DataFrame({"t": texts}).with_row_index("row").select(
        "row", pl.col("t").str.split("\n").alias("line")
    ).explode("line").with_row_index("line_id")
    tokens = (
        lines.select("line_id", "row", _tokens_expr(pl.col("line")).alias("tok"))
        .explode("tok")
        .drop_nulls("tok")
        .select(
            "line_id",
            pl.col("row").cast(pl.Int64),
            "tok",
            pl.col("tok").hash(seed=7).alias("hash"),
            pl.col("tok").str.len_chars().cast(pl.Int64).alias("chars"),
            pl.col("tok").str.contains(_NON_SYMBOL_RE).alias("is_word"),
            pl.col("tok").str.contains(r"\p{L}").alias("is_alpha"),
            pl.col("tok").is_in(cfg.stop_words).alias("is_stop"),
        )
    )
    # Sentence classes, with the regexes run only where they can matter: a terminator is one character, and a
    # token with a letter is never all punctuation.
    one_char = tokens["chars"].to_numpy() == 1
    terminator = np.zeros(tokens.height, dtype=bool)
    terminator[one_char] = tokens["tok"].filter(one_char).str.contains(_SENTENCE_TERMINATOR_TOKEN_RE).to_numpy()
    not_punct = tokens["is_alpha"].to_numpy().copy()
    no_letter = ~not_punct
    not_punct[no_letter] = ~tokens["tok"].filter(no_letter).str.contains(_PUNCT_TOKEN_RE).to_numpy()
    tokens = tokens.drop("tok").with_columns(pl.Series("terminator", terminator), pl.Series("not_punct", not_punct))
    line_sentences = _line_sentences(tokens, lines.height)
    row = tokens["row"].to_numpy()
    chars = tokens["chars"].to_numpy()
    is_word = tokens["is_word"].to_numpy()
    n_tokens = _per_row_sum(row, None, n_docs)
    n_words = _per_row_sum(row[is_word], None, n_docs)
    word_chars = _per_row_sum(row[is_word], chars[is_word], n_docs)
    n_alpha = _per_row_sum(row[tokens["is_alpha"].to_numpy()], None, n_docs)
    is_stop = tokens["is_stop"].to_numpy()
    n_stop = _per_row_sum(row[is_stop], None, n_docs)
    # Gopher's rule counts the distinct stop words present (a set intersection), not their occurrences.
    distinct_stop = tokens.filter("is_stop").unique(["row", "hash"])
    n_distinct_stop = _per_row_sum(distinct_stop["row"].to_numpy(), None, n_docs)
    out: dict[str, np.ndarray] = {
        "word_count": n_words,
        "word_and_symbol_count": n_tokens,
        "mean_word_length": np.divide(word_chars, n_words, out=np.full(n_docs, np.nan), where=n_words > 0),
        "alpha_word_frac": np.divide(n_alpha, n_tokens, out=np.full(n_docs, np.nan), where=n_tokens > 0),
        "stop_word_count": n_stop,
        "distinct_stop_words": n_distinct_stop,
    }

    # N-gram keys by rolling hash over the flat token array; a key is salted with its row so that equal
    # n-grams in different documents differ. An n-gram can only repeat where the (n-1)-grams at its position
    # and the next one both repeat, so each size only hashes and counts the survivors of the size before
    # (in prose that is a few percent of positions for n >= 4): exact, and far cheaper than counting all.
    total = len(row)
    doc_start = np.zeros(n_docs, dtype=np.int64)
    doc_start[1:] = np.cumsum(n_tokens)[:-1]
    tok_end = (doc_start + n_tokens)[row]
    cum_chars = np.zeros(total + 1, dtype=np.int64)
    np.cumsum(chars, out=cum_chars[1:])
    tok_hash = tokens["hash"].to_numpy()
    keys = _mix(tok_hash ^ (row.astype(_U64) * _GOLDEN))
    # ``repeated`` holds the positions whose current n-gram occurs more than once, ``keys`` their keys.
    dup = _is_duplicated(keys)
    repeated, keys = np.flatnonzero(dup), keys[dup]
    denominator = np.where(text_chars > 0, text_chars, 1).astype(np.float64)
    max_n = max([*cfg.top_ngram_sizes, *cfg.dup_ngram_sizes, 1])
    for n in range(2, max_n + 1):
        is_repeated = np.zeros(total + 1, dtype=bool)
        is_repeated[repeated] = True
        cand = repeated[is_repeated[repeated + 1] & (repeated + n <= tok_end[repeated])]
        keys = _mix(keys[np.searchsorted(repeated, cand)] * _GOLDEN + tok_hash[cand + n - 1])
        dup = _is_duplicated(keys)
        repeated, keys = cand[dup], keys[dup]
        if n in cfg.top_ngram_sizes:
            # Characters of a top n-gram count the spaces that join its words (DataTrove joins with " ").
            top = _top_ngram_chars(repeated, keys, row, doc_start, n_tokens, cum_chars, n)
            out[f"top_{n}gram_char_frac"] = top / denominator
        if n in cfg.dup_ngram_sizes:
            # Duplicate n-grams are joined without spaces in DataTrove, so only word characters count.
            dup_chars = np.zeros(n_docs, dtype=np.int64)
            _greedy_dup_chars(row[repeated].tolist(), repeated.tolist(), keys.tolist(),
                              (cum_chars[repeated + n] - cum_chars[repeated]).tolist(), n, dup_chars)
            out[f"dup_{n}gram_char_frac"] = dup_chars / denominator
    for name, values in out.items():
        if name.endswith("_char_frac"):
            out[name] = np.where(text_chars > 0, values, np.nan)
    return out, line_sentences


def _is_duplicated(keys: np.ndarray) -> np.ndarray:
    """True where the key occurs more than once."""
    if len(keys) == 0:
        return np.zeros(0, dtype=bool)
    return pl.Series(keys).is_duplicated().to_numpy()


def _top_ngram_chars(repeated: np.ndarray, keys: np.ndarray, row: np.ndarray, doc_start: np.ndarray,
                     n_tokens: np.ndarray, cum_chars: np.ndarray, n: int) -> np.ndarray:
    """Characters of each document's most frequent n-gram (joined by spaces) times its count; ties go to the
    n-gram that appears first, as ``Counter.most_common(1)`` does. Without a repeated n-gram that is the first
    n-gram, once; documents with fewer than n tokens get 0.

    ``repeated`` holds the global token positions of repeated n-grams (ascending) and ``keys`` their keys."""
    starts_all = doc_start
    has_ngram = n_tokens >= n
    first_end = np.minimum(starts_all + n, len(cum_chars) - 1)
    result = np.where(has_ngram, cum_chars[first_end] - cum_chars[starts_all] + (n - 1), 0).astype(np.int64)
    if len(repeated) == 0:
        return result
    rows = row[repeated]
    pos = repeated - doc_start[rows]
    counts = pl.DataFrame({"k": keys}).select(pl.len().over("k"))["len"].to_numpy().astype(np.int64)
    # One integer orders by count, then by earliest position: the per-document maximum is the reference's pick.
    score = (counts << _POS_BITS) | ((1 << _POS_BITS) - 1 - pos)
    seg = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    best = np.maximum.reduceat(score, seg)
    best_count = best >> _POS_BITS
    best_global = doc_start[rows[seg]] + (1 << _POS_BITS) - 1 - (best & ((1 << _POS_BITS) - 1))
    best_chars = cum_chars[best_global + n] - cum_chars[best_global] + (n - 1)
    result[rows[seg]] = best_count * best_chars
    return result


def _line_signals(texts: pl.Series, cfg: SignalsConfig, line_sentences: np.ndarray) -> pl.DataFrame:
    """Line-level Gopher, Gopher repetition, C4 and FineWeb signals from one exploded line table;
    ``line_sentences`` holds the sentences of every line, in the same order."""
    lines = (
        pl.DataFrame({"t": texts})
        .with_row_index("row")
        .select("row", pl.col("t").str.split("\n").alias("line"))
        .with_columns(pl.col("line").list.len().alias("n_split"))
        .explode("line")
        .with_columns(pl.int_range(pl.len()).over("row").alias("i"))
        .with_columns(
            (pl.col("i") == pl.col("n_split") - 1).alias("is_last"),
            pl.col("line").str.strip_chars().alias("stripped"),
        )
        # str.splitlines() drops the empty piece after a final newline; Gopher quality and C4 use it.
        .with_columns((~(pl.col("is_last") & (pl.col("line") == ""))).alias("in_splitlines"))
    )
    bullets = "|".join(_escape(m) for m in cfg.bullet_markers) or "$^"
    c4_clean = pl.col("stripped").str.replace_all(_C4_CITATION_RE, "")
    c4_words = pl.col("stripped").str.count_matches(r"\S+")
    # A line can only hold an over-long word if the line itself is longer; the cheap length test goes first.
    c4_long_word = (pl.col("stripped").str.len_chars() > cfg.c4_max_word_length) & pl.col("stripped").str.contains(
        r"\S{%d}" % (cfg.c4_max_word_length + 1)
    )
    c4_no_punct = ~c4_clean.str.contains(r"[.?!\"']$") | c4_clean.str.ends_with("...")
    features = lines.with_columns(
        pl.col("line").str.contains(rf"^\s*(?:{bullets})").alias("bullet"),
        pl.col("line").str.contains(r"(?:\.\.\.|…)\s*$").alias("ellipsis_end"),
        # FineWeb judges only non-blank lines; a line ends in a Unicode sentence terminator (not a quote).
        (pl.col("line").str.contains(_TERMINAL_PUNCT_END_RE) & (pl.col("stripped") != "")).alias("fw_punct"),
        ((pl.col("line").str.len_chars() <= cfg.short_line_length) & (pl.col("stripped") != "")).alias("fw_short"),
        pl.col("line").str.len_chars().alias("chars"),
        c4_long_word.alias("c4_long_word"),
        c4_no_punct.alias("c4_no_punct"),
        (c4_words < cfg.c4_min_words_per_line).alias("c4_few_words"),
        c4_clean.str.contains("(?i)lorem ipsum").alias("c4_lorem"),
        c4_clean.str.contains("(?i)javascript").alias("c4_js"),
        c4_clean.str.contains("{", literal=True).alias("c4_curly"),
        c4_clean.str.contains(_C4_POLICY_RE).alias("c4_policy"),
        c4_clean.alias("c4_line"),
    ).with_columns(
        # C4 checks a line in order and stops at the first removal; lorem ipsum and '{' only count on lines
        # that reached that check (lorem ipsum is checked before javascript, '{' after it).
        (~pl.col("c4_long_word") & ~pl.col("c4_no_punct") & ~pl.col("c4_few_words")).alias("c4_reached"),
    ).with_columns(
        (pl.col("c4_reached") & pl.col("c4_lorem")).alias("c4_lorem_hit"),
        (pl.col("c4_reached") & ~pl.col("c4_lorem") & pl.col("c4_js")).alias("c4_js_hit"),
        (pl.col("c4_reached") & ~pl.col("c4_lorem") & ~pl.col("c4_js") & pl.col("c4_curly")).alias("c4_curly_hit"),
    ).with_columns(
        (pl.col("c4_reached") & ~pl.col("c4_lorem") & ~pl.col("c4_js") & ~pl.col("c4_curly")
         & pl.col("c4_policy")).alias("c4_policy_hit"),
        (pl.col("c4_reached") & ~pl.col("c4_lorem") & ~pl.col("c4_js") & ~pl.col("c4_curly")
         & ~pl.col("c4_policy")).alias("c4_kept"),
    ).with_columns(
        # Gopher repetition splits on runs of newlines: empty pieces survive only at the very start or end.
        ((pl.col("line") != "") | (pl.col("i") == 0) | pl.col("is_last")).alias("in_gopher_lines"),
        (pl.col("stripped") != "").alias("non_empty"),
    )
    gopher_lines = features.filter("in_gopher_lines").select(
        "row", "chars", (~pl.struct("row", "line").is_first_distinct()).alias("repeat")
    )
    fw_lines = features.filter("non_empty").select(
        "row", "chars", (~pl.struct("row", "line").is_first_distinct()).alias("repeat")
    )
    per_doc = features.group_by("row").agg(
        pl.col("in_splitlines").sum().alias("n_lines"),
        (pl.col("bullet") & pl.col("in_splitlines")).sum().alias("bullet_lines"),
        (pl.col("ellipsis_end") & pl.col("in_splitlines")).sum().alias("ellipsis_lines"),
        (pl.col("stripped") != "").sum().alias("n_non_blank"),
        pl.col("fw_punct").sum().alias("fw_punct"),
        pl.col("fw_short").sum().alias("fw_short"),
        (pl.col("in_splitlines") & pl.col("c4_no_punct") & ~pl.col("c4_long_word")).sum().alias("c4_no_punct"),
        (pl.col("in_splitlines") & pl.col("c4_few_words") & ~pl.col("c4_long_word") & ~pl.col("c4_no_punct"))
        .sum().alias("c4_few_words"),
        (pl.col("in_splitlines") & pl.col("c4_js_hit")).sum().alias("c4_javascript_line_count"),
        (pl.col("in_splitlines") & pl.col("c4_policy_hit")).sum().alias("c4_policy_line_count"),
        (pl.col("in_splitlines") & ~pl.col("c4_kept") & ~pl.col("c4_lorem_hit") & ~pl.col("c4_curly_hit"))
        .sum().alias("c4_removed"),
        (pl.col("in_splitlines") & pl.col("c4_lorem_hit")).any().cast(pl.Int64).alias("c4_lorem_ipsum"),
        (pl.col("in_splitlines") & pl.col("c4_curly_hit")).any().cast(pl.Int64).alias("c4_curly_bracket"),
    )
    n_docs = len(texts)
    g_rows = gopher_lines["row"].to_numpy().astype(np.int64)
    g_rep = gopher_lines["repeat"].to_numpy()
    f_rows = fw_lines["row"].to_numpy().astype(np.int64)
    f_rep = fw_lines["repeat"].to_numpy()
    repetition = pl.DataFrame({
        "row": np.arange(n_docs, dtype=np.uint32),
        "g_lines": _per_row_sum(g_rows, None, n_docs),
        "g_dup_lines": _per_row_sum(g_rows[g_rep], None, n_docs),
        "g_dup_chars": _per_row_sum(g_rows[g_rep], gopher_lines["chars"].to_numpy()[g_rep], n_docs),
        "f_dup_chars": _per_row_sum(f_rows[f_rep], fw_lines["chars"].to_numpy()[f_rep], n_docs),
    })
    # C4 counts sentences on the lines it keeps, after removing citations: lines with a citation are
    # tokenized again without it (rare); the others use the sentences counted with the document's tokens.
    kept = features.with_columns(pl.Series("sentences", line_sentences)).filter(
        pl.col("in_splitlines") & pl.col("c4_kept")
    )
    cited = kept.filter(pl.col("c4_line") != pl.col("stripped"))
    if not cited.is_empty():
        cited_tokens = (
            cited.with_row_index("line_id")
            .select("line_id", "row", _tokens_expr(pl.col("c4_line")).alias("tok"))
            .explode("tok")
            .drop_nulls("tok")
            .select(
                "line_id",
                pl.col("tok").str.contains(_SENTENCE_TERMINATOR_TOKEN_RE).alias("terminator"),
                (~pl.col("tok").str.contains(_PUNCT_TOKEN_RE)).alias("not_punct"),
            )
        )
        recounted = pl.DataFrame({"sentences": _line_sentences(cited_tokens, cited.height)})
        kept = pl.concat([
            kept.filter(pl.col("c4_line") == pl.col("stripped")).select("row", "sentences"),
            pl.concat([cited.select("row"), recounted], how="horizontal"),
        ])
    rows = kept["row"].to_numpy().astype(np.int64)
    sentences = pl.DataFrame({
        "row": np.arange(n_docs, dtype=np.uint32),
        "c4_sentence_count": _per_row_sum(rows, kept["sentences"].to_numpy(), n_docs).astype(np.int64),
    })
    per_doc = per_doc.join(sentences, on="row", how="left")
    return repetition.join(per_doc, on="row", how="left", maintain_order="left")


def _line_sentences(tokens: pl.DataFrame, n_lines: int) -> np.ndarray:
    """Sentences per line, as DataTrove's English ``split_into_sentences`` counts them: 1, plus 1 for every
    non-punctuation token with a terminator token ('.', '!', '?', ...) since the previous non-punctuation token
    of its line. ``tokens`` has ``line_id`` (0..n_lines-1, ascending), ``terminator`` and ``not_punct``."""
    counts = np.ones(n_lines, dtype=np.int64)
    if tokens.is_empty():
        return counts
    line = tokens["line_id"].to_numpy().astype(np.int64)
    terminator = tokens["terminator"].to_numpy()
    terminators_so_far = np.cumsum(terminator)
    words = np.flatnonzero(tokens["not_punct"].to_numpy())
    if len(words) == 0:
        return counts
    # Terminators up to each word token, and up to the previous word token of its line (or its line start).
    at_word = terminators_so_far[words]
    line_start = np.flatnonzero(np.r_[True, line[1:] != line[:-1]])
    before_line = terminators_so_far[line_start] - terminator[line_start]
    previous = np.r_[0, at_word[:-1]]
    word_line = line[words]
    opens_line = np.r_[True, word_line[1:] != word_line[:-1]]
    previous[opens_line] = before_line[np.searchsorted(line_start, words[opens_line], side="right") - 1]
    return counts + np.bincount(word_line[at_word > previous], minlength=n_lines)


def _escape(literal: str) -> str:
    """Escape regex meta characters only (the Rust regex engine rejects escapes of ordinary characters)."""
    return "".join("\\" + ch if ch in _REGEX_META else ch for ch in literal)


def _paragraph_signals(texts: pl.Series) -> pl.DataFrame:
    """Gopher repetition paragraphs: the stripped text split on runs of two or more newlines."""
    paragraphs = (
        pl.DataFrame({"t": texts})
        .with_row_index("row")
        .select(
            "row",
            pl.col("t").str.strip_chars().str.replace_all(r"\n{2,}", "\n\n").str.split("\n\n").alias("para"),
        )
        .explode("para")
        .select("row", pl.col("para").str.len_chars().alias("chars"),
                (~pl.struct("row", "para").is_first_distinct()).alias("repeat"))
    )
    n_docs = len(texts)
    rows = paragraphs["row"].to_numpy().astype(np.int64)
    rep = paragraphs["repeat"].to_numpy()
    return pl.DataFrame({
        "n_paras": _per_row_sum(rows, None, n_docs),
        "dup_paras": _per_row_sum(rows[rep], None, n_docs),
        "dup_para_chars": _per_row_sum(rows[rep], paragraphs["chars"].to_numpy()[rep], n_docs),
    })


def _batches(text_chars: np.ndarray, budget: int = _BATCH_CHARS) -> list[tuple[int, int]]:
    """Split rows into consecutive ranges of about ``budget`` characters (at least one row each)."""
    bounds, start, size = [], 0, 0
    for i, chars in enumerate(text_chars.tolist()):
        if size and size + chars > budget:
            bounds.append((start, i))
            start, size = i, 0
        size += chars
    bounds.append((start, len(text_chars)))
    return bounds


def _prose_signals(docs: pl.DataFrame, cfg: SignalsConfig) -> pl.DataFrame:
    """All prose signals for ``docs`` (one row per document, same order)."""
    texts = docs["text"].fill_null("")
    scalar = pl.DataFrame({"t": texts}).select(
        pl.col("t").str.len_chars().cast(pl.Int64).alias("text_chars"),
        pl.col("t").str.count_matches("#", literal=True).alias("hashes"),
        (pl.col("t").str.count_matches("...", literal=True) + pl.col("t").str.count_matches("…", literal=True))
        .alias("ellipses"),
        pl.col("t").str.count_matches("\n", literal=True).alias("newlines"),
    )
    text_chars = scalar["text_chars"].to_numpy()
    parts = [_token_signals(texts[a:b], text_chars[a:b], cfg) for a, b in _batches(text_chars)]
    tokens = pl.concat([pl.DataFrame(signals) for signals, _ in parts]).fill_nan(None)
    lines = _line_signals(texts, cfg, np.concatenate([sentences for _, sentences in parts]))
    paras = _paragraph_signals(texts)
    both = pl.concat([scalar, tokens, lines, paras], how="horizontal")
    chars = pl.col("text_chars")
    tokens_all = pl.col("word_and_symbol_count")
    signals = both.select(
        "text_chars",
        "word_count",
        "word_and_symbol_count",
        "mean_word_length",
        _ratio(pl.col("hashes"), tokens_all).alias("hash_to_word_ratio"),
        _ratio(pl.col("ellipses"), tokens_all).alias("ellipsis_to_word_ratio"),
        _ratio(pl.col("bullet_lines"), pl.col("n_lines")).alias("bullet_line_frac"),
        _ratio(pl.col("ellipsis_lines"), pl.col("n_lines")).alias("ellipsis_line_frac"),
        "alpha_word_frac",
        "stop_word_count",
        "distinct_stop_words",
        _ratio(pl.col("dup_paras"), pl.col("n_paras")).alias("dup_para_frac"),
        _ratio(pl.col("dup_para_chars"), chars).alias("dup_para_char_frac"),
        _ratio(pl.col("g_dup_lines"), pl.col("g_lines")).alias("dup_line_frac"),
        _ratio(pl.col("g_dup_chars"), chars).alias("dup_line_char_frac"),
        *[pl.col(f"top_{n}gram_char_frac") for n in cfg.top_ngram_sizes],
        *[pl.col(f"dup_{n}gram_char_frac") for n in cfg.dup_ngram_sizes],
        _ratio(pl.col("c4_no_punct"), pl.col("n_lines")).alias("c4_no_terminal_punct_line_frac"),
        _ratio(pl.col("c4_few_words"), pl.col("n_lines")).alias("c4_too_few_words_line_frac"),
        "c4_javascript_line_count",
        "c4_policy_line_count",
        _ratio(pl.col("c4_removed"), pl.col("n_lines")).alias("c4_removed_line_frac"),
        "c4_lorem_ipsum",
        "c4_curly_bracket",
        "c4_sentence_count",
        _ratio(pl.col("fw_punct"), pl.col("n_non_blank")).alias("line_punct_ratio"),
        _ratio(pl.col("fw_short"), pl.col("n_non_blank")).alias("short_line_ratio"),
        _ratio(pl.col("f_dup_chars"), chars - pl.col("newlines")).alias("char_dup_ratio"),
        _ratio(pl.col("newlines"), tokens_all).alias("newline_to_word_ratio"),
    )
    return signals


def _code_signals(docs: pl.DataFrame, cfg: SignalsConfig) -> pl.DataFrame:
    """Codex/StarCoder-style file signals: line lengths, alphanumeric share, generated and data-like files."""
    text = pl.col("text").fill_null("")
    # splitlines() semantics: a final newline does not open an empty last line.
    lines = text.str.strip_suffix("\n").str.split("\n")
    header = lines.list.head(cfg.code_header_lines).list.join("\n").str.to_lowercase()
    markers = "|".join(_escape(m.lower()) for m in cfg.code_autogenerated_markers) or "$^"
    encoded = (
        text.str.extract_all(_BASE64_RE).list.eval(pl.element().str.len_chars()).list.sum()
        + text.str.extract_all(_HEX_RE).list.eval(pl.element().str.len_chars()).list.sum()
        + text.str.extract_all(_UNICODE_ESCAPE_RE).list.eval(pl.element().str.len_chars()).list.sum()
    )
    chars = text.str.len_chars()
    non_space = chars - text.str.count_matches(r"\s")
    numeric_frac = _ratio(text.str.count_matches(r"[0-9.,]"), non_space)
    encoded_frac = _ratio(encoded, chars)
    n_lines = pl.when(chars > 0).then(lines.list.len()).otherwise(0)
    body_chars = text.str.strip_suffix("\n").str.len_chars()
    return docs.select(
        pl.when(chars > 0).then(lines.list.eval(pl.element().str.len_chars()).list.max()).cast(pl.Int64)
        .alias("code_max_line_length"),
        # Characters on lines = characters without the final newline minus the newlines between lines.
        _ratio(body_chars - (n_lines - 1), n_lines).alias("code_mean_line_length"),
        _ratio(text.str.count_matches(r"[\p{L}\p{N}]"), chars).alias("code_alnum_frac"),
        header.str.contains(markers).cast(pl.Int64).alias("code_autogenerated"),
        encoded_frac.alias("code_encoded_data_frac"),
        numeric_frac.alias("code_numeric_frac"),
        ((encoded > cfg.code_encoded_max_chars) | (encoded_frac > cfg.code_encoded_max_frac)
         | (numeric_frac > cfg.code_numeric_max_frac)).fill_null(False).cast(pl.Int64).alias("code_data_like"),
    )


def _normalize(expr: pl.Expr) -> pl.Expr:
    return expr.str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()


def _chat_signals(docs: pl.DataFrame) -> pl.DataFrame:
    """Chat signals from ``messages`` (list of {role, content}); one row per input row, same order."""
    turns = (
        docs.select(pl.col("drop"), pl.col("messages"))
        .with_row_index("row")
        .explode("messages")
        .select(
            "row", "drop",
            pl.col("messages").struct.field("role").str.to_lowercase().alias("role"),
            pl.col("messages").struct.field("content").fill_null("").alias("content"),
            pl.col("messages").is_null().alias("missing"),
        )
        .with_columns(
            (pl.col("role") == "assistant").fill_null(False).alias("is_assistant"),
            pl.col("content").str.strip_chars().alias("stripped"),
        )
        .with_columns(
            pl.col("is_assistant").cum_sum().over("row").alias("assistants_so_far"),
            (~pl.col("missing") & (pl.col("stripped") == pl.col("stripped").shift(1).over("row")))
            .fill_null(False).alias("repeats_previous"),
        )
    )
    per_doc = turns.group_by("row", maintain_order=True).agg(
        pl.col("content").filter("is_assistant").str.len_chars().min().cast(pl.Int64).alias("chat_response_chars"),
        ((~pl.col("is_assistant").any()) | (pl.col("is_assistant") & (pl.col("stripped") == "")).any())
        .cast(pl.Int64).alias("chat_empty_response"),
        pl.col("repeats_previous").sum().cast(pl.Int64).alias("chat_repeated_turns"),
        # The prompt is the user turns before the first answer; the response is the first answer.
        _normalize(pl.col("content").filter((pl.col("role") == "user") & (pl.col("assistants_so_far") == 0))
                   .str.join("\n")).alias("prompt"),
        pl.col("stripped").filter("is_assistant").first().alias("response"),
        pl.col("drop").first(),
    )
    conflicting = (
        pl.when((pl.col("prompt") != "") & pl.col("response").is_not_null())
        .then((pl.col("response").n_unique().over("drop", "prompt") > 1).cast(pl.Int64))
        .otherwise(0)
    )
    return per_doc.sort("row").select(
        "chat_response_chars", "chat_empty_response", "chat_repeated_turns",
        conflicting.alias("chat_conflicting_response"),
    )


def _signals_for(docs: pl.DataFrame, kinds: list[str], columns: list[str], compute) -> pl.DataFrame:
    """Run ``compute`` on the rows of ``kinds`` and return (_row, columns) for them."""
    subset = docs.filter(pl.col("kind").is_in(kinds))
    if subset.is_empty():
        return pl.DataFrame(schema={"_row": pl.UInt32, **{c: _dtype(c) for c in columns}})
    values = compute(subset.drop("_row"))
    return pl.concat([subset.select("_row"), values.select([pl.col(c).cast(_dtype(c)) for c in columns])],
                     how="horizontal")


def quality_signals(docs: pl.DataFrame, cfg: SignalsConfig | None = None) -> StageResult:
    """Add every quality signal column to ``docs``; drop nothing.

    In: documents with at least ``doc_id``, ``kind``, ``text`` (and ``messages``/``drop`` for chat).
    Out: ``StageResult`` whose ``kept`` has the input columns plus every column in ``SIGNAL_COLUMNS``: prose
    signals are filled for ``cfg.prose_kinds``, code signals for ``cfg.code_kinds``, chat signals for
    ``cfg.chat_kinds``, and null elsewhere (a rule never drops on a null signal). No verdicts.
    """
    cfg = cfg or SignalsConfig()
    # Re-running the stage replaces earlier signal columns instead of duplicating them.
    indexed = docs.drop([c for c in SIGNAL_COLUMNS if c in docs.columns]).with_row_index("_row")
    prose_cols = [c for c in _PROSE_COLUMNS if not (c.startswith(("top_", "dup_")) and "gram" in c)]
    prose_cols += [f"top_{n}gram_char_frac" for n in cfg.top_ngram_sizes]
    prose_cols += [f"dup_{n}gram_char_frac" for n in cfg.dup_ngram_sizes]
    parts = [
        _signals_for(indexed, cfg.prose_kinds, prose_cols, lambda d: _prose_signals(d, cfg)),
        _signals_for(indexed, cfg.code_kinds, _CODE_COLUMNS, lambda d: _code_signals(d, cfg)),
        _signals_for(indexed, cfg.chat_kinds, _CHAT_COLUMNS, _chat_signals),
    ]
    out = indexed
    for part in parts:
        out = out.join(part, on="_row", how="left", maintain_order="left")
    # Every kind keeps its length, not only prose (normalize set it; the prose part recomputes it identically).
    kept = out.drop("_row").with_columns(pl.col("text").str.len_chars().cast(pl.Int64).alias("text_chars"))
    kept = flagged_word_signals(kept, cfg.flagged_words)
    metrics = {
        "documents": docs.height,
        "prose_documents": int(docs["kind"].is_in(cfg.prose_kinds).sum()),
        "code_documents": int(docs["kind"].is_in(cfg.code_kinds).sum()),
        "chat_documents": int(docs["kind"].is_in(cfg.chat_kinds).sum()),
        "signals": len(prose_cols) + len(_CODE_COLUMNS) + len(_CHAT_COLUMNS),
    }
    if docs.height:
        for name in ("word_count", "mean_word_length", "dup_line_frac", "line_punct_ratio"):
            median = kept[name].median()
            metrics[f"median_{name}"] = None if median is None else float(median)
    return StageResult(kept=kept, metrics=metrics)
