"""Flagged (toxic, adult) words: a per-document signal from word lists, and the rule that uses it.

Every configured word list is matched with Aho-Corasick over the whole text column at once (Polars'
``str.extract_many``, the Rust ``aho-corasick`` crate: the same automaton pyahocorasick builds, without a Python
loop per document). Words match whole: text and list entries are lowercased and every run of characters other
than letters, digits and spaces becomes one space, then each entry is looked for as `` entry `` in `` text ``, so
``ass`` does not fire inside ``class`` and multi-word entries (``2 girls 1 cup``) still match (not across a double
space, which normalize has already collapsed).

Columns added (by ``flagged_word_signals``, called at the end of ``quality_signals``; configured as
``signals.flagged_words``):
- ``flagged_word_count``: matches of all applicable lists;
- ``flagged_word_ratio``: that count over the document's word count (the BigScience ROOTS "flagged words ratio");
- ``flagged_word_limit_ratio``: the ratio over the limit for the document's source and language (a value above 1
  breaks the ``flagged_words.max_ratio`` rule in ``filters``);
- ``flagged_words_matched``: the distinct matches as ``list:entry``, so the data card can report removals per list
  and per word.

Word lists are known to remove LGBTQ self-references (LDNOOBW lists "gay sex", "twink", "bulldyke"; Dodge et al.
2021 found such filters drop text by and about LGBTQ people disproportionately). The data card counts removals per
list and entry so that effect can be audited; relax a source's limit with ``per_source`` where it matters.
"""

from __future__ import annotations

import functools
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from curation_platform.workspace import resolve_resource

LDNOOBW_EN = "pkg://curation_platform/resources/wordlists/ldnoobw_en.txt"
RULE_NAME = "flagged_words.max_ratio"
SIGNAL_COLUMNS = ["flagged_word_count", "flagged_word_ratio", "flagged_word_limit_ratio", "flagged_words_matched",
                  "offensive_score"]
CLASSIFIER_RULE = "flagged_words.max_offensive_score"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WordList(_Strict):
    """A word list: one entry per line, ``#`` starts a comment line."""

    name: str  # reported in the ledger and the data card
    path: str  # a file path, or pkg://package/inner/path for a bundled list
    languages: list[str] | None = None  # fastText labels the list applies to; None = every language


class FlaggedWordsConfig(_Strict):
    """Word-list filter. C4 (Raffel et al. 2020) drops a page with any LDNOOBW word; we use a ratio with limits
    per source and language, as BigScience ROOTS (Laurençon et al. 2022) did per language."""

    lists: list[WordList] = Field(
        default_factory=lambda: [WordList(name="ldnoobw_en", path=LDNOOBW_EN, languages=["en"])])
    max_ratio: float = Field(default=0.01, ge=0)  # flagged words per word above which a document is dropped
    per_language: dict[str, float] = Field(default_factory=dict)  # e.g. {en: 0.02}
    per_source: dict[str, float] = Field(default_factory=dict)  # wins over per_language, e.g. {health-forum: 0.05}
    # Second signal: alt-profanity-check's offline linear classifier (TF-IDF + linear SVM trained on ~200k
    # human-labelled offensive and clean comments, shipped in its wheel), applied per line; the document scores its
    # worst line. Off by default; rule `flagged_words.max_offensive_score` (disabled by default) uses it.
    classifier: bool = False


def _normalized(text: pl.Expr) -> pl.Expr:
    """Lowercase, every run of characters other than letters, digits and spaces to one space, padded with spaces
    so entries match whole words. Spaces themselves are left alone: replacing every one is 3x slower."""
    return pl.concat_str([pl.lit(" "), text.str.to_lowercase().str.replace_all(r"[^\p{L}\p{N} ]+", " "), pl.lit(" ")])


@functools.lru_cache(maxsize=16)
def load_word_list(path: str) -> tuple[str, ...]:
    """The list's entries, normalized like the text (``g-spot`` -> ``g spot``), unique, in file order."""
    resolved = resolve_resource(path, "flagged_words: word list")
    try:
        lines = resolved.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        from curation_platform.errors import ConfigError

        raise ConfigError(f"flagged_words: word list {path} cannot be read ({error.strerror or error})") from None
    entries = pl.Series("e", [line for line in lines if line.strip() and not line.lstrip().startswith("#")],
                        dtype=pl.String)
    normalized = pl.DataFrame({"e": entries}).select(
        _normalized(pl.col("e")).str.replace_all(" +", " ").str.strip_chars().alias("e"))["e"]
    return tuple(e for e in normalized.unique(maintain_order=True).to_list() if e)


def offensive_scores(texts: pl.Series) -> pl.Series:
    """Per text, the highest offensive-language probability of its non-blank lines (0 for a text without any),
    from alt-profanity-check's bundled model. All lines of all texts go through the model in one call.

    ``["Have a nice day.", "Nice.\nYou are a f*cking idiot."]`` -> about ``[0.06, 1.0]``.
    """
    from profanity_check import predict_prob

    lines = (pl.DataFrame({"text": texts.fill_null("")}).with_row_index("_doc")
             .select("_doc", pl.col("text").str.split("\n").alias("line")).explode("line")
             .filter(pl.col("line").str.strip_chars() != ""))
    probs = predict_prob(lines["line"].to_list()) if lines.height else []
    worst = (lines.select("_doc", pl.Series("p", probs, dtype=pl.Float64)).group_by("_doc").agg(pl.col("p").max()))
    return (pl.DataFrame({"_doc": pl.int_range(len(texts), eager=True, dtype=pl.UInt32)})
            .join(worst, on="_doc", how="left").sort("_doc")["p"].fill_null(0.0).alias("offensive_score"))


def flagged_word_signals(docs: pl.DataFrame, cfg: FlaggedWordsConfig) -> pl.DataFrame:
    """``docs`` plus the four flagged-word columns (see the module docstring). Needs ``text``; reads ``source``
    and ``language`` when present (null language: only lists without ``languages`` apply) and ``word_count``."""
    # The word count quality_signals computed, where it ran first; otherwise whitespace-separated tokens.
    words = pl.col("word_count") if "word_count" in docs.columns else pl.col("text").str.count_matches(r"\S+")
    # Missing source or language columns (documents straight from tests or other tools) count as null.
    optional = [pl.col(c) if c in docs.columns else pl.lit(None, pl.String).alias(c) for c in ("source", "language")]
    norm = docs.select(_normalized(pl.col("text").fill_null("")).alias("_n"), *optional,
                       words.fill_null(0).cast(pl.Float64).alias("_words"))
    matched: list[pl.Expr] = []
    for wl in cfg.lists:
        entries = load_word_list(wl.path)
        if not entries:
            continue
        found = pl.col("_n").str.extract_many([f" {e} " for e in entries], overlapping=True)
        found = found.list.eval(pl.lit(f"{wl.name}:") + pl.element().str.strip_chars())
        if wl.languages is not None:
            found = pl.when(pl.col("language").is_in(wl.languages)).then(found).otherwise(pl.lit([], pl.List(pl.String)))
        matched.append(found)
    all_matches = pl.concat_list(matched) if matched else pl.lit([], pl.List(pl.String))
    limit = pl.lit(cfg.max_ratio)
    for language, value in sorted(cfg.per_language.items()):
        limit = pl.when(pl.col("language") == language).then(pl.lit(value)).otherwise(limit)
    for source, value in sorted(cfg.per_source.items()):
        limit = pl.when(pl.col("source") == source).then(pl.lit(value)).otherwise(limit)
    signals = norm.select(
        all_matches.alias("_m"),
        "_words",
        limit.cast(pl.Float64).alias("_limit"),
    ).select(
        pl.col("_m").list.len().cast(pl.Int64).alias("flagged_word_count"),
        (pl.col("_m").list.len() / pl.col("_words").clip(lower_bound=1)).alias("flagged_word_ratio"),
        "_limit",
        pl.col("_m").list.unique().list.sort().alias("flagged_words_matched"),
    ).with_columns(
        # A limit of 0 means "no flagged word at all" (C4's rule): any match breaks it.
        pl.when(pl.col("_limit") > 0).then(pl.col("flagged_word_ratio") / pl.col("_limit"))
        .when(pl.col("flagged_word_count") > 0).then(pl.lit(float("inf")))
        .otherwise(pl.lit(0.0)).alias("flagged_word_limit_ratio")
    ).with_columns(
        # Null (a missing signal, which no rule acts on) unless the classifier is switched on.
        offensive_scores(docs["text"]) if cfg.classifier else pl.lit(None, pl.Float64).alias("offensive_score")
    ).select(SIGNAL_COLUMNS)
    return pl.concat([docs.drop(SIGNAL_COLUMNS, strict=False), signals], how="horizontal")


def flagged_word_removals(dropped: pl.DataFrame) -> dict[str, Any]:
    """Removals per list and per entry for the data card. ``dropped``: the ``flagged_words_matched`` column of
    the documents the ``flagged_words.max_ratio`` rule removed. Out: ``{"documents": n, "per_list": {list: n},
    "per_entry": {list:entry: n}}`` (a document counts once per list and once per entry it matched)."""
    if dropped.is_empty():
        return {"documents": 0, "per_list": {}, "per_entry": {}}
    entries = dropped.select(pl.int_range(pl.len()).alias("d"), "flagged_words_matched").explode(
        "flagged_words_matched").drop_nulls()
    entries = entries.with_columns(pl.col("flagged_words_matched").str.split_exact(":", 1).struct.field("field_0")
                                   .alias("list"))
    per_list = entries.group_by("list").agg(pl.col("d").n_unique()).sort("list")
    per_entry = entries.group_by("flagged_words_matched").agg(pl.col("d").n_unique()).sort(
        ["d", "flagged_words_matched"], descending=[True, False])
    return {
        "documents": dropped.height,
        "per_list": {k: int(v) for k, v in per_list.iter_rows()},
        "per_entry": {k: int(v) for k, v in per_entry.iter_rows()},
    }


def card_removals(ws: Any, drops: list[str]) -> dict[str, Any]:
    """Flagged-word removals across ``drops``: the documents the ``filtered`` ledger dropped under the rule,
    with their matches read from the stored ``quality_signals`` output."""
    frames = []
    for drop in drops:
        ledger = ws.ledger_path("filtered", drop)
        if not (ledger.exists() and ws.has_stage("quality_signals", drop)):
            continue
        signals = ws.scan_stage("quality_signals", drop)
        if "flagged_words_matched" not in signals.collect_schema():
            continue
        ids = pl.read_parquet(ledger, columns=["doc_id", "rule", "verdict"]).filter(
            (pl.col("rule") == RULE_NAME) & (pl.col("verdict") == "drop")).select("doc_id")
        frames.append(signals.select("doc_id", "flagged_words_matched").collect()
                      .join(ids, on="doc_id", how="semi"))
    dropped = pl.concat(frames) if frames else pl.DataFrame(schema={"flagged_words_matched": pl.List(pl.String)})
    return flagged_word_removals(dropped.select("flagged_words_matched"))


def card_markdown(removals: dict[str, Any], top: int = 20) -> list[str]:
    """Data-card lines: documents removed per word list and the most frequent matched entries."""
    if not removals or not removals.get("documents"):
        return []
    lines = ["", "## Flagged-word removals", "",
             "Word lists remove LGBTQ self-references among other things: audit the entries below.", "",
             "| word list | documents removed |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in removals["per_list"].items()]
    lines += ["", "| entry | documents removed |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in list(removals["per_entry"].items())[:top]]
    return lines
