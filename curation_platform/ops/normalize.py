"""Normalization stage: Unicode repair, HTML to text, control characters and whitespace.

Prose (web, text, synthetic, chat message contents) gets the full treatment: HTML pages become their main
content (trafilatura), mojibake is repaired (ftfy, only on documents a vectorized check flags), text is put in
NFC, control and invisible characters go, and whitespace is tidied. Code keeps its exact whitespace: only line
endings become LF and control characters go. Documents with no text left are dropped with
``normalize.empty_after_normalization``.
"""

from __future__ import annotations

import html
from typing import Any, Literal

import ftfy
import numpy as np
import polars as pl
import trafilatura
from ftfy.badness import BADNESS_RE
from pydantic import BaseModel, ConfigDict, Field
from trafilatura.deduplication import LRUCache

from curation_platform.records import DROP, StageResult, split_by_verdicts

EMPTY_RULE = "normalize.empty_after_normalization"


class NormalizeConfig(BaseModel):
    """Normalization settings. Defaults follow DataTrove's FTFYFormatter and Trafilatura extractor (FineWeb)."""

    model_config = ConfigDict(extra="forbid")

    # Repair mojibake with ftfy, DataTrove FTFYFormatter settings (FineWeb, Penedo et al. 2024): encodings only.
    fix_unicode: bool = True
    # NFC: the Unicode normalization form recommended for interchange (Unicode UAX #15, W3C charmod-norm).
    unicode_form: Literal["NFC", "NFKC"] | None = "NFC"
    # Main-content extraction for format == "html" (DataTrove Trafilatura extractor: favour_precision=True).
    html_to_text: bool = True
    html_favor_precision: bool = True
    # Drop paragraphs repeated inside one page (DataTrove sets deduplicate=True; we keep the cache per page).
    html_deduplicate: bool = True
    # Remove zero-width and invisible format characters (ZWSP, word joiner, soft hyphen, BOM).
    remove_zero_width: bool = True
    # Collapse runs of horizontal whitespace to one space and strip spaces at line ends (prose only).
    collapse_spaces: bool = True
    # Longest run of blank lines kept in prose (NeMo Curator NewlineNormalizer: 3+ newlines become 2).
    max_blank_lines: int = Field(default=1, ge=0)


# DataTrove's FTFYFormatter configuration: fix broken encodings, never enforce a formatting style.
_FTFY_CONFIG = ftfy.TextFixerConfig(
    unescape_html="auto",
    remove_terminal_escapes=True,
    fix_encoding=True,
    restore_byte_a0=True,
    replace_lossy_sequences=True,
    decode_inconsistent_utf8=True,
    fix_c1_controls=True,
    fix_latin_ligatures=False,
    fix_character_width=False,
    uncurl_quotes=False,
    fix_line_breaks=False,
    fix_surrogates=True,
    remove_control_chars=True,
    normalization=None,
    explain=False,
)


def _rust_regex_from_verbose(pattern: str) -> str:
    r"""Rewrite a Python ``re.VERBOSE`` pattern for the Rust regex engine Polars uses.

    Verbose mode differs: Python keeps spaces inside ``[...]`` while Rust drops them, so whitespace and comments
    are removed here by hand and spaces inside classes escaped. ``\s`` also matches U+001C..U+001F in Python, and
    ``\w`` becomes ``.`` (a superset), so the Rust pattern matches whenever the Python one does.
    """
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            escape = pattern[i : i + 2]
            if not in_class and escape == r"\s":
                out.append(r"[\s\x1C-\x1F]")
            elif not in_class and escape == r"\w":
                out.append(".")
            else:
                out.append(escape)
            i += 2
            continue
        if in_class:
            out.append(r"\x20" if char == " " else char)
            in_class = char != "]"
        elif char == "#":
            end = pattern.find("\n", i)
            i = len(pattern) if end < 0 else end
            continue
        elif not char.isspace():
            out.append(char)
            in_class = char == "["
        i += 1
    return "".join(out)


# A document needs ftfy only if some ftfy step could change it: a mojibake pattern (ftfy's own badness regex,
# applied per line by ftfy, so ``^`` becomes multi-line here), a control or C1 character, or an HTML entity.
# Anything else passes through ftfy unchanged, so skipping it saves the per-document Python call.
_FTFY_CONTROL_CHARS = r"[\x00-\x08\x0B\x0E-\x1F\x7F-\x9F\x{206A}-\x{206F}\x{FEFF}\x{FFF9}-\x{FFFC}]"
_FTFY_ENTITY = r"&#?[0-9A-Za-z]{1,24};"
FTFY_CANDIDATE_PATTERN = (
    f"(?m)(?:{_rust_regex_from_verbose(BADNESS_RE.pattern)})|{_FTFY_CONTROL_CHARS}|{_FTFY_ENTITY}"
)

# Line breaks: CRLF and lone CR everywhere; vertical tab, form feed and Unicode line/paragraph separators in prose.
_CODE_LINE_BREAKS = r"\r\n?"
_PROSE_LINE_BREAKS = r"\r\n?|[\x0B\x0C\x{2028}\x{2029}]"
# Control characters: C0 except tab/newline, DEL, C1, BOM. Code keeps form feed (page breaks in GNU sources).
_CODE_CONTROL_CHARS = r"[\x00-\x08\x0B\x0E-\x1F\x7F-\x9F\x{FEFF}]"
_PROSE_CONTROL_CHARS = _FTFY_CONTROL_CHARS
# Invisible characters with no meaning in plain text. ZWJ and ZWNJ stay: emoji sequences, Persian and Indic
# scripts need them.
_ZERO_WIDTH_CHARS = r"[\x{200B}\x{2060}\x{180E}\x{00AD}\x{FEFF}]"
# Horizontal whitespace other than the plain space. The ideographic space U+3000 stays (CJK typography).
_OTHER_SPACES = r"\t\x{00A0}\x{1680}\x{2000}-\x{200A}\x{202F}\x{205F}"
_SPACE_RUNS = f"[ {_OTHER_SPACES}]{{2,}}|[{_OTHER_SPACES}]"
_LINE_EDGE_SPACES = r"(?m)^ +| +$"

# Plain tag stripping, the fallback when trafilatura finds no main content.
_HIDDEN_ELEMENTS = ("script", "style", "noscript", "template", "svg", "head")
_BLOCK_TAGS = (
    r"(?i)</?(?:p|div|br|hr|li|ul|ol|dl|dt|dd|h[1-6]|tr|table|thead|tbody|section|article|header|footer|nav|"
    r"main|aside|blockquote|pre|form|figure|figcaption|title|address)\b[^>]*>"
)


def _replace(series: pl.Series, pattern: str, value: str) -> pl.Series:
    return series.str.replace_all(pattern, value)


def _repair_unicode(texts: pl.Series) -> tuple[pl.Series, int, int]:
    """ftfy on the texts the vectorized check flags; returns (texts, candidates, changed)."""
    candidate = texts.str.contains(FTFY_CANDIDATE_PATTERN).fill_null(False)
    positions = np.flatnonzero(candidate.to_numpy())
    if len(positions) == 0:
        return texts, 0, 0
    before = texts.gather(positions)
    # ftfy is pure Python with no column form; this per-document call is limited to flagged texts.
    after = pl.Series(
        texts.name, [None if t is None else ftfy.fix_text(t, _FTFY_CONFIG) for t in before], dtype=pl.String
    )
    changed = int((before != after).fill_null(False).sum())
    return texts.scatter(positions, after), len(positions), changed


def _normalize_prose(texts: pl.Series, cfg: NormalizeConfig, stats: dict[str, int]) -> pl.Series:
    """Full normalization for natural-language text; counts ftfy work into ``stats``."""
    texts = _replace(texts, _PROSE_LINE_BREAKS, "\n")
    if cfg.fix_unicode:
        texts, candidates, changed = _repair_unicode(texts)
        stats["ftfy_checked"] += len(texts)
        stats["ftfy_candidates"] += candidates
        stats["ftfy_changed"] += changed
    if cfg.unicode_form is not None:
        texts = texts.str.normalize(cfg.unicode_form)
    texts = _replace(texts, _PROSE_CONTROL_CHARS, "")
    if cfg.remove_zero_width:
        texts = _replace(texts, _ZERO_WIDTH_CHARS, "")
    if cfg.collapse_spaces:
        texts = _replace(texts, _SPACE_RUNS, " ")
        texts = _replace(texts, _LINE_EDGE_SPACES, "")
    texts = _replace(texts, "\n{%d,}" % (cfg.max_blank_lines + 2), "\n" * (cfg.max_blank_lines + 1))
    return texts.str.strip_chars()


def _normalize_code(texts: pl.Series) -> pl.Series:
    """Code keeps its exact whitespace: LF line endings and no control characters, nothing else."""
    return _replace(_replace(texts, _CODE_LINE_BREAKS, "\n"), _CODE_CONTROL_CHARS, "")


def _strip_tags(pages: pl.Series) -> pl.Series:
    """Plain tag stripping: hidden elements and comments removed, block tags become line breaks."""
    for tag in _HIDDEN_ELEMENTS:
        pages = _replace(pages, rf"(?is)<{tag}\b.*?</{tag}\s*>", "")
    pages = _replace(pages, r"(?s)<!--.*?-->", "")
    # Source line breaks are plain spaces in HTML; only block elements break lines, and never more than once.
    pages = _replace(pages, r"\s+", " ")
    pages = _replace(pages, _BLOCK_TAGS, "\n")
    pages = _replace(pages, r"(?i)</?t[dh]\b[^>]*>", " ")
    pages = _replace(pages, r"<[^>]*>", "")
    pages = _replace(pages, r"\s*\n\s*", "\n")
    # Entities have no column form; this runs only on the fallback pages.
    return pages.map_elements(html.unescape, return_dtype=pl.String)


def _html_to_text(pages: pl.Series, cfg: NormalizeConfig) -> tuple[pl.Series, int]:
    """Main content of each page via trafilatura, falling back to tag stripping; returns (texts, fallbacks)."""
    # trafilatura parses one page at a time (lxml under the hood); there is no batch API.
    extracted = pl.Series(
        pages.name,
        [
            trafilatura.extract(
                page,
                favor_precision=cfg.html_favor_precision,
                include_comments=False,
                # A fresh cache per page: trafilatura's shared default would make a page's output depend on
                # the pages processed before it in this process.
                deduplicate=LRUCache() if cfg.html_deduplicate else False,
                output_format="txt",
            )
            or None
            for page in pages
        ],
        dtype=pl.String,
    )
    missing = np.flatnonzero(extracted.is_null().to_numpy())
    if len(missing):
        extracted = extracted.scatter(missing, _strip_tags(pages.gather(missing)))
    return extracted, len(missing)


def render_chat(messages: pl.Expr) -> pl.Expr:
    """Chat transcript as text: one ``role: content`` block per message, blank line between messages."""
    return messages.list.eval(
        pl.format("{}: {}", pl.element().struct.field("role"), pl.element().struct.field("content").fill_null(""))
    ).list.join("\n\n")


def _normalize_messages(
    messages: pl.Series, rows: np.ndarray, cfg: NormalizeConfig, stats: dict[str, int]
) -> pl.DataFrame:
    """Normalize every message's content of the conversations at ``rows``.

    Returns one row per conversation: ``_row`` (its position in the input), ``_messages`` (normalized) and
    ``_content_chars`` (total content characters, to tell an empty conversation).
    """
    flat = (
        pl.DataFrame({"_row": pl.Series(rows, dtype=pl.UInt32), "_messages": messages.gather(rows)})
        .explode("_messages")
        .unnest("_messages")
    )
    content = flat["content"]
    present = np.flatnonzero(content.is_not_null().to_numpy())
    content = content.scatter(present, _normalize_prose(content.gather(present), cfg, stats))
    return (
        flat.with_columns(content)
        .group_by("_row", maintain_order=True)
        .agg(
            pl.struct("role", "content").cast(messages.dtype.inner).alias("_messages"),
            pl.col("content").str.len_chars().sum().cast(pl.Int64).alias("_content_chars"),
        )
    )


def normalize(docs: pl.DataFrame, cfg: NormalizeConfig) -> StageResult:
    """Normalize the ``text`` (and chat ``messages``) of every document.

    In: documents with the RECORD_SCHEMA columns. Out: ``kept`` with normalized ``text`` (and ``messages`` for
    chat) plus ``text_chars``; a ``normalize.empty_after_normalization`` drop verdict for each document with no
    text left; metrics counting ftfy and HTML work and characters in and out.
    """
    stats = {"ftfy_checked": 0, "ftfy_candidates": 0, "ftfy_changed": 0}
    original = docs["text"]
    texts = original.fill_null("")
    kind = docs["kind"].fill_null("")
    is_code = (kind == "code").to_numpy()
    # A chat document without messages is normalized as plain text.
    is_chat = ((kind == "chat") & (docs["messages"].list.len().fill_null(0) > 0)).to_numpy()
    is_prose = ~is_code & ~is_chat
    is_html = is_prose & (docs["format"].fill_null("") == "html").to_numpy() & cfg.html_to_text

    html_rows = np.flatnonzero(is_html)
    html_fallbacks = 0
    if len(html_rows):
        extracted, html_fallbacks = _html_to_text(texts.gather(html_rows), cfg)
        texts = texts.scatter(html_rows, extracted)

    code_rows, prose_rows, chat_rows = np.flatnonzero(is_code), np.flatnonzero(is_prose), np.flatnonzero(is_chat)
    if len(code_rows):
        texts = texts.scatter(code_rows, _normalize_code(texts.gather(code_rows)))
    if len(prose_rows):
        texts = texts.scatter(prose_rows, _normalize_prose(texts.gather(prose_rows), cfg, stats))

    out = docs.with_columns(
        texts.alias("text"),
        pl.Series("_is_code", is_code),
        pl.Series("_is_chat", is_chat),
        original.str.len_chars().fill_null(0).alias("_chars_before"),
    )
    if len(chat_rows):
        chats = _normalize_messages(docs["messages"], chat_rows, cfg, stats)
        out = (
            out.with_row_index("_row")
            .join(chats, on="_row", how="left", maintain_order="left")
            .with_columns(pl.coalesce("_messages", "messages").alias("messages"))
            .drop("_row", "_messages")
        )
    else:
        out = out.with_columns(pl.lit(None, dtype=pl.Int64).alias("_content_chars"))
    out = out.with_columns(
        pl.when("_is_chat").then(render_chat(pl.col("messages"))).otherwise("text").alias("text")
    ).with_columns(pl.col("text").str.len_chars().cast(pl.Int64).alias("text_chars"))

    # Code whitespace is content, but whitespace alone is not a document; chat counts its message contents.
    visible_chars = (
        pl.when("_is_code")
        .then(pl.col("text").str.strip_chars().str.len_chars().cast(pl.Int64))
        .when("_is_chat")
        .then("_content_chars")
        .otherwise("text_chars")
    )
    verdicts = out.filter(visible_chars == 0).select(
        "doc_id",
        pl.lit(DROP).alias("verdict"),
        pl.lit(EMPTY_RULE).alias("rule"),
        pl.lit(0.0).alias("value"),
        pl.lit("<= 0").alias("threshold"),
        pl.format("no text left after normalization ({} characters before)", "_chars_before").alias("detail"),
    )
    out = out.drop("_is_code", "_is_chat", "_content_chars", "_chars_before")
    metrics = _metrics(docs, out, verdicts, stats, len(html_rows), html_fallbacks)
    return split_by_verdicts(out, verdicts, metrics)


def _metrics(
    docs: pl.DataFrame,
    out: pl.DataFrame,
    verdicts: pl.DataFrame,
    stats: dict[str, int],
    html_docs: int,
    html_fallbacks: int,
) -> dict[str, Any]:
    dropped = int(verdicts.height)
    return {
        "docs_in": int(docs.height),
        "docs_out": int(docs.height) - dropped,
        "dropped_per_rule": {EMPTY_RULE: dropped} if dropped else {},
        "docs_changed": int((docs["text"] != out["text"]).fill_null(True).sum()),
        "chars_in": int(docs["text"].str.len_chars().fill_null(0).sum()),
        "chars_out": int(out["text_chars"].sum()),
        "ftfy_candidates": stats["ftfy_candidates"],
        "ftfy_changed": stats["ftfy_changed"],
        # Texts (documents or chat messages) checked for mojibake, and those spared the per-document ftfy call.
        "ftfy_checked": stats["ftfy_checked"],
        "ftfy_skipped": stats["ftfy_checked"] - stats["ftfy_candidates"],
        "html_docs": html_docs,
        "html_trafilatura": html_docs - html_fallbacks,
        "html_tag_strip": html_fallbacks,
    }
