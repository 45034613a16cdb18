"""URL filtering: drop documents whose URL is on a domain or URL blocklist, or whose URL holds banned words.

The checks follow FineWeb's URL filter (DataTrove ``URLFilter``), in its order: the host or any parent domain
on a domain list (the UT1 adult and malicious lists DataTrove's wheel bundles, plus any list named in
``curation.yaml``), the URL on a URL list, a banned word among the URL's words, at least ``soft_word_threshold``
soft-banned words, a banned sub-word inside the URL with punctuation removed. All matching is in bulk: hash joins
of (document, candidate) rows against the lists, and one Aho-Corasick pass (Polars ``str.extract_many``) for
sub-words. Every drop names the list and the matched entry in the ledger. Documents without a URL are kept, and
a per-source allow-list keeps listed domains whatever the lists say.

Deviations from DataTrove: parent domains are matched by every suffix of the host (``a.b.example.com`` checks
``b.example.com`` and ``example.com``) instead of tldextract's registered domain, and URL words are lowercased
before the banned-word join (DataTrove compares them case-sensitively against lowercase lists).
"""

from __future__ import annotations

import functools
import io
import tarfile
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from curation_platform.errors import ConfigError
from curation_platform.records import DROP, StageResult, split_by_verdicts
from curation_platform.workspace import resolve_resource

ListKind = Literal["domain", "url", "word", "soft_word", "subword"]
_DATATROVE_ASSETS = "pkg://datatrove/assets/"
_UT1 = _DATATROVE_ASSETS + "url_filterblacklistsv0_3_0.tar.gz"
# Longest host we expand into parent domains; deeper hosts are still matched on their last labels.
_MAX_LABELS = 12


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BlockList(_Strict):
    """A list file: one entry per line, ``#`` comments. ``path`` is a file path, ``pkg://package/inner`` for a
    file inside an installed package, and ``...tar.gz#member`` for a member of a tar archive."""

    name: str
    kind: ListKind
    path: str


def _default_lists() -> list[BlockList]:
    # FineWeb's defaults (Penedo et al. 2024): the UT1 lists and DataTrove's banned word files.
    return [
        BlockList(name="ut1_domains", kind="domain", path=_UT1 + "#domains"),
        BlockList(name="ut1_urls", kind="url", path=_UT1 + "#urls"),
        BlockList(name="fineweb_banned_words", kind="word", path=_DATATROVE_ASSETS + "banned_words.txt"),
        BlockList(name="fineweb_soft_banned_words", kind="soft_word", path=_DATATROVE_ASSETS + "soft_banned_words.txt"),
        BlockList(name="fineweb_banned_subwords", kind="subword", path=_DATATROVE_ASSETS + "banned_subwords.txt"),
    ]


class UrlFilterConfig(_Strict):
    """The ``url`` stage: blocklists, the soft-word threshold and per-source allow-lists."""

    enabled: bool = True
    lists: list[BlockList] = Field(default_factory=_default_lists)
    soft_word_threshold: int = Field(default=2, ge=1)  # FineWeb / DataTrove URLFilter default
    # Domains (and their subdomains) always kept for a source, e.g. {medical-wiki: [nhs.uk]}.
    allow: dict[str, list[str]] = Field(default_factory=dict)


def _open_bytes(path: str) -> bytes:
    location, _, member = path.partition("#")
    resolved = resolve_resource(location, f"url_filter: list {path}")
    try:
        if not member:
            return resolved.read_bytes()
        with tarfile.open(resolved, "r:*") as archive:
            handle = archive.extractfile(member)
            if handle is None:
                raise KeyError(member)
            return handle.read()
    except (OSError, KeyError, tarfile.TarError) as error:
        raise ConfigError(f"url_filter: list {path} cannot be read ({error}); fix the path in curation.yaml") from None


@functools.lru_cache(maxsize=16)
def load_list(path: str, kind: ListKind) -> pl.DataFrame:
    """The list's entries as a one-column frame ``entry``, normalized for its kind. Cached per process (the UT1
    domain list has 4.5 million entries and takes about 6 s to load)."""
    data = _open_bytes(path)
    lines = pl.read_csv(io.BytesIO(data), has_header=False, new_columns=["entry"], separator="\x01",
                        quote_char=None, infer_schema=False, truncate_ragged_lines=True)["entry"]
    entry = pl.col("entry").str.strip_chars()
    entries = pl.DataFrame({"entry": lines}).select(entry).filter(
        (pl.col("entry") != "") & ~pl.col("entry").str.starts_with("#"))
    if kind == "domain":
        entries = entries.select(pl.col("entry").str.to_lowercase().str.strip_prefix("www.").str.strip_suffix("."))
    elif kind == "url":
        entries = entries.select(_url_key(pl.col("entry")))
    else:  # FineWeb normalizes words by removing every non-alphanumeric character and lowercasing
        entries = entries.select(pl.col("entry").str.replace_all(r"[^a-zA-Z0-9]+", "").str.to_lowercase())
    return entries.filter(pl.col("entry") != "")  # duplicates are harmless: lists are only probed


def _url_key(url: pl.Expr) -> pl.Expr:
    """A URL without scheme, credentials, ``www.``, fragment and trailing slash, host lowercased: how the UT1 URL
    list writes entries (``example.com/some/page``)."""
    rest = url.str.strip_chars().str.replace(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", "").str.replace(r"^[^@/?#]*@", "")
    rest = rest.str.replace(r"#.*$", "")
    host = rest.str.extract(r"^([^/?#:]*)", 1).str.to_lowercase().str.strip_prefix("www.")
    tail = rest.str.replace(r"^[^/?#]*", "")
    return pl.concat_str([host, tail]).str.strip_suffix("/").alias("entry")


def _host(url: pl.Expr) -> pl.Expr:
    # The scheme is optional: crawl metadata often stores ``example.com/page``.
    return (url.str.strip_chars().str.extract(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*://)?(?:[^@/?#]*@)?([^:/?#]+)", 1)
            .str.to_lowercase().str.strip_suffix(".").str.strip_prefix("www."))


def _domain_candidates(frame: pl.DataFrame) -> pl.DataFrame:
    """(doc_id, candidate) for the host and every parent domain of it (``a.b.c`` -> a.b.c, b.c, c)."""
    labels = pl.col("host").str.split(".")
    suffixes = [labels.list.slice(i).list.join(".").alias(f"s{i}") for i in range(_MAX_LABELS)]
    return (
        frame.select("doc_id", "host").drop_nulls("host")
        .select("doc_id", pl.concat_list(suffixes).list.unique(maintain_order=True).alias("candidate"))
        .explode("candidate")
        .filter(pl.col("candidate") != "")
    )


def _url_words(frame: pl.DataFrame) -> pl.DataFrame:
    """(doc_id, candidate) for every distinct lowercase alphanumeric word of the URL."""
    return (
        frame.select("doc_id", pl.col("url").str.to_lowercase().str.replace_all(r"[^a-z0-9]+", " ")
                     .str.strip_chars().str.split(" ").list.unique(maintain_order=True).alias("candidate"))
        .explode("candidate")
        .filter(pl.col("candidate").is_not_null() & (pl.col("candidate") != ""))
    )


def _first_match(candidates: pl.DataFrame, entries: pl.DataFrame) -> pl.DataFrame:
    """(doc_id, entry): the first candidate of each document (in candidate order) found in ``entries``."""
    # Probe the big list with the (few) candidates, not the other way round: no hash table of the list is built.
    present = entries.filter(pl.col("entry").is_in(candidates["candidate"].unique().implode()))
    return (
        candidates.with_row_index("_order")
        .join(present.rename({"entry": "candidate"}), on="candidate", how="semi")
        .sort("_order").group_by("doc_id", maintain_order=True).agg(pl.col("candidate").first().alias("entry"))
    )


_MATCH_SCHEMA = {"doc_id": pl.String, "rule": pl.String, "list": pl.String, "entry": pl.String}


def url_matches(docs: pl.DataFrame, cfg: UrlFilterConfig) -> pl.DataFrame:
    """One row per document a list matches: ``doc_id, rule, list, entry`` (the first matching check in FineWeb
    order, then list order). Documents without a URL, or allowed for their source, never appear."""
    if "url" not in docs.columns:
        return pl.DataFrame(schema=_MATCH_SCHEMA)
    frame = docs.select("doc_id", "source", "url").filter(pl.col("url").str.strip_chars().fill_null("") != "")
    if frame.is_empty():  # no URL to check: never pay for loading the lists (the UT1 domains take seconds)
        return pl.DataFrame(schema=_MATCH_SCHEMA)
    frame = frame.with_columns(_host(pl.col("url")).alias("host"))
    domains = _domain_candidates(frame)
    if cfg.allow:
        allowed = pl.DataFrame([(s, d.lower().removeprefix("www.")) for s, ds in cfg.allow.items() for d in ds],
                               schema={"source": pl.String, "candidate": pl.String}, orient="row")
        allowed_ids = domains.join(frame.select("doc_id", "source"), on="doc_id").join(
            allowed, on=["source", "candidate"], how="semi").select("doc_id").unique()
        frame = frame.join(allowed_ids, on="doc_id", how="anti")
        domains = domains.join(allowed_ids, on="doc_id", how="anti")
    url_keys = frame.select("doc_id", _url_key(pl.col("url")).alias("candidate"))
    words = _url_words(frame)
    squashed = frame.select("doc_id", pl.col("url").str.replace_all(r"[^a-zA-Z0-9]+", "").str.to_lowercase()
                            .alias("squashed"))
    found: list[pl.DataFrame] = []
    order = {"domain": 0, "url": 1, "word": 2, "soft_word": 3, "subword": 4}
    for rank, bl in sorted(enumerate(cfg.lists), key=lambda item: (order[item[1].kind], item[0])):
        entries = load_list(bl.path, bl.kind)
        if bl.kind == "domain":
            hits = _first_match(domains, entries)
        elif bl.kind == "url":
            hits = _first_match(url_keys, entries)
        elif bl.kind == "word":
            hits = _first_match(words, entries)
        elif bl.kind == "soft_word":
            present = entries.filter(pl.col("entry").is_in(words["candidate"].unique().implode())).unique()
            hits = (words.join(present.rename({"entry": "candidate"}), on="candidate", how="semi")
                    .group_by("doc_id", maintain_order=True)
                    .agg(pl.col("candidate").sort().str.join(", ").alias("entry"), pl.len().alias("n"))
                    .filter(pl.col("n") >= cfg.soft_word_threshold).drop("n"))
        else:
            patterns = entries["entry"].to_list()
            hits = (squashed.select("doc_id", pl.col("squashed").str.extract_many(patterns).list.first().alias("entry"))
                    .drop_nulls("entry")) if patterns else None
        if hits is None or hits.is_empty():
            continue
        rule = {"domain": "url.domain", "url": "url.url", "word": "url.banned_word",
                "soft_word": "url.soft_banned_words", "subword": "url.banned_subword"}[bl.kind]
        found.append(hits.select("doc_id", pl.lit(rule).alias("rule"), pl.lit(bl.name).alias("list"),
                                 pl.col("entry").cast(pl.String), pl.lit(order[bl.kind] * 1000 + rank).alias("_rank")))
    if not found:
        return pl.DataFrame(schema=_MATCH_SCHEMA)
    return (pl.concat(found).sort("_rank", maintain_order=True).group_by("doc_id", maintain_order=True).first()
            .drop("_rank").join(docs.select("doc_id").with_row_index("_i"), on="doc_id").sort("_i").drop("_i"))


def filter_urls(docs: pl.DataFrame, cfg: UrlFilterConfig) -> StageResult:
    """The ``url`` stage. In: documents (``url`` column optional). Out: documents whose URL matches no list;
    one ``drop`` verdict per removed document with rule ``url.<check>`` and detail ``list <name>: matched
    '<entry>'``; metrics: documents with a URL, removals per rule and per list."""
    with_url = int(docs["url"].is_not_null().sum()) if "url" in docs.columns else 0
    if not cfg.enabled:
        return split_by_verdicts(docs, pl.DataFrame(schema={"doc_id": pl.String}), {"documents_with_url": with_url})
    matches = url_matches(docs, cfg)
    verdicts = matches.select(
        "doc_id", pl.lit(DROP).alias("verdict"), "rule",
        pl.format("list {}: matched '{}'", pl.col("list"), pl.col("entry")).alias("detail"),
    )
    per_rule = matches.group_by("rule").len().sort("rule")
    per_list = matches.group_by("list").len().sort("list")
    return split_by_verdicts(docs, verdicts, {
        "documents_with_url": with_url,
        "dropped_per_rule": dict(zip(per_rule["rule"].to_list(), per_rule["len"].to_list())),
        "dropped_per_list": dict(zip(per_list["list"].to_list(), per_list["len"].to_list())),
    })
