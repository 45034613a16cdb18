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

_SQL = """
WITH item_words AS (
    SELECT benchmark, item_id,
           list_filter(regexp_split_to_array(lower(coalesce(text, '')), $separator), lambda w: w <> '') AS w
    FROM items
),
item_sized AS (
    SELECT benchmark, item_id, w, hash(array_to_string(w, ' ')) AS text_key,
           CASE WHEN len(w) >= $ngram THEN $ngram ELSE len(w) END AS size
    FROM item_words
    WHERE len(w) >= $min_ngram
),
item_grams AS (
    SELECT DISTINCT benchmark, item_id, text_key, size,
           unnest(list_transform(range(1, len(w) - size + 2),
                                 lambda i: hash(array_to_string(w[i:i + size - 1], ' ')))) AS gram
    FROM item_sized
),
bound AS (
    SELECT benchmark,
           greatest(1.0, least($max_item_frac * count(DISTINCT item_id), $max_items)) AS max_holders
    FROM items GROUP BY benchmark
),
holders AS (
    SELECT benchmark, size, gram, count(DISTINCT text_key) AS n_holders
    FROM item_grams GROUP BY ALL
),
evidence AS (
    SELECT g.benchmark, g.item_id, g.size, g.gram
    FROM item_grams g
    JOIN holders h USING (benchmark, size, gram)
    JOIN bound b USING (benchmark)
    WHERE h.n_holders <= b.max_holders
),
item_totals AS (
    SELECT benchmark, item_id, count(*) AS informative FROM evidence GROUP BY ALL
),
sizes AS (SELECT DISTINCT size FROM evidence),
doc_words AS (
    SELECT doc, list_filter(regexp_split_to_array(lower(coalesce(text, '')), $separator), lambda w: w <> '') AS w
    FROM docs
),
doc_grams AS (
    SELECT DISTINCT doc, size,
           unnest(list_transform(range(1, len(w) - size + 2),
                                 lambda i: hash(array_to_string(w[i:i + size - 1], ' ')))) AS gram
    FROM doc_words CROSS JOIN sizes
    WHERE len(w) >= size
),
per_item AS (
    SELECT d.doc, e.benchmark, e.item_id, count(*) AS matched
    FROM doc_grams d JOIN evidence e USING (size, gram)
    GROUP BY ALL
),
contaminated AS (
    SELECT p.doc, count(*) AS items
    FROM per_item p JOIN item_totals t USING (benchmark, item_id)
    WHERE p.matched >= $min_matched OR p.matched >= $min_coverage * t.informative
    GROUP BY p.doc
)
SELECT d.doc, coalesce(c.items, 0) AS items
FROM docs d LEFT JOIN contaminated c USING (doc)
ORDER BY d.doc
"""


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
    params = {
        "separator": _SEPARATOR,
        "ngram": cfg.ngram,
        "min_ngram": cfg.min_ngram,
        "max_item_frac": cfg.boilerplate_max_item_frac,
        "max_items": cfg.boilerplate_max_items,
        "min_matched": cfg.min_matched_ngrams,
        "min_coverage": cfg.min_item_coverage,
    }
    with duckdb.connect() as con:
        con.register("docs", docs.to_arrow())
        con.register("items", items.to_arrow())
        counts = pl.from_arrow(con.sql(_SQL, params=params).to_arrow_table())
    return counts["items"].cast(pl.UInt32).rename(texts.name or "contaminating_items")
