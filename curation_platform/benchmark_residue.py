"""Independent re-scan for benchmark contamination, used by the gates (never by the stage that decides).

The decontamination stage tokenizes and hashes in Polars (XXH3-64 of Rust-regex words). This audit path is a
second implementation in DuckDB SQL: its own word split (RE2 Unicode classes), its own lowercasing and DuckDB's own
64-bit ``hash``, its own per-item boilerplate bound and its own per-item evidence count. It applies the same
contract, read from the same ``decontamination`` configuration: a text is contaminated by a benchmark item when it
shares at least ``min_matched_ngrams`` of the item's informative n-grams, or at least ``min_item_coverage`` of
them, where an n-gram held by more than ``max(1, min(boilerplate_max_item_frac * items, boilerplate_max_items))``
distinct item texts of a benchmark is boilerplate. Nothing depends on how often an n-gram occurs in the scanned
texts, so an item copied into every document of a release still counts in every one.
"""

from __future__ import annotations

import functools

import duckdb
import polars as pl

from curation_platform.ops.decontaminate import DecontaminationConfig, load_benchmarks

# Word characters as Rust's regex `\w` defines them (alphabetic, marks, decimal digits, connector punctuation),
# written as RE2 Unicode classes; everything else separates words.
_SEPARATOR = r"[^\p{L}\p{Nl}\p{M}\p{Nd}\p{Pc}]+"

# Per benchmark item: its words, its n-grams (consecutive words joined by one space, hashed by DuckDB), how many
# distinct item texts of the benchmark hold each n-gram, and so its informative n-grams and their count.
_EVIDENCE_SQL = ["""
CREATE TEMP TABLE item_info AS
    SELECT benchmark, item_id, w, len(w) AS n, hash(array_to_string(w, ' ')) AS text_key
    FROM (SELECT benchmark, item_id,
                 list_filter(regexp_split_to_array(lower(coalesce(text, '')), $separator), lambda x: x <> '') AS w
          FROM items)
    WHERE len(w) >= $min_ngram
""", """
CREATE TEMP TABLE item_grams AS
    SELECT DISTINCT benchmark, item_id, text_key, size, gram FROM (
        SELECT benchmark, item_id, text_key, $ngram AS size, hash({joined}) AS gram, {last} AS last
        FROM (SELECT benchmark, item_id, text_key, unnest(w) AS word, unnest(range(n)) AS pos
              FROM item_info WHERE n >= $ngram)
        WINDOW win AS (PARTITION BY benchmark, item_id ORDER BY pos)
        UNION ALL
        -- Items shorter than `ngram` words are one n-gram of their whole text.
        SELECT benchmark, item_id, text_key, n AS size, hash(array_to_string(w, ' ')) AS gram, '' AS last
        FROM item_info WHERE n < $ngram
    ) WHERE last IS NOT NULL
""", """
CREATE TEMP TABLE evidence AS
    WITH bound AS (
        SELECT benchmark, greatest(1.0, least($max_item_frac * count(DISTINCT item_id), $max_items)) AS max_holders
        FROM items GROUP BY benchmark
    ), holders AS (
        SELECT benchmark, size, gram, count(DISTINCT text_key) AS n_holders FROM item_grams GROUP BY ALL
    )
    SELECT DISTINCT g.benchmark, g.item_id, g.size, g.gram
    FROM item_grams g JOIN holders h USING (benchmark, size, gram) JOIN bound b USING (benchmark)
    WHERE h.n_holders <= b.max_holders
""", """
CREATE TEMP TABLE item_totals AS
    SELECT benchmark, item_id, count(*) AS informative FROM evidence GROUP BY ALL
"""]

# Per document: its n-grams of every size the evidence uses, the items they match, and how many items pass the rule.
_DOCS_SQL = """
WITH doc_words AS (
    SELECT doc, list_filter(regexp_split_to_array(lower(coalesce(text, '')), $separator), lambda x: x <> '') AS w
    FROM docs
), doc_leads AS (
    SELECT doc, word, {leads}
    FROM (SELECT doc, unnest(w) AS word, unnest(range(len(w))) AS pos FROM doc_words)
    WINDOW win AS (PARTITION BY doc ORDER BY pos)
), doc_grams AS (
    {grams}
), per_item AS (
    SELECT d.doc, e.benchmark, e.item_id, count(DISTINCT d.gram) AS matched
    FROM doc_grams d JOIN evidence e USING (size, gram)
    GROUP BY ALL
), contaminated AS (
    SELECT p.doc, count(*) AS items
    FROM per_item p JOIN item_totals t USING (benchmark, item_id)
    WHERE p.matched >= $min_matched OR p.matched >= $min_coverage * t.informative
    GROUP BY p.doc
)
SELECT d.doc, coalesce(c.items, 0) AS items
FROM docs d LEFT JOIN contaminated c USING (doc)
ORDER BY d.doc
"""


def _lead(k: int) -> str:
    return "word" if k == 0 else f"l{k}"


def _joined(size: int, inline: bool = False) -> str:
    """SQL joining ``size`` consecutive words with one space, from lead columns or inline window calls."""
    words = [f"lead(word, {k}) OVER win" if inline and k else _lead(k) for k in range(size)]
    return "concat_ws(' ', " + ", ".join(words) + ")"


@functools.lru_cache(maxsize=4)
def _items(config_json: str) -> pl.DataFrame:
    return load_benchmarks(DecontaminationConfig.model_validate_json(config_json))


def benchmark_items(cfg: DecontaminationConfig) -> pl.DataFrame:
    """The (benchmark, item_id, text) items of every configured benchmark, read once per process and config."""
    return _items(cfg.model_dump_json())


def contaminating_items(texts: pl.Series, benchmarks: pl.DataFrame, cfg: DecontaminationConfig) -> pl.Series:
    """Per text, the number of benchmark items it is contaminated by (UInt32, 0 = clean), in input order.

    ``benchmarks`` is the (benchmark, item_id, text) frame of ``load_benchmarks``; the n-grams are computed here,
    not taken from the stage's index.
    """
    docs = pl.DataFrame({"text": texts.cast(pl.String)}).with_row_index("doc")
    items = benchmarks.select("benchmark", "item_id", "text")
    common = {"separator": _SEPARATOR}
    with duckdb.connect() as con:
        con.register("docs", docs.to_arrow())
        con.register("items", items.to_arrow())
        params = {**common, "ngram": cfg.ngram, "min_ngram": cfg.min_ngram,
                  "max_item_frac": cfg.boilerplate_max_item_frac, "max_items": cfg.boilerplate_max_items}
        for statement in _EVIDENCE_SQL:
            statement = statement.replace("{joined}", _joined(cfg.ngram, inline=True)).replace(
                "{last}", f"lead(word, {cfg.ngram - 1}) OVER win")
            con.execute(statement, {k: v for k, v in params.items() if f"${k}" in statement})
        sizes = sorted(row[0] for row in con.execute("SELECT DISTINCT size FROM evidence").fetchall())
        if not sizes:
            return pl.Series(texts.name or "contaminating_items", [0] * len(texts), dtype=pl.UInt32)
        grams = "\n    UNION ALL\n    ".join(
            f"SELECT doc, {size} AS size, hash({_joined(size)}) AS gram FROM doc_leads WHERE {_lead(size - 1)} "
            "IS NOT NULL"
            for size in sizes
        )
        leads = ", ".join(f"lead(word, {k}) OVER win AS l{k}" for k in range(1, max(sizes))) or "NULL AS l0"
        query = _DOCS_SQL.replace("{leads}", leads).replace("{grams}", grams)
        params = {**common, "min_matched": cfg.min_matched_ngrams, "min_coverage": cfg.min_item_coverage}
        counts = pl.from_arrow(con.sql(query, params=params).to_arrow_table())
    return counts["items"].cast(pl.UInt32).rename(texts.name or "contaminating_items")
