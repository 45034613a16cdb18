"""Near-duplicate clusters with MinHash LSH against a persistent index of the other drops.

Pipeline, all column operations:

1. Shingles: text normalized (lower-case, punctuation and symbols removed, digits to 0, whitespace collapsed),
   split into words; each word hashed with XXH3-64 (polars_hash, stable across versions) and every ``ngram``
   consecutive word hashes folded into one 64-bit shingle hash with numpy. A document shorter than ``ngram``
   words is one shingle.
2. Signatures: ``num_perm`` universal hash functions ``h -> (a*h + b mod 2^64) >> 32`` (multiply-add-shift,
   Dietzfelbinger 1996, strongly universal for 32-bit keys) applied to the shingle hashes, minimum per document
   with ``np.minimum.reduceat``. Parameters come from SplitMix64 of the seed, so persisted signatures never depend
   on a numpy RNG stream.
3. LSH: ``bands`` keys per document (a 64-bit hash of each band's ``rows`` values). Candidate pairs share a
   (band, key) within the drop or with the index of the other drops. Out of core: the drop is read in batches,
   its signatures and band keys spilled to Parquet; an in-process DuckDB with a ``memory_limit`` and a spill
   folder unnests the other drops' index files in place, keeps only rows whose bucket the drop has, and does the
   join, the per-bucket ranking and the pair de-duplication, spilling instead of growing without bound. The index
   stores band keys only: an index document in a candidate pair has its content read for the exact verification
   anyway, and its signature is recomputed from the same shingles. The keep-rule rank is a DuckDB window over the
   spilled sort keys, and the sorted candidate pairs are spilled to Parquet before DuckDB is closed.
4. Verification: the MinHash estimate screens candidates (``estimate_margin`` below the threshold), then a pair
   counts only when the EXACT Jaccard of the two shingle sets (one vectorized join over the pairs' shingles)
   reaches ``verify_threshold``; that exact value is what the ledger records. The batches of candidate pairs are
   independent (:class:`VerifyTask`: pair ids and where their documents are; each reads its texts itself), so a
   ``BatchMapper`` runs them in worker processes or on Ray, as it does the signature batches of step 2; results
   are merged in batch order, identical to one process.
5. Clusters: connected components of the verified pairs (numpy min-label propagation with pointer jumping over
   the pairs' documents only); the cluster id is the doc_id of the cluster's first document in keep-rule order. The stage records the pairs;
   it drops no copy (only content of taken-down documents).
6. Keep rule, per release (:func:`near_representatives`): documents are taken in keep-rule order among those the
   release's license profile allows; one is left out only if it has a verified near-duplicate among the documents
   already chosen. This avoids chain collapse (A~B, B~C, A!~C keeps A and C). It is resolved in vectorized rounds
   over the edge list.
"""

from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import polars as pl
import polars_hash as plh
from pydantic import BaseModel, ConfigDict, Field, model_validator

from curation_platform.ops.dedup_exact import (
    RULE_BLOCKED,
    DedupIndexError,
    IndexPart,
    index_parts,
    register_index,
    KeepRule,
    content_expr,
    default_keep_rule,
    keep_columns,
    keep_order,
    sort_by_keep_rule,
)
from curation_platform.outofcore import (DuckDBSize, OutOfCore, SpillWriter, duckdb_connection, frames_then_remove,
                                         new_spill_folder, spill_folder, sql_path)
from curation_platform.records import DROP, FLAG, DropInput, FrameDropInput, StageResult, verdict_frame

RULE_DUPLICATE = "near_dedup.duplicate"
# Bump when the shingle or signature scheme changes: persisted indexes of another scheme are refused.
SIGNATURE_SCHEME = "minhash-v1"

# One entry per kept document with shingles, persisted per drop (``index/near/<drop>.parquet``): the band keys
# (what the band join needs) and nothing that can be recomputed or read elsewhere. Full signatures are not kept
# (an index document's signature is recomputed from its content when it is in a candidate pair, which the exact
# verification reads anyway); the drop and its order are the file's. ``params`` is one dictionary-encoded value
# per file (the MinHash settings: entries of other settings are refused).
NEAR_INDEX_SCHEMA: dict[str, pl.DataType] = {
    "doc_id": pl.String,
    "band_keys": pl.List(pl.UInt64),
    "params": pl.Categorical(),  # SIGNATURE_SCHEME and the parameters the band keys were computed with
}
# The format written before issue 10 (drop, order and the 112 signature values on every row): still read.
LEGACY_NEAR_INDEX_SCHEMA: dict[str, pl.DataType] = {
    "doc_id": pl.String, "drop": pl.String, "drop_order": pl.Int64, "band_keys": pl.List(pl.UInt64),
    "signature": pl.List(pl.UInt32), "params": pl.String,
}

_EMPTY_SIGNATURE = np.uint32(0xFFFFFFFF)  # signature value of a document without shingles
_FOLD = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier for folding word hashes into n-gram hashes
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)  # SplitMix64 constants
_UNKNOWN, _KEPT, _REMOVED = 0, 1, 2


class NearDedupConfig(BaseModel):
    """MinHash LSH settings. Defaults: FineWeb (Penedo et al. 2024), 112 permutations as 14 bands x 8 rows,
    5-word shingles."""

    model_config = ConfigDict(extra="forbid")

    num_perm: int = Field(112, ge=2)
    bands: int = Field(14, ge=1)
    rows: int = Field(8, ge=1)
    ngram: int = Field(5, ge=1)
    seed: int = Field(1, ge=0, lt=2**63)
    verify: bool = True
    verify_threshold: float = Field(0.8, ge=0.0, le=1.0)
    # Candidates whose MinHash estimate is more than this below the threshold are not checked exactly (the
    # estimate's standard deviation is about 0.04 at 112 permutations, so 0.15 is over three of them).
    estimate_margin: float = Field(0.15, ge=0.0, le=1.0)
    max_cluster_size: int = Field(1000, ge=2)
    # When set, bands and rows are chosen to minimize the weighted false positive and negative probability at
    # this Jaccard (the datasketch ``_optimal_param`` idea), overriding ``bands`` and ``rows``.
    target_jaccard: float | None = Field(None, gt=0.0, lt=1.0)
    false_positive_weight: float = Field(0.5, ge=0.0)
    false_negative_weight: float = Field(0.5, ge=0.0)
    # Within one (band, key) bucket each document is compared with at most this many documents ranked before it,
    # which bounds the pairs from huge template buckets (otherwise quadratic) while keeping likely survivors.
    bucket_link_limit: int = Field(100, ge=1)
    keep_rule: KeepRule = Field(default_factory=default_keep_rule)
    # For direct calls without engine settings only (the pipeline passes ``engine.memory_limit`` and
    # ``engine.spill_dir``): DuckDB's memory limit (DuckDB size syntax) and spill folder (None: a fresh one).
    memory_limit: DuckDBSize = "4GB"
    temp_directory: str | None = None
    # Documents read, shingled and signed at a time in direct calls (the pipeline uses ``engine.batch_rows``).
    signature_batch_docs: int = Field(10_000, ge=1)
    # Candidate pairs are fetched from DuckDB and verified in batches of this many rows (bounds numpy memory).
    verify_batch_rows: int = Field(1_000_000, ge=1)

    @model_validator(mode="after")
    def _bands_fit(self) -> NearDedupConfig:
        if self.target_jaccard is None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands * rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self


def empty_near_index() -> pl.DataFrame:
    """An empty near-dedup index with the persisted schema (the index of the first drop)."""
    return pl.DataFrame(schema=NEAR_INDEX_SCHEMA)


# ---------------------------------------------------------------------------------------------------- LSH setup


def lsh_false_rates(threshold: float, bands: int, rows: int, grid: int = 1001) -> tuple[float, float]:
    """Areas under the LSH candidate curve ``1 - (1 - s^rows)^bands``: false positive mass over Jaccard below
    ``threshold`` and false negative mass above it (trapezoid rule on ``grid`` points)."""
    below = np.linspace(0.0, threshold, grid)
    above = np.linspace(threshold, 1.0, grid)
    fp = np.trapezoid(1.0 - (1.0 - below**rows) ** bands, below)
    fn = np.trapezoid((1.0 - above**rows) ** bands, above)
    return float(fp), float(fn)


def optimal_lsh_params(
    threshold: float, num_perm: int, false_positive_weight: float = 0.5, false_negative_weight: float = 0.5
) -> tuple[int, int]:
    """(bands, rows) with ``bands * rows <= num_perm`` minimizing the weighted false positive and false negative
    probability mass at ``threshold``. Ties go to fewer bands, then fewer rows."""
    best, best_error = (1, 1), np.inf
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp, fn = lsh_false_rates(threshold, bands, rows)
            error = false_positive_weight * fp + false_negative_weight * fn
            if error < best_error - 1e-15:
                best, best_error = (bands, rows), error
    return best


def lsh_params(cfg: NearDedupConfig) -> tuple[int, int]:
    """The (bands, rows) the stage uses: ``target_jaccard`` optimized if set, else the configured pair."""
    if cfg.target_jaccard is None:
        return cfg.bands, cfg.rows
    return optimal_lsh_params(cfg.target_jaccard, cfg.num_perm, cfg.false_positive_weight,
                              cfg.false_negative_weight)


def signature_params(cfg: NearDedupConfig) -> str:
    """The string stored with every index entry; an index is only comparable under the same string."""
    bands, rows = lsh_params(cfg)
    return f"{SIGNATURE_SCHEME} num_perm={cfg.num_perm} ngram={cfg.ngram} seed={cfg.seed} bands={bands} rows={rows}"


# ---------------------------------------------------------------------------------------------------- signatures


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64) * _FOLD
    x ^= x >> np.uint64(30)
    x *= _MIX1
    x ^= x >> np.uint64(27)
    x *= _MIX2
    x ^= x >> np.uint64(31)
    return x


def _permutations(cfg: NearDedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """Multipliers (odd) and offsets of the ``num_perm`` hash functions, derived from the seed only."""
    counters = np.uint64(cfg.seed) * np.uint64(2 * cfg.num_perm + 1) + np.arange(2 * cfg.num_perm, dtype=np.uint64)
    mixed = _splitmix64(counters + np.uint64(1))
    return mixed[0::2] | np.uint64(1), mixed[1::2]


def _normalized_words(texts: pl.Series) -> pl.Series:
    """Words of each text after lower-casing, removing punctuation and symbols and mapping digits to 0."""
    text = pl.col("t").fill_null("")
    normalized = (
        text.str.to_lowercase()
        .str.replace_all(r"[\p{P}\p{S}]+", "")
        .str.replace_all(r"\d", "0")
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
    )
    words = pl.when(normalized == "").then(pl.lit([], dtype=pl.List(pl.String))).otherwise(normalized.str.split(" "))
    return pl.DataFrame({"t": texts.cast(pl.String)}).select(words.alias("w"))["w"]


def shingle_hashes(texts: pl.Series, cfg: NearDedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of each text's word ``ngram``-shingles, flat in text order, and the shingle count per text.

    A text with fewer than ``ngram`` words (but at least one) has one shingle, the whole word sequence; an empty
    text has none. Returns ``(hashes uint64 (total,), counts int64 (n,))``; text ``i`` owns
    ``hashes[counts[:i].sum() : counts[:i+1].sum()]`` (duplicates within a text are kept).
    """
    n_texts, n = len(texts), cfg.ngram
    words = _normalized_words(texts)
    lengths = words.list.len().to_numpy().astype(np.int64)
    word_hashes = (
        pl.DataFrame({"w": words.explode(empty_as_null=False)})
        .drop_nulls()
        .select(plh.col("w").nchash.xxh3_64(seed=cfg.seed))["w"]
        .to_numpy()
        .astype(np.uint64)
    )
    total = len(word_hashes)
    doc_of = np.repeat(np.arange(n_texts, dtype=np.int64), lengths)
    # Pad so that position p + k always exists; padded and foreign words contribute 0 to the fold.
    padded = np.concatenate([word_hashes, np.zeros(n - 1, dtype=np.uint64)])
    padded_doc = np.concatenate([doc_of, np.full(n - 1, -1, dtype=np.int64)])
    folded = np.zeros(total, dtype=np.uint64)
    for k in range(n):
        folded *= _FOLD
        folded += np.where(padded_doc[k : k + total] == doc_of, padded[k : k + total], np.uint64(0))
    starts = np.cumsum(lengths) - lengths
    is_start = np.zeros(total, dtype=bool)
    short = (lengths > 0) & (lengths < n)
    is_start[starts[short]] = True
    full_ngram = padded_doc[n - 1 : n - 1 + total] == doc_of
    keep = full_ngram | is_start
    counts = np.bincount(doc_of[keep], minlength=n_texts).astype(np.int64)
    return folded[keep], counts


def _signatures_from_shingles(hashes: np.ndarray, counts: np.ndarray, cfg: NearDedupConfig) -> np.ndarray:
    n_texts = len(counts)
    signatures = np.full((n_texts, cfg.num_perm), _EMPTY_SIGNATURE, dtype=np.uint32)
    has = counts > 0
    if not has.any():
        return signatures
    # reduceat needs non-empty segments: offsets of the texts that have shingles only.
    offsets = (np.cumsum(counts) - counts)[has]
    keys = hashes >> np.uint64(32)  # 32-bit keys: multiply-add-shift is strongly universal for them
    multipliers, offsets_b = _permutations(cfg)
    scratch = np.empty_like(keys)
    block = np.empty((int(has.sum()), cfg.num_perm), dtype=np.uint64)
    for k in range(cfg.num_perm):  # loop over hash functions, each one vectorized over every shingle
        np.multiply(keys, multipliers[k], out=scratch)
        scratch += offsets_b[k]
        scratch >>= np.uint64(32)
        block[:, k] = np.minimum.reduceat(scratch, offsets)
    signatures[has] = block.astype(np.uint32)
    return signatures


def minhash_signatures(texts: pl.Series, cfg: NearDedupConfig) -> np.ndarray:
    """MinHash signature of each text: ``uint32`` array of shape ``(len(texts), cfg.num_perm)``.

    A text without any word gets the all-``0xFFFFFFFF`` signature (it is never a near-duplicate candidate).
    """
    hashes, counts = shingle_hashes(texts, cfg)
    return _signatures_from_shingles(hashes, counts, cfg)


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """64-bit key of each band (``rows`` consecutive signature values): ``uint64`` array ``(n, bands)``."""
    n = signatures.shape[0]
    per_band = signatures[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)
    keys = np.broadcast_to(np.arange(bands, dtype=np.uint64), (n, bands)).copy()
    for r in range(rows):
        keys = _splitmix64(keys ^ per_band[:, :, r])
    return keys


def _estimated_jaccard(sig: np.ndarray, left: np.ndarray, right: np.ndarray, chunk: int = 65536) -> np.ndarray:
    out = np.empty(len(left), dtype=np.float64)
    for start in range(0, len(left), chunk):  # chunks bound memory to chunk * num_perm bytes
        stop = start + chunk
        out[start:stop] = (sig[left[start:stop]] == sig[right[start:stop]]).mean(axis=1)
    return out


# ---------------------------------------------------------------------------------------------------- graph steps


def _strings(values: np.ndarray) -> np.ndarray:
    """An object array of ids as a string array (empty arrays keep a string dtype)."""
    return values.astype(str) if len(values) else np.array([], dtype=str)


def _resolve_keep(n_nodes: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Greedy keep rule over verified edges (src before dst in keep order): a node is removed iff it has an edge
    from a kept node. Resolved in rounds; each round settles every node whose earlier neighbours are all settled.
    Returns the status per node."""
    status = np.full(n_nodes, _UNKNOWN, dtype=np.int8)
    has_incoming = np.zeros(n_nodes, dtype=bool)
    has_incoming[dst] = True
    status[(~has_incoming) & (status == _UNKNOWN)] = _KEPT
    while (status == _UNKNOWN).any():
        live = status[dst] == _UNKNOWN
        src, dst = src[live], dst[live]
        src_status = status[src]
        kept_in = np.zeros(n_nodes, dtype=bool)
        kept_in[dst[src_status == _KEPT]] = True
        unknown_in = np.zeros(n_nodes, dtype=bool)
        unknown_in[dst[src_status == _UNKNOWN]] = True
        unknown = status == _UNKNOWN
        status[unknown & kept_in] = _REMOVED
        status[unknown & ~kept_in & ~unknown_in] = _KEPT
    return status


def _components(n_nodes: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Smallest node id of each node's connected component (min-label propagation with pointer jumping)."""
    label = np.arange(n_nodes, dtype=np.int64)
    while True:
        low = np.minimum(label[src], label[dst])
        new = label.copy()
        np.minimum.at(new, src, low)
        np.minimum.at(new, dst, low)
        new = new[new]  # pointer jumping: follow labels to their own labels
        if np.array_equal(new, label):
            return label
        label = new


def _size_bucket(size: int) -> str:
    upper = 1 << (size - 1).bit_length()
    lower = upper // 2 + 1
    return str(size) if size <= 2 else f"{lower}-{upper}"


_JACCARD_CHUNK_PAIRS = 1024  # pairs whose shingle rows are sorted together in exact_jaccard


def exact_jaccard(hashes: np.ndarray, counts: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Exact Jaccard of the shingle SETS of text pairs ``(left[i], right[i])``, for all pairs at once.

    ``hashes``/``counts`` as returned by :func:`shingle_hashes` (text ``t`` owns a contiguous run of hashes).
    Each text's shingles are made a sorted set once; then the two sets of every pair are laid side by side and
    sorted by (pair, shingle), so a shingle in both sets is an adjacent equal row: that count is ``|A & B|`` and
    the union is ``|A| + |B| - |A & B|``. Two texts without shingles have Jaccard 0. Rows scale with the pairs'
    shingles, so call it on candidate pairs (few), not on all pairs."""
    left = np.asarray(left, dtype=np.int64)
    right = np.asarray(right, dtype=np.int64)
    n_pairs = len(left)
    if n_pairs == 0:
        return np.empty(0, dtype=np.float64)
    text_of = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    order = np.lexsort((hashes, text_of))
    sorted_text, sorted_hash = text_of[order], hashes[order]
    fresh = np.ones(len(order), dtype=bool)
    fresh[1:] = (sorted_text[1:] != sorted_text[:-1]) | (sorted_hash[1:] != sorted_hash[:-1])
    set_text, set_hash = sorted_text[fresh], sorted_hash[fresh]
    sizes = np.bincount(set_text, minlength=len(counts)).astype(np.int64)
    starts = np.cumsum(sizes) - sizes

    def members(texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # (pair, shingle) rows of the given side's sets, one block per pair.
        lengths = sizes[texts]
        pair = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
        offset = np.arange(lengths.sum(), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return pair, set_hash[np.repeat(starts[texts], lengths) + offset]

    common = np.zeros(n_pairs, dtype=np.float64)
    # Pairs in chunks: the (pair, shingle) rows and their sort grow with the pairs, so a chunk bounds them.
    for first in range(0, n_pairs, _JACCARD_CHUNK_PAIRS):
        chunk = slice(first, first + _JACCARD_CHUNK_PAIRS)
        pair_a, hash_a = members(left[chunk])
        pair_b, hash_b = members(right[chunk])
        pair, shingle = np.concatenate([pair_a, pair_b]), np.concatenate([hash_a, hash_b])
        del pair_a, hash_a, pair_b, hash_b
        both = np.lexsort((shingle, pair))
        pair, shingle = pair[both], shingle[both]
        repeated = (pair[1:] == pair[:-1]) & (shingle[1:] == shingle[:-1])
        common[chunk] = np.bincount(pair[1:][repeated], minlength=len(left[chunk]))
    union = (sizes[left] + sizes[right]).astype(np.float64) - common
    return np.divide(common, union, out=np.zeros(n_pairs, dtype=np.float64), where=union > 0)


# ---------------------------------------------------------------------------------------------------- band join

# Out of core, in one DuckDB connection over Parquet files:
# ``current_rows`` (band, key, node): the drop's documents with shingles, node = keep rank (0..n-1), from the
# spilled band keys. ``index_hits``: the in-play index entries (not of the drop's drops, not a document of the
# drop, first row per doc_id) unnested to (band, key) and kept only where the drop has the same bucket: the index
# files are scanned in place and only their matching rows are held. ``index_nodes``: those entries numbered in
# canonical keep order (drop order, doc_id), negative, so every index node sorts before every drop node.
# What grows with the drop (its doc_ids, 14 (band, key, node) rows per document) is not a DuckDB table, which an
# in-memory database holds in its buffer pool until ``memory_limit``: ``drop_ids`` is a view over the spill file,
# ``current_rows`` a view over a Parquet file written once ({current}) and the drop's distinct buckets are written
# to a file ({buckets}) before the index is semi-joined to them (a DISTINCT over the view inside that join ran out of
# memory under a 512MB limit at 1.28M documents); only rows matched in the index are tables.
_NEAR_SETUP_SQL = """
CREATE TEMP TABLE drop_names AS SELECT DISTINCT drop FROM read_parquet($spill) WHERE drop IS NOT NULL;
CREATE TEMP VIEW drop_ids AS SELECT doc_id FROM read_parquet({spill});
COPY (
    SELECT unnest(range(len(s.band_keys))) AS band, unnest(s.band_keys) AS key, n.node
    FROM read_parquet($spill) AS s JOIN node_of_row AS n USING (_row)
    WHERE s.has_shingles
) TO {current} (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1);
CREATE TEMP VIEW current_rows AS SELECT band, key, node FROM read_parquet({current});
COPY (SELECT DISTINCT band, key FROM current_rows) TO {buckets} (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1);
CREATE TEMP TABLE index_hits AS
    WITH in_play AS (
        SELECT * FROM {index} AS i
        WHERE (i.drop IS NULL OR i.drop NOT IN (SELECT drop FROM drop_names))
          AND i.doc_id NOT IN (SELECT doc_id FROM drop_ids)
    ), unnested AS (
        SELECT _part, _row, doc_id, drop, drop_order,
               unnest(range(len(band_keys))) AS band, unnest(band_keys) AS key
        FROM in_play
    )
    SELECT * FROM unnested SEMI JOIN read_parquet({buckets}) USING (band, key);
CREATE TEMP TABLE index_nodes AS
    SELECT _part, _row, doc_id, drop,
           row_number() OVER (ORDER BY drop_order NULLS LAST, doc_id, _part, _row) - 1 - count(*) OVER () AS node
    FROM (SELECT DISTINCT _part, _row, doc_id, drop, drop_order FROM index_hits)
    QUALIFY row_number() OVER (PARTITION BY doc_id ORDER BY drop_order NULLS LAST, _part, _row) = 1;
"""
_INDEX_IN_PLAY_SQL = """
SELECT count(DISTINCT doc_id) FROM {index} AS i
WHERE (i.drop IS NULL OR i.drop NOT IN (SELECT drop FROM drop_names)) AND i.doc_id NOT IN (SELECT doc_id FROM drop_ids)
"""
# Within a (band, key) bucket every member of the drop is linked to the bucket's first ``$limit`` index entries
# (cross-drop pairs) and to the first ``$limit`` drop members ranked before it (within-drop pairs). Nodes follow
# keep order and index nodes are negative, so src < dst throughout.
# ``index_rows`` (band, key, node): the index side of every bucket the drop has (a view over ``index_hits`` and
# ``index_nodes`` in process; one partition's rows on a Ray worker, see :func:`bucket_candidates`).
# Only buckets with two or more of the drop's rows can give within-drop pairs, and in a drop of mostly distinct
# documents almost every bucket has one: ``shared`` finds the others with a hash aggregate (which spills), so the
# window ranks only their rows. Ranking every row (14 per document) ran out of memory under a 2GB limit at
# 1.28M documents (18M rows), and needed 3 GB of RSS without a limit.
_INDEX_ROWS_VIEW = """
CREATE TEMP VIEW index_rows AS
    SELECT h.band, h.key, n.node FROM index_hits AS h JOIN index_nodes AS n USING (_part, _row)
"""
_CANDIDATES_SQL = """
WITH shared AS (
    SELECT band, key FROM current_rows GROUP BY band, key HAVING count(*) > 1
),
current_shared AS (
    SELECT band, key, node FROM current_rows SEMI JOIN shared USING (band, key)
),
index_heads AS (
    SELECT band, key, node
    FROM index_rows
    QUALIFY row_number() OVER (PARTITION BY band, key ORDER BY node) <= $limit
),
current_heads AS (
    SELECT band, key, node
    FROM current_shared
    QUALIFY row_number() OVER (PARTITION BY band, key ORDER BY node) <= $limit
)
SELECT DISTINCT src, dst FROM (
    SELECT head.node AS src, member.node AS dst
    FROM current_rows AS member JOIN index_heads AS head USING (band, key)
    UNION ALL
    SELECT head.node AS src, member.node AS dst
    FROM current_shared AS member JOIN current_heads AS head USING (band, key)
    WHERE head.node < member.node
)
ORDER BY src, dst
"""


def _run_script(connection: duckdb.DuckDBPyConnection, script: str, params: dict) -> None:
    for statement in script.split(";"):
        if statement.strip():
            connection.execute(statement, {k: v for k, v in params.items() if f"${k}" in statement}).fetchall()


def _candidate_batches(
    connection: duckdb.DuckDBPyConnection, cfg: NearDedupConfig, batch_rows: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Distinct candidate pairs ``(src, dst)`` (``src < dst`` in node order), sorted, in batches of at most
    ``batch_rows`` rows, from the tables :data:`_NEAR_SETUP_SQL` made."""
    # A relation streams its result: at most a few batches are held in Python at a time.
    connection.execute(_INDEX_ROWS_VIEW)
    relation = connection.sql(_CANDIDATES_SQL, params={"limit": cfg.bucket_link_limit})
    for batch in relation.to_arrow_reader(batch_rows):
        if batch.num_rows:
            yield (
                batch.column("src").to_numpy(zero_copy_only=False).astype(np.int64),
                batch.column("dst").to_numpy(zero_copy_only=False).astype(np.int64),
            )


def bucket_rows(connection: duckdb.DuckDBPyConnection) -> pa.Table:
    """Every (band, key, node) row of the band join, the drop's (``node >= 0``) and the index's (``node < 0``), from
    the tables :data:`_NEAR_SETUP_SQL` made: what a shuffle by (band, key) distributes."""
    connection.execute(_INDEX_ROWS_VIEW)
    return connection.sql("SELECT band, key, node FROM current_rows UNION ALL "
                          "SELECT band, key, node FROM index_rows").fetch_arrow_table()


def bucket_candidates(rows: pa.Table, cfg: NearDedupConfig) -> pa.Table:
    """Distinct candidate pairs ``(src, dst)`` of (band, key, node) rows that hold whole buckets (nodes ``>= 0``
    the drop's documents, negative nodes index entries), by the same SQL as the in-process join. A shuffle by
    (band, key) gives each worker whole buckets, so the union of every partition's pairs is the drop's pair set
    (with repeats across partitions)."""
    with duckdb.connect() as connection:
        connection.register("current_rows", rows.filter(pc.greater_equal(rows["node"], 0)))
        connection.register("index_rows", rows.filter(pc.less(rows["node"], 0)))
        return connection.sql(_CANDIDATES_SQL, params={"limit": cfg.bucket_link_limit}).fetch_arrow_table()


# How candidate pairs are generated: ``(connection with the band-join tables, cfg, batch_rows) -> batches of sorted
# distinct (src, dst)``. In-process DuckDB by default; the Ray executor passes a shuffle by band key.
CandidateGenerator = Callable[[duckdb.DuckDBPyConnection, NearDedupConfig, int], Iterator[tuple[np.ndarray, np.ndarray]]]


def _spilled_pairs(path: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The spilled candidate pairs ``(src, dst)``, one row group (one generator batch) at a time."""
    spilled = pq.ParquetFile(path)
    for group in range(spilled.num_row_groups):
        table = spilled.read_row_group(group)
        yield (table.column("src").to_numpy().astype(np.int64), table.column("dst").to_numpy().astype(np.int64))


def _signature_matrix(signatures: pl.Series, num_perm: int) -> np.ndarray:
    """``uint32 (len, num_perm)`` matrix of a list column of signatures."""
    if signatures.len() == 0:
        return np.empty((0, num_perm), dtype=np.uint32)
    return signatures.explode().to_numpy().astype(np.uint32).reshape(signatures.len(), num_perm)


# ---------------------------------------------------------------------------------------------------- the stage

# Reads the content (``text`` and/or ``messages``) of index documents by (doc_id, drop): the orchestration reads
# them from the lake, a test from its frames. Only documents in a candidate pair are asked for.
IndexContent = Callable[[pl.DataFrame], pl.DataFrame]

# Columns the near stage reads from its input, and what it spills per document.
_INPUT_COLUMNS = ["doc_id", "text", "messages", "drop", "drop_order", "quality_score", "license"]
_KEEP_COLUMNS = ["doc_id", "drop", "drop_order", "quality_score", "license"]


def near_index_sql(connection: duckdb.DuckDBPyConnection, parts: list[IndexPart], cfg: NearDedupConfig) -> str:
    """SQL over every part's entries as (``_part``, ``_row``, ``doc_id``, ``drop``, ``drop_order``,
    ``band_keys``), the compact and the legacy format alike; refuses entries of other MinHash settings."""
    for part in parts:
        missing = [c for c in ("doc_id", "band_keys", "params") if c not in part.columns()]
        if missing:
            raise DedupIndexError(
                f"near dedup index {part.describe()} is missing columns {missing}; re-curate its drop to rebuild it "
                f"(expected columns: {list(NEAR_INDEX_SCHEMA)})"
            )
    raw = register_index(connection, parts, {"doc_id": "VARCHAR", "band_keys": "UBIGINT[]", "params": "VARCHAR"})
    params = signature_params(cfg)
    foreign = sorted(r[0] for r in connection.execute(
        f"SELECT DISTINCT params FROM {raw} WHERE params IS DISTINCT FROM $params", {"params": params}).fetchall())
    if foreign:
        raise DedupIndexError(
            f"near dedup index entries were computed with {foreign}, the config gives '{params}'; keep the MinHash "
            "settings of the index or rebuild the index of every earlier drop with the new settings"
        )
    return f"(SELECT _part, _row, doc_id, drop, drop_order, band_keys FROM {raw})"


def _shingled(texts: pl.Series, cfg: NearDedupConfig) -> tuple[np.ndarray, np.ndarray]:
    return shingle_hashes(texts, cfg) if len(texts) else (np.empty(0, np.uint64), np.empty(0, np.int64))


def _keep_key_schema(cfg: NearDedupConfig) -> dict[str, pl.DataType]:
    """Name and type of each keep-rule sort key (:func:`keep_order`) as spilled: ascending, nulls last."""
    types = {"drop_order": pl.Int64, "quality_score": pl.Float64, "license": pl.Int32, "doc_id": pl.String}
    rule = list(cfg.keep_rule) if "doc_id" in cfg.keep_rule else [*cfg.keep_rule, "doc_id"]
    return {f"_keep_key_{i}": types[key] for i, key in enumerate(rule)}


def _keep_keys(batch: pl.DataFrame, cfg: NearDedupConfig) -> pl.DataFrame:
    """The keep-rule sort keys of one batch (each key is a function of its own row: batches can be ranked
    together)."""
    keys = keep_order(batch, cfg)
    schema = _keep_key_schema(cfg)
    return batch.with_columns(keys).select([pl.col(name).cast(dtype) for name, dtype in schema.items()])


def _node_ids(nodes: np.ndarray, order: np.ndarray, spill: Path, index_nodes: pl.DataFrame
              ) -> tuple[pl.Series, pl.Series]:
    """doc_id and drop of each of the sorted ``nodes`` (negative: index documents; else the drop's by rank)."""
    index_part = pl.DataFrame({"node": nodes[nodes < 0]}).join(index_nodes, on="node", how="left",
                                                               maintain_order="left")
    rows = pl.Series("_row", order[nodes[nodes >= 0]].astype(np.int64))
    spilled = (pl.scan_parquet(spill).filter(pl.col("_row").is_in(rows.implode())).select("_row", "doc_id", "drop")
               .collect())
    current = rows.to_frame().join(spilled, on="_row", how="left", maintain_order="left")
    return (pl.concat([index_part["doc_id"], current["doc_id"]]).cast(pl.String),
            pl.concat([index_part["drop"], current["drop"]]).cast(pl.String))


# The documents of the candidate pairs are gathered once for all verification batches, in files a batch reads by
# position without scanning them: the drop's documents in a pair (sorted by input row) as an Arrow IPC file of their
# content and a numpy file of their signatures, the index's (sorted by node) as an Arrow IPC file of their content.
# Both formats are memory-mapped, so a batch copies only its own documents' bytes. (Reading each batch's few
# documents from the whole signature spill and the whole stage input made verification quadratic in the drop: near
# dedup's docs/s fell by a sixth from N to 4N documents; sorting every batch's documents into one file in DuckDB ran
# out of memory under 512MB.)


def _write_content(path: Path, chunks: Iterable[pl.Series]) -> Path:
    """A content file: the ``chunks`` of content, in order, as an Arrow IPC file of one record batch per chunk (read
    back by position with :func:`_take_content`)."""
    schema = pa.schema([("_content", pa.large_string())])
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for chunk in chunks:
            writer.write_batch(pa.record_batch([chunk.to_arrow().cast(pa.large_string())], schema=schema))
    return path


def _gather_content(source: DropInput, rows: np.ndarray, path: Path) -> Path:
    """The content of the drop's documents at the sorted input positions ``rows``, in that order, as a content
    file (one chunk per input batch with one of them), in one pass over the drop."""

    def chunks() -> Iterator[pl.Series]:
        start = 0
        for batch in source.batches(["doc_id", "text", "messages"]) if len(rows) else ():
            low, high = np.searchsorted(rows, [start, start + batch.height])
            if high > low:
                yield batch.select(content_expr(batch.columns))["_content"].gather(rows[low:high] - start)
            start += batch.height

    return _write_content(path, chunks())


def _gather_signatures(spill: Path, rows: np.ndarray, num_perm: int, path: Path) -> Path:
    """The signatures of the drop's documents at the sorted input positions ``rows``, in that order, as a numpy
    ``uint32 (len(rows), num_perm)`` file, read from the signature spill one row group at a time."""
    signatures = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint32, shape=(len(rows), num_perm))
    spilled = pq.ParquetFile(spill)
    for group in range(spilled.num_row_groups) if len(rows) else ():
        table = spilled.read_row_group(group, columns=["_row", "signature"])
        first = table.column("_row")[0].as_py()  # a row group holds consecutive rows
        low, high = np.searchsorted(rows, [first, first + table.num_rows])
        if high > low:
            picked = pl.from_arrow(table.column("signature")).gather(rows[low:high] - first)
            signatures[low:high] = _signature_matrix(picked, num_perm)
    signatures.flush()
    del signatures
    return path


def _gather_index_content(index_content: IndexContent | None, wanted: pl.DataFrame, path: Path, chunk_rows: int
                          ) -> Path:
    """The content of the index documents ``wanted`` (``node``, ``doc_id``, ``drop``; sorted by node), in that
    order, as a content file, read ``chunk_rows`` documents at a time; null where it is gone (unverifiable)."""
    if wanted.height and index_content is None:
        raise DedupIndexError("near dedup needs the content of index documents to verify cross-drop pairs by "
                              "exact Jaccard; pass index_content")

    def chunks() -> Iterator[pl.Series]:
        for chunk in wanted.iter_slices(chunk_rows):
            found = index_content(chunk.select("doc_id", "drop"))
            found = found.select("doc_id", content_expr(found.columns)).unique("doc_id", keep="first")
            yield chunk.join(found, on="doc_id", how="left", maintain_order="left")["_content"]

    return _write_content(path, chunks())


def _take_content(path: Path, positions: np.ndarray) -> pl.Series:
    """Rows ``positions`` (any order) of a content file, in that order; only their bytes are copied."""
    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_file(source)
        batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        offsets = np.cumsum([0] + [batch.num_rows for batch in batches])
        chunk = np.searchsorted(offsets, positions, side="right") - 1
        pieces, placed = [], []
        for c in np.unique(chunk):
            at = np.flatnonzero(chunk == c)
            pieces.append(batches[c].column(0).take(pa.array(positions[at] - offsets[c])))
            placed.append(at)
        if not pieces:
            return pl.Series("_content", [], dtype=pl.String)
        content = pa.concat_arrays(pieces).take(pa.array(np.argsort(np.concatenate(placed), kind="stable")))
    return pl.Series("_content", content, dtype=pl.String)


@dataclass(frozen=True)
class VerifyReader:
    """What a verification batch reads, wherever it runs (here, a worker process, a Ray worker): the gathered
    documents' files (the drop's content and signatures, the index's content) and the settings. Small, and it
    pickles."""

    content: Path
    signatures: Path
    index_content: Path
    cfg: NearDedupConfig


@dataclass(frozen=True)
class VerifyTask:
    """One batch of candidate pairs ``(src, dst)`` (node ids) and where its documents are in the gathered files:
    ``index_positions`` for its index nodes and ``positions`` for its drop nodes, each in node order. Ids only, no
    text: a few hundred kB for the default batch."""

    src: np.ndarray
    dst: np.ndarray
    index_positions: np.ndarray
    positions: np.ndarray


@dataclass(frozen=True)
class VerifiedPairs:
    """A verification batch's outcome: its verified pairs ``(src, dst)`` with their exact Jaccard and MinHash
    estimate; the batch's candidate, screened (checked exactly) and unverifiable (index content gone) pair counts;
    and the process that ran it."""

    src: np.ndarray
    dst: np.ndarray
    jaccard: np.ndarray
    estimate: np.ndarray
    candidates: int
    screened: int
    unverifiable: int
    process: int


# How the signature and verification batches run: ``(function, items) -> function(item) for every item``, in item
# order (the function and items pickle). Here, one after the other, by default; the pipeline passes the local
# executor's worker pool or Ray tasks.
BatchMapper = Callable[[Callable[[Any], Any], Iterable[Any]], Iterator[Any]]


def _signature_batch(batch: pa.Table, cfg: NearDedupConfig) -> tuple[pa.Table, int]:
    """The spill columns (but ``_row``) of one input batch: doc_id, drop, whether it has shingles, its band keys,
    signature and keep-rule sort keys; and the process that computed them. A function of the batch alone, so
    batches run anywhere (a worker process, a Ray worker); Arrow in and out (cheaper to send than Polars
    frames)."""
    frame = pl.from_arrow(batch)
    texts = frame.select(content_expr(frame.columns))["_content"]
    hashes, counts = _shingled(texts, cfg)
    signatures = _signatures_from_shingles(hashes, counts, cfg)
    del hashes
    return pl.DataFrame({
        "doc_id": frame["doc_id"].cast(pl.String),
        "drop": frame["drop"].cast(pl.String) if "drop" in frame.columns else None,
        "has_shingles": counts > 0,
        "band_keys": band_keys(signatures, *lsh_params(cfg)),
        "signature": signatures,
    }).hstack(_keep_keys(frame, cfg)).to_arrow(), os.getpid()


def _map_here(function: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
    return map(function, items)


def _verify_tasks(pairs: Path, order: np.ndarray, rows: np.ndarray, index_nodes: np.ndarray
                  ) -> Iterator[VerifyTask]:
    """The spilled candidate pairs as verification tasks, one per spilled batch, in (src, dst) order. ``order``:
    node -> input row; ``rows`` and ``index_nodes``: the gathered drop rows and index nodes (sorted)."""
    for batch_src, batch_dst in _spilled_pairs(pairs):
        nodes = np.unique(np.concatenate([batch_src, batch_dst]))
        yield VerifyTask(batch_src, batch_dst, np.searchsorted(index_nodes, nodes[nodes < 0]),
                         np.searchsorted(rows, order[nodes[nodes >= 0]]))


def verify_pairs(task: VerifyTask, reader: VerifyReader) -> VerifiedPairs:
    """Screen one batch of candidate pairs by the MinHash estimate, then verify by exact shingle-set Jaccard; keep
    the pairs that pass (every screened pair with a known Jaccard when ``verify`` is off).

    The batch's documents are read by position from the gathered files: the drop's signatures and content, the
    index's content (shingled once, for both their signature and the exact Jaccard; null when it is gone).
    Everything is read here, so a batch runs as well in a worker process or on a Ray worker as in the driver."""
    cfg = reader.cfg
    batch_src, batch_dst, n_candidates = task.src, task.dst, len(task.src)
    nodes = np.unique(np.concatenate([batch_src, batch_dst]))
    n_idx = len(task.index_positions)
    # Index documents: shingled once (signature for the screen, sets for the verification).
    index_text = _take_content(reader.index_content, task.index_positions)
    have_index = index_text.is_not_null().to_numpy()
    index_hashes, index_counts = _shingled(index_text.fill_null(""), cfg)
    index_sig = _signatures_from_shingles(index_hashes, index_counts, cfg)
    current_sig = np.asarray(np.load(reader.signatures, mmap_mode="r")[task.positions])
    signatures = np.vstack([index_sig, current_sig]) if n_idx else current_sig
    local = np.searchsorted(nodes, np.concatenate([batch_src, batch_dst]))
    left, right = local[: len(batch_src)], local[len(batch_src):]
    estimate = _estimated_jaccard(signatures, left, right)
    known = have_index[np.minimum(left, max(n_idx - 1, 0))] | (left >= n_idx) if n_idx else np.ones(len(left), bool)
    # A pair whose index document's content is gone cannot be screened either: it goes on, unverifiable.
    screen = (estimate >= cfg.verify_threshold - cfg.estimate_margin) | ~known if cfg.verify else np.ones(
        len(estimate), bool)
    left, right, estimate = left[screen], right[screen], estimate[screen]
    batch_src, batch_dst, known = batch_src[screen], batch_dst[screen], known[screen]
    # Exact Jaccard: the drop's screened documents are shingled (index ones already are).
    needed = np.unique(np.concatenate([left, right]))
    needed_current = needed[needed >= n_idx]
    current_text = _take_content(reader.content, task.positions[needed_current - n_idx])
    current_hashes, current_counts = _shingled(current_text.fill_null(""), cfg)
    # Text t of the combined list: index documents first (all of them), then the needed drop documents.
    position = np.full(len(nodes), -1, dtype=np.int64)
    position[:n_idx] = np.arange(n_idx)
    position[needed_current] = n_idx + np.arange(len(needed_current))
    hashes = np.concatenate([index_hashes, current_hashes])
    counts = np.concatenate([index_counts if n_idx else np.zeros(0, np.int64), current_counts])
    jaccard = exact_jaccard(hashes, counts, position[left], position[right])
    verified = known & (jaccard >= cfg.verify_threshold) if cfg.verify else known
    return VerifiedPairs(batch_src[verified], batch_dst[verified], jaccard[verified], estimate[verified],
                         candidates=n_candidates, screened=int(screen.sum()), unverifiable=int((~known).sum()),
                         process=os.getpid())


def near_duplicates(
    docs: pl.DataFrame | DropInput, index: pl.DataFrame | Sequence[IndexPart] | None, cfg: NearDedupConfig,
    index_content: IndexContent | None = None, blocked_ids: pl.Series | None = None, ooc: OutOfCore | None = None,
    candidates: CandidateGenerator | None = None, mapper: BatchMapper | None = None,
) -> tuple[StageResult, pl.DataFrame | Iterator[pl.DataFrame]]:
    """Find the near-duplicate pairs of ``docs``, within the drop and with the index of other drops, verified by
    exact Jaccard on the shingle sets; drop only documents near a taken-down one.

    ``docs``: the drop (a DropInput, or a frame) with ``doc_id``, ``text`` (or ``messages``), ``drop``,
    ``drop_order`` and optionally ``quality_score`` and ``license``. ``index``: :class:`IndexPart` entries of other
    drops, queried in place (entries of the drops in ``docs`` are ignored), and of taken-down documents.
    ``index_content``: reads index documents' content for the exact verification. ``blocked_ids``: doc_ids of
    taken-down documents. ``ooc``: batch size, DuckDB memory limit and spill folder (default: the config's
    ``memory_limit``, ``temp_directory`` and ``signature_batch_docs``). ``candidates``: how the band join runs
    (default in-process DuckDB; the Ray executor shuffles by band key), with the same pairs either way.
    ``mapper``: where the signature and verification batches run (default here, one after the other; the pipeline
    passes the local worker pool or Ray tasks), with the same outcome either way: results are taken in batch order.

    The drop is read in batches; each batch's signatures and band keys are spilled to Parquet. DuckDB joins the
    drop's band keys with the index files in place under the memory limit; the candidate pairs are screened by
    the MinHash estimate and verified by exact Jaccard in batches, reading only the candidates' texts. Held in
    Python for the whole drop: a 4-byte node -> row array per document and the verified pairs (32 bytes each,
    numpy); everything else per document is in spill files (DuckDB holds no table per document either).

    No copy is dropped as a duplicate: every verified pair is a ``flag`` row ``near_dedup.duplicate`` on the
    document of this drop (``duplicate_of`` the other document, ``value`` the exact Jaccard, ``cluster_id`` the
    connected component named after its first document in keep order); the release picks each cluster's
    representative (:func:`near_representatives`). A document paired with a taken-down document is dropped with
    ``takedown.blocked``. Kept documents gain ``cluster_id`` (null without a verified pair). Returns the
    StageResult (``kept`` an iterator of batches in row order, a frame when ``docs`` is a frame) and the index
    entries (NEAR_INDEX_SCHEMA) of the kept documents that have shingles, sorted by doc_id: like ``kept``, an
    iterator of frames of at most ``batch_rows`` read from a file DuckDB wrote, a frame when ``docs`` is a frame.
    """
    ooc = ooc or OutOfCore(batch_rows=cfg.signature_batch_docs, memory_limit=cfg.memory_limit,
                           spill_dir=cfg.temp_directory)
    source = docs if not isinstance(docs, pl.DataFrame) else FrameDropInput(docs, batch_rows=ooc.batch_rows)
    bands, rows = lsh_params(cfg)
    params = signature_params(cfg)
    parts = index_parts(index)

    with spill_folder(ooc, "near-dedup") as folder:
        with duckdb_connection(ooc, folder / "duckdb") as connection:
            index_sql = near_index_sql(connection, parts, cfg)
            # Pass 1: signatures, band keys and keep-rule sort keys per batch, spilled; nothing per document stays in
            # Python. The keep-rule rank (the node id) is then a DuckDB window over the spill file.
            key_schema = _keep_key_schema(cfg)
            spill = SpillWriter(folder / "signatures.parquet", {
                "_row": pl.Int64, "doc_id": pl.String, "drop": pl.String, "has_shingles": pl.Boolean,
                "band_keys": pl.List(pl.UInt64), "signature": pl.List(pl.UInt32), **key_schema})
            start = signature_batches = signature_batches_elsewhere = 0
            for signed, process in (mapper or _map_here)(
                    functools.partial(_signature_batch, cfg=cfg),
                    (batch.to_arrow() for batch in source.batches(_INPUT_COLUMNS))):
                signature_batches += 1
                signature_batches_elsewhere += process != os.getpid()
                signed = pl.from_arrow(signed)
                spill.write(signed.with_columns(pl.int_range(start, start + signed.height, dtype=pl.Int64)
                                                .alias("_row")))
                start += signed.height
            spill_path = spill.close()
            n_docs = start
            sql_params = {"spill": str(spill_path)}
            # Node ids follow the keep rule: the drop's documents by rank (a stable sort: ties keep row order, as
            # ``sort_by_keep_rule`` does); index documents negative, all earlier. ``order`` (node -> row) is the one
            # per-document array held in Python: 4 bytes per document.
            order_by = ", ".join(f"{name} ASC NULLS LAST" for name in key_schema)
            # Written to a file (a view reads it), not held as a table: 16 bytes per document.
            nodes_path = folder / "nodes.parquet"
            connection.execute(f"COPY (SELECT _row, (row_number() OVER (ORDER BY {order_by}, _row) - 1)::BIGINT AS "
                               f"node FROM read_parquet($spill)) TO {sql_path(nodes_path)} (FORMAT parquet, "
                               "COMPRESSION zstd, COMPRESSION_LEVEL 1)", sql_params)
            connection.execute(f"CREATE TEMP VIEW node_of_row AS SELECT _row, node FROM "
                               f"read_parquet({sql_path(nodes_path)})")
            order = connection.sql("SELECT _row FROM node_of_row ORDER BY node").fetchnumpy()["_row"].astype(np.int32)
            _run_script(connection, _NEAR_SETUP_SQL.format(index=index_sql, spill=sql_path(spill_path),
                                                           current=sql_path(folder / "current_rows.parquet"),
                                                           buckets=sql_path(folder / "buckets.parquet")),
                        sql_params)
            n_index = connection.execute(_INDEX_IN_PLAY_SQL.format(index=index_sql)).fetchall()[0][0]
            index_nodes = pl.from_arrow(connection.sql(
                "SELECT node, doc_id, drop FROM index_nodes ORDER BY node").to_arrow_table()).cast(
                {"node": pl.Int64, "doc_id": pl.String, "drop": pl.String})
            without_shingles = connection.execute(
                "SELECT count(*) FROM read_parquet($spill) WHERE NOT has_shingles", sql_params).fetchall()[0][0]

            # The candidate pairs, sorted and distinct, are spilled to Parquet (one row group per batch of at most
            # ``pairs_per_batch``); DuckDB is closed before the verification so its memory is not held meanwhile.
            # Half of batch_rows pairs: a verification batch reads and shingles at most batch_rows documents, as a
            # signature batch does, so both passes peak alike.
            pairs_per_batch = max(1, min(cfg.verify_batch_rows, ooc.batch_rows // 2))
            pair_spill = SpillWriter(folder / "candidates.parquet", {"src": pl.Int64, "dst": pl.Int64})
            for batch_src, batch_dst in (candidates or _candidate_batches)(connection, cfg, pairs_per_batch):
                pair_spill.write(pl.DataFrame({"src": batch_src, "dst": batch_dst}))
            candidates_path = pair_spill.close()
            # The pairs' documents (distinct nodes, sorted): the index's by node, the drop's by input row.
            ends = connection.sql(f"SELECT node FROM (SELECT src AS node FROM read_parquet({sql_path(candidates_path)})"
                                  f" UNION SELECT dst FROM read_parquet({sql_path(candidates_path)})) ORDER BY node"
                                  ).fetchnumpy()["node"].astype(np.int64)
            index_ends, needed_rows = ends[ends < 0], np.sort(order[ends[ends >= 0]]).astype(np.int64)

        # The pairs' documents, gathered once for every batch: one pass over the drop for their content, one over
        # the signature spill, the index's read batch_rows documents at a time.
        reader = VerifyReader(
            _gather_content(source, needed_rows, folder / "content.arrow"),
            _gather_signatures(spill_path, needed_rows, cfg.num_perm, folder / "signatures.npy"),
            _gather_index_content(index_content, pl.DataFrame({"node": index_ends}).join(
                index_nodes, on="node", how="left", maintain_order="left"), folder / "index_content.arrow",
                ooc.batch_rows),
            cfg)

        # Each batch of candidates: the MinHash estimate screens out pairs that cannot reach the threshold
        # (more than ``estimate_margin`` below it), then the exact Jaccard of the shingle sets decides. The batches
        # are independent: ``mapper`` may run them elsewhere (worker processes, Ray); results come in batch order.
        kept_src, kept_dst, kept_jac, kept_est = [], [], [], []
        candidate_pairs = screened_pairs = unverifiable_pairs = verify_batches = verify_batches_elsewhere = 0
        for outcome in (mapper or _map_here)(functools.partial(verify_pairs, reader=reader),
                                             _verify_tasks(candidates_path, order, needed_rows, index_ends)):
            candidate_pairs += outcome.candidates
            screened_pairs += outcome.screened
            unverifiable_pairs += outcome.unverifiable
            verify_batches += 1
            verify_batches_elsewhere += outcome.process != os.getpid()
            kept_src.append(outcome.src)
            kept_dst.append(outcome.dst)
            kept_jac.append(outcome.jaccard)
            kept_est.append(outcome.estimate)
        # The verified pairs: numpy columns, 32 bytes per pair (no Python object per pair or per document).
        src = np.concatenate(kept_src) if kept_src else np.empty(0, dtype=np.int64)
        dst = np.concatenate(kept_dst) if kept_dst else np.empty(0, dtype=np.int64)
        jaccard = np.concatenate(kept_jac) if kept_jac else np.empty(0, dtype=np.float64)
        estimated = np.concatenate(kept_est) if kept_est else np.empty(0, dtype=np.float64)
        del kept_src, kept_dst, kept_jac, kept_est

        # Components over the pairs' documents only (index documents first, then the drop's by rank: node order),
        # so the graph scales with the verified pairs, not the drop. A component's id is its first document.
        endpoints = np.unique(np.concatenate([src, dst]))
        e_src, e_dst = np.searchsorted(endpoints, src), np.searchsorted(endpoints, dst)
        label = _components(len(endpoints), e_src, e_dst)
        endpoint_doc, endpoint_drop = _node_ids(endpoints, order, spill_path, index_nodes)
        cross_drop = src < 0

        # One row per verified pair, on the pair's document of this drop (dst: src comes first in node order).
        threshold = f">= {cfg.verify_threshold:g}" if cfg.verify else f"LSH {bands}x{rows} band match"
        pairs = pl.DataFrame(
            {
                "doc_id": endpoint_doc.gather(e_dst),
                "duplicate_of": endpoint_doc.gather(e_src),
                # Drop-less documents read "None", as the object arrays of the in-memory code rendered them.
                "other_drop": endpoint_drop.gather(e_src).fill_null("None"),
                "value": jaccard,
                "estimated": estimated,
                "cluster_id": endpoint_doc.gather(label[e_dst]),
                "cross_drop": cross_drop,
            },
            schema={"doc_id": pl.String, "duplicate_of": pl.String, "other_drop": pl.String, "value": pl.Float64,
                    "estimated": pl.Float64, "cluster_id": pl.String, "cross_drop": pl.Boolean},
        ).with_columns(pl.lit(threshold).alias("threshold"))
        blocked = pl.Series(blocked_ids if blocked_ids is not None else [], dtype=pl.String)
        to_taken_down = pairs.filter(pl.col("duplicate_of").is_in(blocked.implode()))
        # A document near a taken-down one is dropped once, against its most similar taken-down document.
        blocked_verdicts = to_taken_down.sort("doc_id", "value", "duplicate_of", descending=[False, True, False]
                                              ).unique("doc_id", keep="first", maintain_order=True).select(
            "doc_id", "duplicate_of", "value", "threshold", "cluster_id",
            pl.lit(DROP).alias("verdict"),
            pl.lit(RULE_BLOCKED).alias("rule"),
            pl.format("near-duplicate (exact Jaccard {}) of taken-down document {}", pl.col("value").round(4),
                      "duplicate_of").alias("detail"),
        )
        # The index entries (about 150 bytes per document) are written sorted by DuckDB to a file of their own and
        # handed back as an iterator of frames read from it (the index writer consumes them; the folder goes then).
        entries_folder = new_spill_folder(ooc, "near-entries")
        try:
            with duckdb_connection(ooc, folder / "duckdb") as connection:
                connection.register("blocked_docs", blocked_verdicts.select("doc_id").to_arrow())
                connection.execute(
                    "COPY (SELECT doc_id, band_keys FROM read_parquet($spill) ANTI JOIN blocked_docs USING (doc_id) "
                    f"WHERE has_shingles ORDER BY doc_id) TO {sql_path(entries_folder / 'entries.parquet')} "
                    "(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1)", sql_params).fetchall()
        except BaseException:
            shutil.rmtree(entries_folder, ignore_errors=True)
            raise
    entries = _entry_batches(entries_folder, params, ooc.batch_rows)
    if isinstance(docs, pl.DataFrame):  # a frame in, a frame out
        entries = pl.concat(list(entries))

    flagged = pairs.join(blocked_verdicts.select("doc_id"), on="doc_id", how="anti")
    flags = flagged.select(
        "doc_id", "duplicate_of", "value", "threshold", "cluster_id",
        pl.lit(FLAG).alias("verdict"),
        pl.lit(RULE_DUPLICATE).alias("rule"),
        pl.format(
            "near-duplicate of {}{} (exact Jaccard {} on word {}-gram shingles){}; each release ships the "
            "best copy its license profile allows",
            "duplicate_of",
            pl.when("cross_drop").then(pl.format(" in drop {}", "other_drop")).otherwise(pl.lit("")),
            pl.col("value").round(4),
            pl.lit(cfg.ngram),
            # The cluster is named only when it is not the copy already named.
            pl.when(pl.col("cluster_id") != pl.col("duplicate_of"))
            .then(pl.format(" in cluster {}", "cluster_id")).otherwise(pl.lit("")),
        ).alias("detail"),
    )
    verdicts = pl.concat([verdict_frame(blocked_verdicts), verdict_frame(flags)]).sort("doc_id", "duplicate_of")
    metrics = _metrics(cfg, bands, rows, n_docs, n_index, without_shingles, candidate_pairs, screened_pairs,
                       unverifiable_pairs, flagged, blocked_verdicts.height, label, endpoint_doc)
    # How many signature and verification batches ran, and how many of them in another process (a worker, a Ray
    # worker).
    metrics.update(signature_batches=signature_batches, signature_batches_in_workers=signature_batches_elsewhere,
                   verify_batches=verify_batches, verify_batches_in_workers=verify_batches_elsewhere)
    # Cluster ids of the drop's clustered documents only; every other document gets null.
    clustered = np.flatnonzero(endpoints >= 0)
    clusters = pl.DataFrame({"doc_id": endpoint_doc.gather(clustered),
                             "cluster_id": endpoint_doc.gather(label[clustered])},
                            schema={"doc_id": pl.String, "cluster_id": pl.String})
    kept = _kept_batches(source, clusters, blocked_verdicts["doc_id"])
    if isinstance(docs, pl.DataFrame):  # a frame in, a frame out
        kept = pl.concat(list(kept))
    return StageResult(kept=kept, verdicts=verdicts, metrics=metrics), entries


def _entry_batches(folder: Path, params: str, batch_rows: int) -> Iterator[pl.DataFrame]:
    """The drop's index entries (NEAR_INDEX_SCHEMA) in frames of at most ``batch_rows`` rows, in doc_id order, read
    from the file DuckDB wrote in ``folder``; the folder is removed once they are read (or the iterator closed)."""
    spilled = {"doc_id": pl.String, "band_keys": pl.List(pl.UInt64)}
    for frame in frames_then_remove(folder / "entries.parquet", spilled, batch_rows, folder):
        yield frame.with_columns(pl.lit(params, dtype=NEAR_INDEX_SCHEMA["params"]).alias("params"))


def _kept_batches(source: DropInput, clusters: pl.DataFrame, blocked_ids: pl.Series) -> Iterator[pl.DataFrame]:
    """The input, batch by batch, with its ``cluster_id``, minus the blocked documents."""
    blocked_ids = blocked_ids.implode()
    for batch in source.batches():
        yield (batch.join(clusters, on="doc_id", how="left", maintain_order="left")
               .filter(~pl.col("doc_id").is_in(blocked_ids)))


def near_representatives(docs: pl.DataFrame, pairs: pl.DataFrame, cfg: NearDedupConfig) -> pl.DataFrame:
    """The release's choice among near duplicates, with no chain collapse.

    ``docs``: the documents the release may ship (license already checked, one per exact cluster), with
    ``doc_id`` and the keep-rule columns. ``pairs``: verified pairs (``doc_id``, ``duplicate_of``, ``value`` = exact
    Jaccard) in either direction; pairs with a document outside ``docs`` are ignored. Documents are taken in
    keep-rule order and one is left out only if it has a verified pair with a document already chosen (A~B, B~C,
    A!~C keeps A and C), resolved in vectorized rounds over the pair list. Returns one row per left-out document:
    (``doc_id``, ``duplicate_of`` = its first chosen neighbour in keep order, ``value`` = their Jaccard,
    ``cluster_id`` = the doc_id of the first document of its connected component).
    """
    out_schema = {"doc_id": pl.String, "duplicate_of": pl.String, "value": pl.Float64, "cluster_id": pl.String}
    ranked = sort_by_keep_rule(docs.select(keep_columns(docs)), cfg).select(
        "doc_id", pl.int_range(pl.len(), dtype=pl.Int64).alias("_rank")
    )
    edges = (
        pairs.select("doc_id", "duplicate_of", "value")
        .join(ranked.rename({"_rank": "_a"}), on="doc_id", how="inner")
        .join(ranked.rename({"doc_id": "duplicate_of", "_rank": "_b"}), on="duplicate_of", how="inner")
        .filter(pl.col("_a") != pl.col("_b"))
        .select(pl.min_horizontal("_a", "_b").alias("src"), pl.max_horizontal("_a", "_b").alias("dst"), "value")
        .group_by("src", "dst").agg(pl.col("value").max())
        .sort("src", "dst")
    )
    if edges.is_empty():
        return pl.DataFrame(schema=out_schema)
    src_rank, dst_rank = edges["src"].to_numpy(), edges["dst"].to_numpy()
    nodes = np.unique(np.concatenate([src_rank, dst_rank]))  # ranks in keep order
    src, dst = np.searchsorted(nodes, src_rank), np.searchsorted(nodes, dst_rank)
    value = edges["value"].to_numpy()
    status = _resolve_keep(len(nodes), src, dst)
    label = _components(len(nodes), src, dst)
    doc_of_rank = ranked["doc_id"].to_numpy().astype(object)
    node_doc = doc_of_rank[nodes]
    to_kept = (status[src] == _KEPT) & (status[dst] == _REMOVED)
    e_src, e_dst, e_val = src[to_kept], dst[to_kept], value[to_kept]
    first = np.lexsort((e_src, e_dst))
    e_src, e_dst, e_val = e_src[first], e_dst[first], e_val[first]
    unique_dst = np.r_[True, e_dst[1:] != e_dst[:-1]] if len(e_dst) else np.zeros(0, dtype=bool)
    e_src, e_dst, e_val = e_src[unique_dst], e_dst[unique_dst], e_val[unique_dst]
    return pl.DataFrame(
        {
            "doc_id": _strings(node_doc[e_dst]),
            "duplicate_of": _strings(node_doc[e_src]),
            "value": e_val,
            "cluster_id": _strings(node_doc[label[e_dst]]),
        },
        schema=out_schema,
    ).sort("doc_id")


def _metrics(
    cfg: NearDedupConfig, bands: int, rows: int, n_docs: int, n_index: int, without_shingles: int,
    candidate_pairs: int, screened_pairs: int, unverifiable_pairs: int, pairs: pl.DataFrame, blocked: int,
    label: np.ndarray, node_doc: pl.Series,
) -> dict:
    """``label``: the component of every document in a verified pair; ``node_doc`` their doc_ids."""
    roots, sizes = np.unique(label, return_counts=True)
    histogram: dict[str, int] = {}
    for size in sorted(sizes.tolist()):
        histogram[_size_bucket(size)] = histogram.get(_size_bucket(size), 0) + 1
    oversized = [
        {"cluster_id": node_doc[root], "size": int(size)}
        for root, size in zip(roots.tolist(), sizes.tolist())
        if size > cfg.max_cluster_size
    ]
    sample = pairs.sort("cross_drop", "doc_id", "duplicate_of").head(10).select(
        "doc_id", "duplicate_of", pl.col("value").round(4).alias("exact_jaccard"),
        pl.col("estimated").round(4).alias("estimated_jaccard"),
    ).to_dicts()
    return {
        "documents_in": n_docs,
        "documents_without_shingles": int(without_shingles),
        "index_entries_in": n_index,
        "bands": bands,
        "rows": rows,
        "num_perm": cfg.num_perm,
        "candidate_pairs": candidate_pairs,
        "pairs_checked_exactly": screened_pairs,
        "unverifiable_pairs": unverifiable_pairs,
        "verified_pairs": pairs.height,
        "cross_drop_pairs": int(pairs["cross_drop"].sum()),
        "within_drop_pairs": int((~pairs["cross_drop"]).sum()),
        "documents_with_near_duplicates": int(pairs["doc_id"].n_unique()),
        "blocked_by_takedown": blocked,
        "clusters": int(len(roots)),
        "cluster_size_histogram": histogram,
        "largest_cluster": int(sizes.max()) if len(sizes) else 0,
        "clusters_over_max_size": oversized,
        "sample_pairs": sample,
    }
